// CUDA fused indexer → top-k (IndexerTopKParams) against the unfused pair (indexer_logits into a
// full [s_q, s_kv] fp32 logits tensor, then topk), FP8 mode, h_idx 64 × d_idx 128, k 2048,
// sorted, timed with CUDA events (UseManualTime). Shapes: s_q 4096 × s_kv 131072 (the 128K
// prefill chunk) and 2048 × 32768, causal (a chunk at the end of the keys) and full ranges.
// Counters: ms, TFLOPS (2·H·d FLOP per scored pair, SPEC §10.2), and dev_MiB = device memory the
// path needs beyond its inputs (fused: workspace + indices; unfused: logits tensor + topk's
// workspace + indices). The fused entries run both paths of the op (chunk arg): −1 the streaming
// kernel (scores never leave the SM; counter streaming = 1 when it ran), ≥ 0 the chunked path
// with that chunk_rows (0 = automatic, ~256 MiB of logits).
#if defined(DSA_WITH_CUDA)

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "bench_common.hpp"
#include "bench_cuda.hpp"

using namespace dsa;
using bench::Dev;
using bench::fill_replicated;
using bench::time_loop;
using bench::upload;

namespace dsa {
void indexer_topk_streaming_for_testing(int mode);
bool indexer_topk_streaming_taken(const IndexerTopKParams& p);
}  // namespace dsa

namespace {

struct Inputs {
  int64_t s_q, s_kv, k;
  double pairs = 0;
  std::unique_ptr<Dev> q, kk, sc, w, ks, ke, idx;

  Inputs(int64_t s_q_, int64_t s_kv_, bool causal, int64_t k_) : s_q(s_q_), s_kv(s_kv_), k(k_) {
    const int64_t H = 64, D = 128;
    q = std::make_unique<Dev>(s_q * H * D);
    kk = std::make_unique<Dev>(s_kv * D);
    sc = std::make_unique<Dev>(s_kv * 4);
    w = std::make_unique<Dev>(s_q * H * 4);
    ks = std::make_unique<Dev>(s_q * 4);
    ke = std::make_unique<Dev>(s_q * 4);
    idx = std::make_unique<Dev>(s_q * k * 4);
    fill_replicated(q->p, q->n, bench::random_e4m3(std::min<int64_t>(q->n, 1 << 20), 1));
    fill_replicated(kk->p, kk->n, bench::random_e4m3(std::min<int64_t>(kk->n, 1 << 20), 2));
    std::vector<float> scales = bench::random_f32(s_kv, 1.0, 3);
    for (auto& x : scales) x = 1e-3f + 1e-2f * std::fabs(x);
    upload(sc->p, scales);
    std::vector<float> wv = bench::random_f32(s_q * H, 0.05, 4);
    for (auto& x : wv) x = std::fabs(x) + 1e-3f;  // positive: few exact-zero logits, a real top-k
    upload(w->p, wv);
    std::vector<int32_t> vks(s_q, 0), vke(s_q);
    for (int64_t t = 0; t < s_q; ++t) {
      vke[t] = static_cast<int32_t>(causal ? s_kv - s_q + t + 1 : s_kv);
      pairs += vke[t];
    }
    upload(ks->p, vks);
    upload(ke->p, vke);
  }

  IndexerLogitsParams logits(void* out) const {
    IndexerLogitsParams p;
    p.q = make_view(q->p, DType::kE4M3, {s_q, 64, 128});
    p.k = make_view(kk->p, DType::kE4M3, {s_kv, 128});
    p.k_scale = make_view(sc->p, DType::kF32, {s_kv});
    p.weights = make_view(w->p, DType::kF32, {s_q, 64});
    p.ks = make_view(ks->p, DType::kI32, {s_q});
    p.ke = make_view(ke->p, DType::kI32, {s_q});
    p.logits = make_view(out, DType::kF32, {s_q, s_kv});
    return p;
  }
};

// args: s_q, s_kv, causal, k, chunk (−1 streaming kernel; ≥ 0 chunked path, chunk_rows)
void BM_indexer_topk_fused(benchmark::State& st) {
  const Inputs in(st.range(0), st.range(1), st.range(2) != 0, st.range(3));
  const IndexerLogitsParams lp = in.logits(nullptr);
  IndexerTopKParams p;
  p.q = lp.q;
  p.k = lp.k;
  p.k_scale = lp.k_scale;
  p.weights = lp.weights;
  p.ks = lp.ks;
  p.ke = lp.ke;
  p.indices = make_view(in.idx->p, DType::kI32, {in.s_q, in.k});
  const bool streaming = st.range(4) < 0;
  p.chunk_rows = streaming ? 0 : static_cast<int32_t>(st.range(4));
  indexer_topk_streaming_for_testing(streaming ? 1 : 0);
  const size_t ws_bytes = workspace_size(p);
  Dev ws(ws_bytes);
  time_loop(st, [&] { return run(p, ws.p, ws_bytes); }, bench::indexer_flops(in.pairs), 0);
  st.counters["dev_MiB"] = static_cast<double>(ws_bytes + in.idx->n) / (1 << 20);
  st.counters["ws_MiB"] = static_cast<double>(ws_bytes) / (1 << 20);
  st.counters["streaming"] = indexer_topk_streaming_taken(p) ? 1 : 0;
  indexer_topk_streaming_for_testing(-1);
}

// args: s_q, s_kv, causal, k
void BM_indexer_topk_unfused(benchmark::State& st) {
  const Inputs in(st.range(0), st.range(1), st.range(2) != 0, st.range(3));
  Dev logits(in.s_q * in.s_kv * 4);
  const IndexerLogitsParams lp = in.logits(logits.p);
  TopKParams tp;
  tp.scores = lp.logits;
  tp.ks = lp.ks;
  tp.ke = lp.ke;
  tp.indices = make_view(in.idx->p, DType::kI32, {in.s_q, in.k});
  const size_t lws = workspace_size(lp), tws = workspace_size(tp);
  Dev lw(lws), tw(tws);
  time_loop(
      st,
      [&] {
        Status s = run(lp, lw.p, lws);
        return s.ok() ? run(tp, tw.p, tws) : s;
      },
      bench::indexer_flops(in.pairs), 0);
  st.counters["dev_MiB"] = static_cast<double>(logits.n + lws + tws + in.idx->n) / (1 << 20);
}

}  // namespace

BENCHMARK(BM_indexer_topk_fused)
    ->ArgNames({"s_q", "s_kv", "causal", "k", "chunk"})
    ->Args({4096, 131072, 1, 2048, -1})
    ->Args({4096, 131072, 0, 2048, -1})
    ->Args({4096, 131072, 1, 2048, 0})
    ->Args({4096, 131072, 0, 2048, 0})
    ->Args({2048, 32768, 1, 2048, -1})
    ->Args({2048, 32768, 0, 2048, -1})
    ->Args({2048, 32768, 0, 2048, 0})
    ->Args({4096, 8192, 1, 2048, -1})
    ->Args({4096, 8192, 1, 2048, 0})
    ->Iterations(5)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_indexer_topk_unfused)
    ->ArgNames({"s_q", "s_kv", "causal", "k"})
    ->Args({4096, 131072, 1, 2048})
    ->Args({4096, 131072, 0, 2048})
    ->Args({2048, 32768, 1, 2048})
    ->Args({2048, 32768, 0, 2048})
    ->Iterations(5)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();

#else  // !DSA_WITH_CUDA

#include <cstdio>

int main() {
  std::printf("bench_indexer_topk_cuda: built without CUDA (DSA_ENABLE_CUDA=OFF); nothing to run\n");
  return 0;
}

#endif
