// bench_training_cpu — the CPU reference of the training backward ops, through dsa::run on host
// pointers:
//   OP-SMLA-BWD  sparse MLA backward (dq + dkv); FLOP = 2·h_q·topk·(3·d_qk + 2·d_v) per query token
//                (SPEC §10.2, every slot counted); the forward's out/lse come from the library's
//                own sparse_mla_fwd in the setup, untimed.
//   OP-IDX-BWD   indexer backward (dq_raw + dk_raw + dw_raw) from G; rate in scored pairs/s and
//                2·H^I·d^I FLOP per pair (the forward's indexer formula: the backward does about
//                4× that, recomputing z in both passes).
// Wall-clock time (UseRealTime): the reference runs on std::threads (DSA_NUM_THREADS overrides).
//
//   bench_training_cpu --benchmark_filter='SparseMlaBwd/s_q:4096'   (the 4K-token V3.2 layer)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "bench_common.hpp"

namespace {

using benchmark::Counter;
using dsa::DType;
using dsa::make_view;
using namespace dsa::bench;

constexpr int64_t kDqk = 576, kDv = 512, kHidx = 64, kDidx = 128;

// Causal top-k: row t picks min(topk, t + 1) distinct random keys of its prefix; the rest −1.
std::vector<int32_t> causal_topk(int64_t T, int64_t topk, uint64_t seed) {
  std::vector<int32_t> idx(T * topk, -1), all;
  std::mt19937_64 gen(seed);
  for (int64_t t = 0; t < T; ++t) {
    all.resize(t + 1);
    std::iota(all.begin(), all.end(), 0);
    const int64_t n = std::min<int64_t>(topk, t + 1);
    for (int64_t i = 0; i < n; ++i) std::swap(all[i], all[i + gen() % (t + 1 - i)]);  // partial shuffle
    std::copy(all.begin(), all.begin() + n, idx.begin() + t * topk);
  }
  return idx;
}

// Sparse MLA backward over one causal sequence of s_q tokens (s_kv = s_q), bf16 in and out.
void BM_SparseMlaBwd(benchmark::State& state) {
  const int64_t T = state.range(0), h = state.range(1), topk = state.range(2);
  const auto q = random_bf16(T * h * kDqk, 0.1, 1), kv = random_bf16(T * kDqk, 0.1, 2),
             dout = random_bf16(T * h * kDv, 0.1, 3);
  const auto idx = causal_topk(T, topk, 4);
  std::vector<dsa::bf16_t> out(T * h * kDv), dq(T * h * kDqk), dkv(T * kDqk);
  std::vector<float> lse(T * h);
  dsa::SparseMlaFwdParams f;
  f.q = make_view(q.data(), DType::kBF16, {T, h, kDqk});
  f.kv = make_view(kv.data(), DType::kBF16, {T, kDqk});
  f.indices = make_view(idx.data(), DType::kI32, {T, topk});
  f.out = make_view(out.data(), DType::kBF16, {T, h, kDv});
  f.lse = make_view(lse.data(), DType::kF32, {T, h});
  f.sm_scale = dsa::kSoftmaxScaleV32;
  DSA_BENCH_CHECK(state, dsa::run(f));
  dsa::SparseMlaBwdParams p;
  p.q = f.q, p.kv = f.kv, p.indices = f.indices, p.out = f.out, p.lse = f.lse;
  p.dout = make_view(dout.data(), DType::kBF16, {T, h, kDv});
  p.dq = make_view(dq.data(), DType::kBF16, {T, h, kDqk});
  p.dkv = make_view(dkv.data(), DType::kBF16, {T, kDqk});
  p.sm_scale = dsa::kSoftmaxScaleV32;
  for (auto _ : state) DSA_BENCH_CHECK(state, dsa::run(p));
  state.counters["flop/s"] = rate(sparse_mla_bwd_flops(double(T), double(h), double(topk)));
  double valid = 0;
  for (int64_t t = 0; t < T; ++t) valid += double(std::min<int64_t>(topk, t + 1));
  state.counters["valid_flop/s"] = rate(2.0 * h * (3 * kDqk + 2 * kDv) * valid);
}
BENCHMARK(BM_SparseMlaBwd)
    ->ArgNames({"s_q", "h_q", "topk"})
    ->Args({256, 16, 128})
    ->Args({1024, 128, 256})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SparseMlaBwd)
    ->ArgNames({"s_q", "h_q", "topk"})
    ->Args({4096, 128, 2048})
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kSecond);

