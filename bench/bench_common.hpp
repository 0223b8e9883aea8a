// bench/bench_common.hpp — the SPEC §10.2 cost formulas (use exactly these) and small input helpers
// shared by the benchmarks. Counts are per call; Google Benchmark divides them by the time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "dsa/dsa.hpp"

// Runs an op (before or inside the timed loop): a failing status or an unsupported config skips
// the entry with the library's message instead of timing an error path.
#define DSA_BENCH_CHECK(state, expr)               \
  do {                                             \
    const dsa::Status s_ = (expr);                 \
    if (!s_.ok()) {                                \
      (state).SkipWithError(s_.message().c_str()); \
      return;                                      \
    }                                              \
  } while (0)

namespace dsa::bench {

// A per-call count reported as a rate (Google Benchmark 1.7 divides by the measured time).
inline benchmark::Counter rate(double per_iteration) {
  return benchmark::Counter(per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                            benchmark::Counter::kIs1000);
}

// Sparse MLA forward: 2·h_q·topk·(d_qk + d_v) FLOP per query token, every slot counted.
inline double sparse_mla_fwd_flops(double s_q, double h_q, double topk, double d_qk = 576,
                                   double d_v = 512) {
  return 2.0 * h_q * topk * (d_qk + d_v) * s_q;
}
// Prefill bytes: n_valid·d_qk·2 + s_q·h_q·(d_qk + d_v)·2.
inline double sparse_mla_fwd_bytes(double n_valid, double s_q, double h_q, double d_qk = 576,
                                   double d_v = 512) {
  return n_valid * d_qk * 2 + s_q * h_q * (d_qk + d_v) * 2;
}
// Decode bytes: 2·b·s_q·h_q·d_qk + n_unique_tokens·656 + 2·b·s_q·h_q·d_v.
inline double sparse_mla_decode_bytes(double b, double s_q, double h_q, double n_unique,
                                      double d_qk = 576, double d_v = 512) {
  return 2 * b * s_q * h_q * d_qk + n_unique * 656 + 2 * b * s_q * h_q * d_v;
}
// Sparse MLA backward: 2·h_q·topk·(3·d_qk + 2·d_v) FLOP per query token.
inline double sparse_mla_bwd_flops(double s_q, double h_q, double topk, double d_qk = 576,
                                   double d_v = 512) {
  return 2.0 * h_q * topk * (3 * d_qk + 2 * d_v) * s_q;
}
// Indexer: 2·H^I·d^I FLOP per scored pair (contiguous: pairs = Σ(ke − ks);
// paged: pairs = Σ context_len · next_n).
inline double indexer_flops(double pairs, double h_idx = 64, double d_idx = 128) {
  return 2.0 * h_idx * d_idx * pairs;
}
// Dense MQA-mode attention over the same per-pair cost as sparse: 2·h_q·(d_qk + d_v) per pair.
inline double dense_mla_fwd_flops(double pairs, double h_q, double d_qk = 576, double d_v = 512) {
  return 2.0 * h_q * (d_qk + d_v) * pairs;
}

// ---- inputs -------------------------------------------------------------------------------------

// randn·scale + a per-tensor offset in [−0.05, 0.05], clamped to ±10 (SPEC §9.5), as bf16.
inline std::vector<bf16_t> random_bf16(int64_t n, double scale, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  const double offset = std::uniform_real_distribution<double>(-0.05, 0.05)(gen);
  std::vector<bf16_t> v(static_cast<size_t>(n));
  for (auto& x : v)
    x = float_to_bf16(static_cast<float>(std::clamp(nd(gen) * scale + offset, -10.0, 10.0)));
  return v;
}

inline std::vector<float> random_f32(int64_t n, double scale, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> nd(0.f, static_cast<float>(scale));
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = nd(gen);
  return v;
}

// Random e4m3 codes of finite values (no NaN codes 0x7F / 0xFF).
inline std::vector<uint8_t> random_e4m3(int64_t n, uint64_t seed) {
  const std::vector<bf16_t> x = random_bf16(n, 100.0, seed);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = fp8_quantize_value(bf16_to_float(x[i]), 1.0f);
  return v;
}

}  // namespace dsa::bench
