#include "support/testdata.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace dsa::test {

std::string testdata_dir() {
  if (const char* env = std::getenv("DSA_TESTDATA_DIR"); env && *env) return env;
  return DSA_TESTDATA_DEFAULT;
}

const GoldenTensor& GoldenCase::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw std::runtime_error("golden case " + dir + " has no tensor " + name);
  return it->second;
}

double GoldenCase::param(const std::string& name) const {
  auto it = params.find(name);
  if (it == params.end()) throw std::runtime_error("golden case " + dir + " has no param " + name);
  return it->second;
}

namespace {
DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::kF32;
  if (s == "bf16") return DType::kBF16;
  if (s == "e4m3") return DType::kE4M3;
  if (s == "u8") return DType::kU8;
  if (s == "i32") return DType::kI32;
  throw std::runtime_error("unknown golden dtype " + s);
}
}  // namespace

std::optional<GoldenCase> load_golden(const std::string& case_name) {
  GoldenCase gc;
  gc.dir = testdata_dir() + "/" + case_name;
  std::ifstream manifest(gc.dir + "/manifest.txt");
  if (!manifest) {
    std::printf("SKIPPED: golden case %s not found (set DSA_TESTDATA_DIR)\n", gc.dir.c_str());
    return std::nullopt;
  }
  std::string line;
  while (std::getline(manifest, line)) {
    std::istringstream ls(line);
    std::string kind, name;
    ls >> kind >> name;
    if (kind == "param") {
      double v;
      ls >> v;
      gc.params[name] = v;
    } else if (kind == "tensor") {
      std::string file, dtype, dims;
      ls >> file >> dtype >> dims;
      GoldenTensor t;
      t.dtype = parse_dtype(dtype);
      std::istringstream ds(dims);
      for (std::string d; std::getline(ds, d, ',');) t.shape.push_back(std::stoll(d));
      std::ifstream bin(gc.dir + "/" + file, std::ios::binary);
      if (!bin) throw std::runtime_error("cannot open " + gc.dir + "/" + file);
      t.bytes.assign(std::istreambuf_iterator<char>(bin), std::istreambuf_iterator<char>());
      if (static_cast<int64_t>(t.bytes.size()) != t.numel() * static_cast<int64_t>(dtype_size(t.dtype)))
        throw std::runtime_error(gc.dir + "/" + file + ": size does not match its manifest shape");
      gc.tensors[name] = std::move(t);
    }
  }
  return gc;
}

}  // namespace dsa::test
