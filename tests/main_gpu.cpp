// Catch2 runner for the GPU tests: lists without touching CUDA (ctest discovery runs on machines
// without a GPU), then exits 77 — which ctest reports as "skipped" — when no device is present.
#define CATCH_CONFIG_RUNNER
// Wide enough that no test name wraps when ctest discovery lists them (a wrapped name would be
// registered as fragments that match nothing).
#define CATCH_CONFIG_CONSOLE_WIDTH 400
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>

#if defined(DSA_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  auto& cfg = session.configData();
  // A filter that matches no test is a failure, not a vacuous pass.
  cfg.warnings = static_cast<Catch::WarnAbout::What>(cfg.warnings | Catch::WarnAbout::NoTests);
  const bool listing = cfg.listTests || cfg.listTestNamesOnly || cfg.listTags || cfg.listReporters;
  if (!listing) {
#if defined(DSA_WITH_CUDA)
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      std::printf("SKIP: no CUDA device\n");
      return 77;
    }
#else
    std::printf("SKIP: built without CUDA (DSA_ENABLE_CUDA=OFF or no nvcc)\n");
    return 77;
#endif
    if (cfg.rngSeed == 0) {
      cfg.rngSeed = static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000007u) | 1u;
      session.useConfigData(cfg);
    }
    std::printf("dsa gpu tests: --rng-seed %u\n", cfg.rngSeed);
  }
  return session.run();
}

#if !defined(DSA_WITH_CUDA)
TEST_CASE("GPU tests need a CUDA build", "[gpu]") { REQUIRE(false); }  // never runs: main exits 77
#endif
