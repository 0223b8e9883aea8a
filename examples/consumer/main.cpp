// dsa_consumer — uses the installed dsa package: one op (OP-QUANT) through dsa::run, checked
// against the bit-exact scalar rules of dsa/numerics.hpp (SPEC §4.4).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dsa/dsa.hpp"

int main() {
  const int64_t n = 3, d = 256;
  std::mt19937 gen(12345);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<dsa::bf16_t> x(n * d);
  for (auto& v : x) v = dsa::float_to_bf16(nd(gen));
  std::vector<uint8_t> codes(n * d, 0x7F);
  std::vector<float> scales(n * d / 128, -1.f);

  dsa::QuantizeParams p;
  p.x = dsa::make_view(x.data(), dsa::DType::kBF16, {n, d});
  p.codes = dsa::make_view(codes.data(), dsa::DType::kE4M3, {n, d});
  p.scales = dsa::make_view(scales.data(), dsa::DType::kF32, {n, d / 128});
  const dsa::Status s = dsa::run(p);
  if (!s.ok()) {
    std::printf("dsa_consumer: quantize failed: %s\n", s.message().c_str());
    return 1;
  }
  int64_t bad = 0;
  for (int64_t b = 0; b < n * d / 128; ++b) {
    float amax = 0;
    for (int i = 0; i < 128; ++i) amax = std::fmax(amax, std::fabs(dsa::bf16_to_float(x[b * 128 + i])));
    const float want = dsa::fp8_scale_ue8m0(amax);
    bad += std::memcmp(&want, &scales[b], 4) != 0;
    for (int i = 0; i < 128; ++i)
      bad += codes[b * 128 + i] != dsa::fp8_quantize_value(dsa::bf16_to_float(x[b * 128 + i]), want);
  }
  if (bad) {
    std::printf("dsa_consumer: %lld values differ from the SPEC §4.4 rule\n", (long long)bad);
    return 1;
  }
  std::printf("dsa_consumer: OK — installed dsa %s, quantize of %lldx%lld bit-exact\n",
              dsa::version_string(), (long long)n, (long long)d);
  return 0;
}
