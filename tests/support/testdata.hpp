// tests/support/testdata.hpp — the golden FlashMLA/DeepGEMM cases of ../shared/testdata.
//
// Found through the DSA_TESTDATA_DIR environment variable, else the configured default
// (../shared/testdata beside the source tree). A test whose case is absent prints "SKIPPED: ..."
// and returns; ctest reports it as skipped.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dsa/types.hpp"

namespace dsa::test {

struct GoldenTensor {
  DType dtype = DType::kInvalid;  // u8 and e4m3 both map to 1-byte types
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  template <typename T>
  std::vector<T> as() const {
    std::vector<T> out(bytes.size() / sizeof(T));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
    return out;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
};

struct GoldenCase {
  std::string dir;
  std::map<std::string, double> params;
  std::map<std::string, GoldenTensor> tensors;
  const GoldenTensor& tensor(const std::string& name) const;  // throws if missing
  double param(const std::string& name) const;                // throws if missing
};

std::string testdata_dir();
// Loads a case; nullopt (and prints "SKIPPED: ...") when the folder is absent.
std::optional<GoldenCase> load_golden(const std::string& case_name);

}  // namespace dsa::test
