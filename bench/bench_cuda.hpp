// bench/bench_cuda.hpp — the scaffolding every CUDA benchmark shares: checked CUDA calls, an owning
// device buffer, replicated random fills, and the CUDA-event timing loop (UseManualTime) that
// reports ms, TFLOPS and GB/s, optionally with the L2 flushed before every timed call (cold-cache
// numbers; back-to-back calls otherwise). Included only from bench_*_cuda.cpp inside
// `#if DSA_WITH_CUDA`.
#pragma once

#include <benchmark/benchmark.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "dsa/dsa.hpp"

namespace dsa::bench {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// Owning device allocation of `n` bytes (at least 1, so empty shapes still get a valid pointer).
struct Dev {
  void* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t bytes) : n(bytes) { check(cudaMalloc(&p, bytes > 0 ? bytes : 1), "cudaMalloc"); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
};

// Fills `bytes` of device memory with the host block `h`, replicated by doubling on the device
// (large inputs without a large host buffer).
inline void fill_replicated(void* dst, size_t bytes, const std::vector<uint8_t>& h) {
  if (bytes == 0 || h.empty()) return;
  const size_t block = std::min(h.size(), bytes);
  check(cudaMemcpy(dst, h.data(), block, cudaMemcpyHostToDevice), "fill");
  size_t have = block;
  while (have < bytes) {
    const size_t n = std::min(have, bytes - have);
    check(cudaMemcpy(static_cast<uint8_t*>(dst) + have, dst, n, cudaMemcpyDeviceToDevice), "replicate");
    have += n;
  }
}

template <typename T>
void upload(void* dst, const std::vector<T>& v) {
  check(cudaMemcpy(dst, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
}

// Evicts the L2 (50 MB on an H200) by writing a 256 MiB scratch buffer with cudaMemsetAsync on the
// legacy default stream, the stream the timing events use. The buffer is allocated on first use
// and kept for the process.
inline void flush_l2() {
  static constexpr size_t kBytes = size_t{256} << 20;
  static void* scratch = [] {
    void* p = nullptr;
    check(cudaMalloc(&p, kBytes), "cudaMalloc (L2 flush scratch)");
    return p;
  }();
  check(cudaMemsetAsync(scratch, 0, kBytes, nullptr), "L2 flush");
}

enum class L2 { kWarm, kFlush };

// Times `fn` (returning dsa::Status) per iteration between two CUDA events after one warm-up call;
// an unsupported config or failing call skips the benchmark with its message. `flops` and `bytes`
// are per call. L2::kFlush flushes the L2 before each timed call, outside the events (the flush is
// ordered before the start event on the same stream, so it is not timed).
template <typename Fn>
void time_loop(benchmark::State& st, Fn fn, double flops, double bytes, L2 l2 = L2::kWarm) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  const dsa::Status s0 = fn();
  if (!s0.ok()) {
    st.SkipWithError(s0.message().c_str());
    return;
  }
  check(cudaDeviceSynchronize(), "warm-up");
  double total = 0;
  int64_t iters = 0;
  for (auto _ : st) {
    if (l2 == L2::kFlush) flush_l2();
    check(cudaEventRecord(a), "record");
    const dsa::Status s = fn();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    if (!s.ok()) {
      st.SkipWithError(s.message().c_str());
      break;
    }
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    st.SetIterationTime(ms / 1e3);
    total += ms / 1e3;
    ++iters;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  if (iters > 0 && total > 0) {
    st.counters["ms"] = total / iters * 1e3;
    st.counters["TFLOPS"] = flops * iters / total / 1e12;
    if (bytes > 0) st.counters["GB/s"] = bytes * iters / total / 1e9;
  }
}

}  // namespace dsa::bench
