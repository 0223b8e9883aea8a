#include "support/random.hpp"

#include <algorithm>
#include <catch2/catch.hpp>

namespace dsa::test {

uint32_t run_seed() { return Catch::getCurrentContext().getConfig()->rngSeed(); }

std::vector<bf16_t> randn_bf16(Rng& rng, size_t n, double scale, double offset_range, double clamp) {
  const double offset = rng.uniform(-offset_range, offset_range);
  std::vector<bf16_t> out(n);
  for (auto& x : out) {
    double v = round_bf16(static_cast<float>(rng.normal() * scale)) + offset;
    v = std::clamp(v, -clamp, clamp);
    x = float_to_bf16(static_cast<float>(v));
  }
  return out;
}

std::vector<float> randn_f32(Rng& rng, size_t n, double scale) {
  std::vector<float> out(n);
  for (auto& x : out) x = static_cast<float>(rng.normal() * scale);
  return out;
}

std::vector<double> to_double(const std::vector<bf16_t>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

}  // namespace dsa::test