// Indexer backward inputs over one causal sequence of T tokens.
struct IdxInputs {
  int64_t T;
  std::vector<dsa::bf16_t> q, k;
  std::vector<float> w, cos_t, sin_t, dq, dk, dw;
  std::vector<int32_t> pos;
  explicit IdxInputs(int64_t T_) : T(T_) {
    q = random_bf16(T * kHidx * kDidx, 1.0, 11);
    k = random_bf16(T * kDidx, 1.0, 12);
    w = random_f32(T * kHidx, 0.05, 13);
    const auto th = random_f32(T * 32, 1.0, 14);
    for (float x : th) cos_t.push_back(std::cos(x)), sin_t.push_back(std::sin(x));
    pos.resize(T);
    std::iota(pos.begin(), pos.end(), 0);
    dq.resize(T * kHidx * kDidx), dk.resize(T * kDidx), dw.resize(T * kHidx);
  }
  dsa::IndexerBwdParams params() {
    dsa::IndexerBwdParams p;
    p.q = make_view(q.data(), DType::kBF16, {T, kHidx, kDidx});
    p.k = make_view(k.data(), DType::kBF16, {T, kDidx});
    p.weights = make_view(w.data(), DType::kF32, {T, kHidx});
    p.q_positions = p.k_positions = make_view(pos.data(), DType::kI32, {T});
    p.rope_cos = make_view(cos_t.data(), DType::kF32, {T, 32});
    p.rope_sin = make_view(sin_t.data(), DType::kF32, {T, 32});
    p.hadamard = true;
    p.dq_raw = make_view(dq.data(), DType::kF32, {T, kHidx, kDidx});
    p.dk_raw = make_view(dk.data(), DType::kF32, {T, kDidx});
    p.dw_raw = make_view(dw.data(), DType::kF32, {T, kHidx});
    return p;
  }
};

// Dense form (warm-up): G over each row's causal prefix [0, t + 1).
void BM_IndexerBwdDense(benchmark::State& state) {
  IdxInputs in(state.range(0));
  const int64_t T = in.T;
  const auto G = random_f32(T * T, 1e-3, 15);
  std::vector<int32_t> ks(T, 0), ke(T);
  std::iota(ke.begin(), ke.end(), 1);
  dsa::IndexerBwdParams p = in.params();
  p.grad = make_view(G.data(), DType::kF32, {T, T});
  p.ks = make_view(ks.data(), DType::kI32, {T});
  p.ke = make_view(ke.data(), DType::kI32, {T});
  for (auto _ : state) DSA_BENCH_CHECK(state, dsa::run(p));
  const double pairs = double(T) * double(T + 1) / 2;
  state.counters["pairs/s"] = rate(pairs);
  state.counters["fwd_flop/s"] = rate(indexer_flops(pairs));
}
BENCHMARK(BM_IndexerBwdDense)->ArgNames({"T"})->Arg(512)->Arg(2048)->UseRealTime()->Unit(benchmark::kMillisecond);

// Sparse form (sparse stage): G at the top-k indices.
void BM_IndexerBwdSparse(benchmark::State& state) {
  IdxInputs in(state.range(0));
  const int64_t T = in.T, topk = state.range(1);
  const auto idx = causal_topk(T, topk, 16);
  const auto G = random_f32(T * topk, 1e-3, 17);
  dsa::IndexerBwdParams p = in.params();
  p.grad = make_view(G.data(), DType::kF32, {T, topk});
  p.grad_indices = make_view(idx.data(), DType::kI32, {T, topk});
  for (auto _ : state) DSA_BENCH_CHECK(state, dsa::run(p));
  double pairs = 0;
  for (int64_t t = 0; t < T; ++t) pairs += double(std::min<int64_t>(topk, t + 1));
  state.counters["pairs/s"] = rate(pairs);
  state.counters["fwd_flop/s"] = rate(indexer_flops(pairs));
}
BENCHMARK(BM_IndexerBwdSparse)
    ->ArgNames({"T", "topk"})
    ->Args({1024, 256})
    ->Args({4096, 2048})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
