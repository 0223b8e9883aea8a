// CUDA OP-SMLA-FWD / OP-SMLA-DEC benchmarks (SPEC §10.2: FLOPs = 2·(query tokens)·h_q·topk·(576 + 512),
// every slot counted), timed with CUDA events (UseManualTime): prefill s_q 4096, topk 2048, s_kv 32K,
// h_q {128, 64}; decode b {2, 64, 128}, s_q {2, 1}, h_q 128, topk 2048 from the 656-byte FP8 cache
// (and the bf16 cache), each request owning 32K slots. The decode arg `splits` is
// SparseMlaDecodeParams::num_splits: the b 2 entries use 0 (automatic: split-KV, batch-dependent last
// bits), 1 (never split: the batch-invariant default) and 16 (fixed; what automatic picks at b 2 on
// an H200, batch-invariant); b 64 / 128 use 1, the unsplit kernel (automatic would not split them
// either). The split workspace is allocated once, outside the timed loop. Inputs: a random block replicated on the
// device; indices uniformly random inside each row's key range (all valid). BM_*_l2flush: the same
// shapes with the L2 flushed before every timed call (bench_cuda.hpp flush_l2); BM_prefill and
// BM_decode time back-to-back calls (inputs may stay in L2 between calls: b 2 gathers ~5 MB). Built
// only in CUDA builds.
//
// Measured on one H200 (2026-11-28, commit 6bbd53c, CUDA events, 10/20 iterations):
//   prefill h 128: 19.7 ms, 118.6 TFLOP/s · h 64: 10.1 ms, 115.9 · h 16: 6.05 ms, 48.3
//   decode FP8 b 128 × s_q 2: 2.59 ms, 56.5 TFLOP/s · s_q 1: 1.30 ms, 56.2 · bf16 cache, s_q 2: 1.54 ms, 94.6
// ncu (prefill h 128): SM throughput 39%, L1/shared 52%, L2 9%, DRAM 4%, ~9k cycles per 32-key chunk per
// block at one 256-thread block per SM: latency-bound (serial S → softmax → PV phases, three block
// barriers per chunk); the next steps are wgmma with producer/consumer warpgroups and larger chunks.
#if defined(DSA_WITH_CUDA)

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "bench_common.hpp"
#include "bench_cuda.hpp"

using namespace dsa;
using bench::Dev;
using bench::fill_replicated;
using bench::L2;
using bench::time_loop;
using bench::upload;

namespace {

void fill_bf16(void* dst, size_t bytes, uint64_t seed, double scale = 0.1) {
  const auto v = bench::random_bf16(1 << 20, scale, seed);
  std::vector<uint8_t> h(v.size() * 2);
  std::memcpy(h.data(), v.data(), h.size());
  fill_replicated(dst, bytes, h);
}

// 4096 valid 656-byte tokens (e4m3 codes, power-of-two scales, bf16 k^R), replicated.
void fill_fp8_cache(void* dst, size_t bytes, uint64_t seed) {
  const int64_t n = 4096;
  const auto codes = bench::random_e4m3(n * 512, seed);
  const auto pe = bench::random_bf16(n * 64, 0.1, seed + 1);
  std::vector<uint8_t> h(static_cast<size_t>(n * 656));
  for (int64_t t = 0; t < n; ++t) {
    uint8_t* row = h.data() + t * 656;
    std::memcpy(row, codes.data() + t * 512, 512);
    for (int i = 0; i < 4; ++i) {
      const float s = std::ldexp(1.0f, -8 - static_cast<int>((t + i) % 3));
      std::memcpy(row + 512 + 4 * i, &s, 4);
    }
    std::memcpy(row + 528, pe.data() + t * 64, 128);
  }
  fill_replicated(dst, bytes, h);
}

// Random indices: row r draws topk values uniformly from [lo(r), lo(r) + range).
std::vector<int32_t> random_indices(int64_t rows, int64_t topk, int64_t range, int64_t rows_per_range,
                                    uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int32_t> v(static_cast<size_t>(rows * topk));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lo = (r / rows_per_range) * range;
    for (int64_t i = 0; i < topk; ++i)
      v[static_cast<size_t>(r * topk + i)] = static_cast<int32_t>(lo + static_cast<int64_t>(gen() % range));
  }
  return v;
}

