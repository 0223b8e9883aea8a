// CUDA OP-TOPK benchmarks (SPEC §10.2: rows/s and bytes of scores read), k = 2048, sorted and
// unsorted (both deterministic), timed with CUDA events (UseManualTime). Shapes are the anchors of
// ANCHORS §0: 4096 / 128 / 64 / 4 rows × 131072 columns of fp32 N(0, 1) scores, full ranges.
// Effective bandwidth = rows·cols·4 bytes / time, as ANCHORS counts it. Built only in CUDA builds.
#if defined(DSA_WITH_CUDA)

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "bench_common.hpp"
#include "bench_cuda.hpp"

using namespace dsa;
using bench::Dev;
using bench::fill_replicated;
using bench::time_loop;

namespace {

// args: rows, cols, k, sorted (1: the default order; 0: any deterministic order, SPEC §5)
void BM_topk(benchmark::State& st) {
  const int64_t rows = st.range(0), cols = st.range(1), k = st.range(2);
  const bool sorted = st.range(3) != 0;
  Dev scores(rows * cols * 4), idx(rows * k * 4);
  {
    // 4 MiB of random scores replicated: rows repeat every 8 rows of 131072, which does not help a
    // selection kernel (each row is read and ranked on its own).
    const std::vector<float> block = bench::random_f32(1 << 20, 1.0, 7);
    std::vector<uint8_t> bytes(block.size() * 4);
    std::memcpy(bytes.data(), block.data(), bytes.size());
    fill_replicated(scores.p, scores.n, bytes);
  }
  TopKParams p;
  p.scores = make_view(scores.p, DType::kF32, {rows, cols});
  p.indices = make_view(idx.p, DType::kI32, {rows, k});
  p.sorted = sorted;
  const double bytes = static_cast<double>(rows) * cols * 4;
  const size_t ws_bytes = workspace_size(p);  // 0 for every kernel today; asked as a caller must
  Dev ws(ws_bytes);
  time_loop(st, [&] { return run(p, ws.p, ws_bytes); }, 0, bytes);
  st.counters["rows/s"] = benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_topk)
    ->ArgNames({"rows", "cols", "k", "sorted"})
    ->ArgsProduct({{4096, 128, 64, 4}, {131072}, {2048}, {1, 0}})
    ->Args({4096, 32768, 2048, 1})
    ->Args({64, 32768, 2048, 1})
    ->Args({64, 262144, 2048, 1})
    ->Iterations(20)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();

#else  // !DSA_WITH_CUDA

#include <cstdio>

int main() {
  std::printf("bench_topk_cuda: built without CUDA (DSA_ENABLE_CUDA=OFF); nothing to run\n");
  return 0;
}

#endif
