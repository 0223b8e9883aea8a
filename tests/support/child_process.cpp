#include "support/child_process.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include "support/random.hpp"

namespace dsa::test {

uint64_t fnv1a(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

ChildRun run_self_with_threads(const std::string& spec, int threads, const std::string& marker) {
  ChildRun r;
  char exe[4096] = {};
  if (readlink("/proc/self/exe", exe, sizeof exe - 1) <= 0) return r;
  const std::string cmd = "DSA_NUM_THREADS=" + std::to_string(threads) + " '" + std::string(exe) + "' '" + spec +
                          "' --rng-seed " + std::to_string(run_seed()) + " 2>&1";
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return r;
  std::string line;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f)) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;  // a long line arrives in pieces
    line.pop_back();
    if (line.find(marker) != std::string::npos) r.lines.push_back(line);
    line.clear();
  }
  if (!line.empty() && line.find(marker) != std::string::npos) r.lines.push_back(line);
  const int st = pclose(f);
  if (st != -1 && WIFEXITED(st)) r.status = WEXITSTATUS(st);
  return r;
}

}  // namespace dsa::test
