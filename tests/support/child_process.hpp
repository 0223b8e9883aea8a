// tests/support/child_process.hpp — thread-count invariance checks: the CPU reference reads
// DSA_NUM_THREADS once per process, so a test re-runs a hidden test case of its own executable in
// child processes with different thread counts and compares hashes of the outputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dsa::test {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;

// FNV-1a over n bytes, continuing from h (pass the previous result to chain buffers).
uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset);

template <typename T>
uint64_t fnv1a(const std::vector<T>& v, uint64_t h = kFnvOffset) {
  return fnv1a(v.data(), v.size() * sizeof(T), h);
}

struct ChildRun {
  int status = -1;                 // the child's exit code; -1 if it could not run or was killed
  std::vector<std::string> lines;  // its stdout+stderr lines containing the marker, without '\n'
};

// Runs this executable (/proc/self/exe) with the Catch test spec `spec`, the same --rng-seed as
// this run (run_seed()) and DSA_NUM_THREADS = threads.
ChildRun run_self_with_threads(const std::string& spec, int threads, const std::string& marker);

}  // namespace dsa::test
