// src/common/parallel.hpp — a minimal fork-join loop for the CPU reference.
//
// Threads come from std::thread (no OpenMP dependency); DSA_NUM_THREADS overrides the count.
// Work is split into contiguous chunks of rows, so results never depend on the thread count
// (every row is computed by exactly one thread, in a fixed order inside the row).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace dsa::detail {

inline int num_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("DSA_NUM_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 1 : static_cast<int>(hw);
  }();
  return n;
}

// Calls fn(begin, end) on disjoint sub-ranges covering [0, n). `grain` is the smallest chunk
// worth a thread. Runs inline when one thread suffices.
template <typename Fn>
void parallel_for(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, grain));
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  // More chunks than threads balances uneven rows (ragged batches); threads pull chunks in order.
  const int64_t chunks = std::min<int64_t>(n, int64_t{threads} * 8);
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;) fn(n * c / chunks, n * (c + 1) / chunks);
  };
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& th : pool) th.join();
}

}  // namespace dsa::detail
