// Catch2 runner for the CPU tests. Prints the seed; `--rng-seed N` reproduces a run.
#define CATCH_CONFIG_RUNNER
// Wide enough that no test name wraps when ctest discovery lists them (a wrapped name would be
// registered as fragments that match nothing).
#define CATCH_CONFIG_CONSOLE_WIDTH 400
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  Catch::Session session;
  if (int rc = session.applyCommandLine(argc, argv)) return rc;
  auto& cfg = session.configData();
  // A filter that matches no test is a failure, not a vacuous pass.
  cfg.warnings = static_cast<Catch::WarnAbout::What>(cfg.warnings | Catch::WarnAbout::NoTests);
  bool listing = cfg.listTests || cfg.listTestNamesOnly || cfg.listTags || cfg.listReporters;
  if (cfg.rngSeed == 0) {
    // Fresh random data on every run unless a seed is given.
    cfg.rngSeed = static_cast<unsigned>(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000007u) | 1u;
    session.useConfigData(cfg);
  }
  if (!listing) std::printf("dsa tests: --rng-seed %u\n", cfg.rngSeed);
  return session.run();
}