// args: s_q, h_q, topk, s_kv
void prefill_body(benchmark::State& st, L2 l2) {
  const int64_t s_q = st.range(0), h = st.range(1), topk = st.range(2), s_kv = st.range(3);
  Dev q(s_q * h * 576 * 2), kv(s_kv * 576 * 2), ind(s_q * topk * 4), out(s_q * h * 512 * 2), lse(s_q * h * 4),
      ml(s_q * h * 4);
  fill_bf16(q.p, q.n, 1);
  fill_bf16(kv.p, kv.n, 2);
  upload(ind.p, random_indices(s_q, topk, s_kv, s_q, 3));
  SparseMlaFwdParams p;
  p.q = make_view(q.p, DType::kBF16, {s_q, h, 576});
  p.kv = make_view(kv.p, DType::kBF16, {s_kv, 576});
  p.indices = make_view(ind.p, DType::kI32, {s_q, topk});
  p.out = make_view(out.p, DType::kBF16, {s_q, h, 512});
  p.lse = make_view(lse.p, DType::kF32, {s_q, h});
  p.max_logits = make_view(ml.p, DType::kF32, {s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
  const double flops = bench::sparse_mla_fwd_flops(s_q, h, topk);
  const double bytes = bench::sparse_mla_fwd_bytes(static_cast<double>(s_q) * topk, s_q, h);
  time_loop(st, [&] { return run(p); }, flops, bytes, l2);
}

// args: b, s_q, h_q, topk, fp8 (1: 656-byte cache, 0: bf16 cache), splits (num_splits: 0 automatic,
// 1 never, n ≥ 2 fixed); each request owns 32K slots.
void decode_body(benchmark::State& st, L2 l2) {
  const int64_t b = st.range(0), s_q = st.range(1), h = st.range(2), topk = st.range(3);
  const bool fp8 = st.range(4) != 0;
  const int32_t splits = static_cast<int32_t>(st.range(5));
  const int64_t ctx = 32768, P = 64, nb = b * ctx / P;
  const int64_t row_bytes = fp8 ? 656 : 1152;
  Dev q(b * s_q * h * 576 * 2), cache(nb * P * row_bytes), ind(b * s_q * topk * 4), out(b * s_q * h * 512 * 2),
      lse(b * s_q * h * 4);
  fill_bf16(q.p, q.n, 5, 1.0);
  if (fp8)
    fill_fp8_cache(cache.p, cache.n, 6);
  else
    fill_bf16(cache.p, cache.n, 6);
  upload(ind.p, random_indices(b * s_q, topk, ctx, s_q, 7));
  SparseMlaDecodeParams p;
  p.q = make_view(q.p, DType::kBF16, {b, s_q, h, 576});
  p.cache = fp8 ? make_view(cache.p, DType::kU8, {nb, P, 656}) : make_view(cache.p, DType::kBF16, {nb, P, 576});
  p.indices = make_view(ind.p, DType::kI32, {b, s_q, topk});
  p.out = make_view(out.p, DType::kBF16, {b, s_q, h, 512});
  p.lse = make_view(lse.p, DType::kF32, {b, s_q, h});
  p.sm_scale = std::pow(576.0f, -0.55f);
  p.num_splits = splits;
  const size_t ws_bytes = workspace_size(p);  // > 0: split-KV partials
  Dev ws(ws_bytes);
  st.counters["num_splits"] = splits;
  st.counters["split_ws_MB"] = static_cast<double>(ws_bytes) / 1e6;
  const double flops = bench::sparse_mla_fwd_flops(static_cast<double>(b) * s_q, h, topk);
  // Unique tokens ≈ every gathered row (random draws from 32K: few repeats); bytes per §10.2
  // (q + selected cache rows + out), with 1152-byte rows for the bf16 cache.
  const double rows = static_cast<double>(b) * s_q * topk;
  const double bytes = bench::sparse_mla_decode_bytes(b, s_q, h, rows) + (fp8 ? 0.0 : rows * (1152 - 656));
  time_loop(st, [&] { return run(p, ws.p, ws_bytes); }, flops, bytes, l2);
}

void BM_prefill(benchmark::State& st) { prefill_body(st, L2::kWarm); }
void BM_prefill_l2flush(benchmark::State& st) { prefill_body(st, L2::kFlush); }
void BM_decode(benchmark::State& st) { decode_body(st, L2::kWarm); }
void BM_decode_l2flush(benchmark::State& st) { decode_body(st, L2::kFlush); }

}  // namespace

BENCHMARK(BM_prefill)
    ->ArgNames({"s_q", "h_q", "topk", "s_kv"})
    ->Args({4096, 128, 2048, 32768})
    ->Args({4096, 64, 2048, 32768})
    ->Args({4096, 16, 2048, 32768})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_prefill_l2flush)
    ->ArgNames({"s_q", "h_q", "topk", "s_kv"})
    ->Args({4096, 128, 2048, 32768})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode)
    ->ArgNames({"b", "s_q", "h_q", "topk", "fp8", "splits"})
    ->Args({128, 2, 128, 2048, 1, 1})
    ->Args({128, 1, 128, 2048, 1, 1})
    ->Args({128, 2, 128, 2048, 0, 1})
    ->Args({64, 2, 128, 2048, 1, 1})
    ->Args({2, 2, 128, 2048, 1, 0})
    ->Args({2, 2, 128, 2048, 0, 0})
    ->Args({2, 2, 128, 2048, 1, 1})
    ->Args({2, 2, 128, 2048, 1, 16})
    ->UseManualTime()
    ->Iterations(20)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode_l2flush)
    ->ArgNames({"b", "s_q", "h_q", "topk", "fp8", "splits"})
    ->Args({128, 2, 128, 2048, 1, 1})
    ->Args({64, 2, 128, 2048, 1, 1})
    ->Args({2, 2, 128, 2048, 1, 0})
    ->Args({2, 2, 128, 2048, 0, 0})
    ->Args({2, 2, 128, 2048, 1, 1})
    ->UseManualTime()
    ->Iterations(20)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();

#else  // !DSA_WITH_CUDA

#include <cstdio>

int main() {
  std::printf("bench_sparse_mla_cuda: built without CUDA (DSA_ENABLE_CUDA=OFF); nothing to run\n");
  return 0;
}

#endif
