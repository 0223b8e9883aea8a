// CUDA OP-IDXLOGITS benchmarks (SPEC §10.2: 2·H^I·d^I FLOP per scored pair), timed with CUDA
// events (UseManualTime): prefill s_q 4096 × s_kv {8K, 32K}, causal (chunk at the end of the
// keys) and full ranges; decode b = 128, next_n = 1, context {32K, 128K} with the bytes of the
// 132-byte cache read per second. Inputs are random e4m3 codes (a random block replicated on the
// device) and random positive scales. Built only in CUDA builds; elsewhere main() says so.
#if defined(DSA_WITH_CUDA)

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "bench_cuda.hpp"

using namespace dsa;
using bench::Dev;
using bench::fill_replicated;
using bench::time_loop;
using bench::upload;

namespace {

// Fills `bytes` of device memory with random e4m3 codes (a 1 MiB block, replicated).
void fill_codes(void* dst, size_t bytes, uint64_t seed, size_t block = 1 << 20) {
  fill_replicated(dst, bytes, bench::random_e4m3(static_cast<int64_t>(std::min(block, bytes)), seed));
}

std::vector<float> random_scales(int64_t n, uint64_t seed) {
  std::vector<float> v = bench::random_f32(n, 1.0, seed);
  for (auto& x : v) x = 1e-3f + 1e-2f * std::fabs(x);
  return v;
}

// args: s_q, s_kv, causal (1: key ranges of a chunk at the end of the keys; 0: every key).
// FP8 mode (e4m3 q/k with per-key scales) or exact mode (bf16 q/k, fp32 accumulation).
void prefill(benchmark::State& st, bool fp8) {
  const int64_t s_q = st.range(0), s_kv = st.range(1), H = 64, D = 128;
  const bool causal = st.range(2) != 0;
  const int64_t elem = fp8 ? 1 : 2;
  Dev q(s_q * H * D * elem), k(s_kv * D * elem), sc(s_kv * 4), w(s_q * H * 4), ks(s_q * 4), ke(s_q * 4),
      out(s_q * s_kv * 4);
  if (fp8) {
    fill_codes(q.p, q.n, 1);
    fill_codes(k.p, k.n, 2);
    upload(sc.p, random_scales(s_kv, 3));
    upload(w.p, bench::random_f32(s_q * H, 0.05, 4));
  } else {
    upload(q.p, bench::random_bf16(s_q * H * D, 0.5, 5));
    upload(k.p, bench::random_bf16(s_kv * D, 0.5, 6));
    upload(w.p, bench::random_f32(s_q * H, 0.05, 7));
  }
  std::vector<int32_t> vks(s_q), vke(s_q);
  double pairs = 0;
  for (int64_t t = 0; t < s_q; ++t) {
    vks[t] = 0;
    vke[t] = static_cast<int32_t>(causal ? s_kv - s_q + t + 1 : s_kv);
    pairs += vke[t] - vks[t];
  }
  upload(ks.p, vks);
  upload(ke.p, vke);
  const DType dt = fp8 ? DType::kE4M3 : DType::kBF16;
  IndexerLogitsParams p;
  p.q = make_view(q.p, dt, {s_q, H, D});
  p.k = make_view(k.p, dt, {s_kv, D});
  if (fp8) p.k_scale = make_view(sc.p, DType::kF32, {s_kv});
  p.weights = make_view(w.p, DType::kF32, {s_q, H});
  p.ks = make_view(ks.p, DType::kI32, {s_q});
  p.ke = make_view(ke.p, DType::kI32, {s_q});
  p.logits = make_view(out.p, DType::kF32, {s_q, s_kv});
  time_loop(st, [&] { return run(p); }, bench::indexer_flops(pairs), 0);
  if (fp8) st.counters["pairs"] = pairs;
}

void BM_prefill_fp8(benchmark::State& st) { prefill(st, true); }
void BM_prefill_bf16(benchmark::State& st) { prefill(st, false); }

// args: b, context length (every request full), next_n.
void BM_decode_paged(benchmark::State& st) {
  const int64_t b = st.range(0), ctx = st.range(1), next_n = st.range(2), H = 64, D = 128, P = 64;
  const int64_t pages_per = (ctx + P - 1) / P, num_blocks = b * pages_per, page_bytes = 132 * P;
  Dev q(b * next_n * H * D), cache(num_blocks * page_bytes), w(b * next_n * H * 4), lens(b * 4),
      bt(b * pages_per * 4), out(b * next_n * ctx * 4);
  fill_codes(q.p, q.n, 8);
  {
    // 64 distinct pages of random codes and positive scales, replicated over the cache by doubling.
    const int64_t base = std::min<int64_t>(64, num_blocks);
    std::vector<uint8_t> pages(base * page_bytes);
    const std::vector<uint8_t> codes = bench::random_e4m3(base * 128 * P, 9);
    const std::vector<float> scales = random_scales(base * P, 10);
    for (int64_t pg = 0; pg < base; ++pg) {
      std::memcpy(pages.data() + pg * page_bytes, codes.data() + pg * 128 * P, 128 * P);
      std::memcpy(pages.data() + pg * page_bytes + 128 * P, scales.data() + pg * P, 4 * P);
    }
    fill_replicated(cache.p, cache.n, pages);
  }
  upload(w.p, bench::random_f32(b * next_n * H, 0.05, 11));
  upload(lens.p, std::vector<int32_t>(b, static_cast<int32_t>(ctx)));
  std::vector<int32_t> table(b * pages_per);
  // A fixed scattered mapping: request i, page j → (j · b + i) (pages of a request are not adjacent).
  for (int64_t i = 0; i < b; ++i)
    for (int64_t j = 0; j < pages_per; ++j) table[i * pages_per + j] = static_cast<int32_t>(j * b + i);
  upload(bt.p, table);
  IndexerPagedLogitsParams p;
  p.q = make_view(q.p, DType::kE4M3, {b, next_n, H, D});
  p.k_cache = make_view(cache.p, DType::kU8, {num_blocks, page_bytes});
  p.weights = make_view(w.p, DType::kF32, {b * next_n, H});
  p.context_lens = make_view(lens.p, DType::kI32, {b});
  p.block_table = make_view(bt.p, DType::kI32, {b, pages_per});
  p.logits = make_view(out.p, DType::kF32, {b * next_n, ctx});
  p.page_block_size = static_cast<int32_t>(P);
  double pairs = 0;
  for (int64_t j = 0; j < next_n; ++j) pairs += static_cast<double>(b) * (ctx - next_n + 1 + j);
  time_loop(st, [&] { return run(p); }, bench::indexer_flops(pairs), static_cast<double>(b) * ctx * 132);
}

}  // namespace

BENCHMARK(BM_prefill_fp8)
    ->ArgNames({"s_q", "s_kv", "causal"})
    ->Args({4096, 8192, 1})
    ->Args({4096, 8192, 0})
    ->Args({4096, 32768, 1})
    ->Args({4096, 32768, 0})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_prefill_bf16)
    ->ArgNames({"s_q", "s_kv", "causal"})
    ->Args({4096, 8192, 1})
    ->Args({4096, 8192, 0})
    ->UseManualTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode_paged)
    ->ArgNames({"b", "ctx", "next_n"})
    ->Args({128, 32768, 1})
    ->Args({128, 131072, 1})
    ->Args({128, 32768, 2})
    ->UseManualTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();

#else  // !DSA_WITH_CUDA

#include <cstdio>

int main() {
  std::printf("bench_indexer_cuda: built without CUDA (DSA_ENABLE_CUDA=OFF); nothing to run\n");
  return 0;
}

#endif
