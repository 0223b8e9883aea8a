// Scalar codecs of dsa/numerics.hpp (e4m3fn, bf16, the SPEC §4.4 scale rules) against the
// independent float64 oracles of transform_oracles.hpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/transform_oracles.hpp"
#include "dsa/dsa.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {
// A random float spread over many binades (both signs), including e4m3 subnormals and saturation.
float random_wide_float(test::Rng& rng, int lo_exp, int hi_exp) {
  const int e = static_cast<int>(rng.integer(lo_exp, hi_exp));
  const double m = rng.uniform(1.0, 2.0);
  const double v = std::ldexp(m, e) * (rng.integer(0, 1) ? -1 : 1);
  return static_cast<float>(v);
}
}  // namespace

TEST_CASE("e4m3 decode: all 256 codes equal the format formula", "[codec][fp8]") {
  int nan_count = 0;
  for (int c = 0; c < 256; ++c) {
    const float got = e4m3_to_float(static_cast<uint8_t>(c));
    const double want = oracle::e4m3_value(static_cast<uint8_t>(c));
    INFO("code 0x" << std::hex << c);
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
      ++nan_count;
      continue;
    }
    CHECK(static_cast<double>(got) == want);
    CHECK(std::signbit(got) == ((c & 0x80) != 0));  // ±0 keep their sign
  }
  CHECK(nan_count == 2);
  CHECK(std::isnan(e4m3_to_float(0x7F)));
  CHECK(std::isnan(e4m3_to_float(0xFF)));
  CHECK(e4m3_to_float(0x7E) == 448.0f);
  CHECK(e4m3_to_float(0x01) == std::ldexp(1.0f, -9));
  CHECK(e4m3_to_float(0x08) == std::ldexp(1.0f, -6));
}

TEST_CASE("e4m3 encode(decode(c)) == c for every non-NaN code", "[codec][fp8]") {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    INFO("code 0x" << std::hex << c);
    CHECK(float_to_e4m3(e4m3_to_float(static_cast<uint8_t>(c))) == c);
  }
}

TEST_CASE("e4m3 encode: random fp32 against a float64 RNE oracle", "[codec][fp8]") {
  test::Rng rng(101);
  int64_t checked = 0;
  auto check = [&](float x) {
    const uint8_t got = float_to_e4m3(x), want = oracle::e4m3_encode(x);
    if (got != want) {
      FAIL_CHECK("x = " << x << " (bits 0x" << std::hex << oracle::bits(x) << ") encoded 0x" << int(got)
                        << ", oracle 0x" << int(want));
    }
    ++checked;
  };
  for (int i = 0; i < 200000; ++i) check(random_wide_float(rng, -14, 10));  // subnormals → saturation
  for (int i = 0; i < 20000; ++i) check(static_cast<float>(rng.uniform(-500, 500)));
  // Every midpoint between adjacent codes (ties to even) and its two fp32 neighbours.
  for (int c = 0; c < 0x7E; ++c) {
    const double mid = (oracle::e4m3_value(c) + oracle::e4m3_value(c + 1)) / 2;
    const float m = static_cast<float>(mid);
    REQUIRE(static_cast<double>(m) == mid);
    for (float x : {m, std::nextafter(m, 0.0f), std::nextafter(m, 1000.0f)}) {
      check(x);
      check(-x);
    }
    // the midpoint itself goes to the even code
    CHECK((float_to_e4m3(m) & 1) == 0);
  }
  // Saturation, infinities, NaN, signed zero, tiny values.
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {448.0f, 449.0f, 463.99f, 464.0f, 465.0f, 1e6f, 3.4e38f, inf, 0.0f, 1e-30f,
                  std::ldexp(1.0f, -10), std::nextafter(std::ldexp(1.0f, -10), 1.0f), 1e-45f}) {
    check(x);
    check(-x);
  }
  CHECK(float_to_e4m3(inf) == 0x7E);
  CHECK(float_to_e4m3(-inf) == 0xFE);
  CHECK(float_to_e4m3(449.0f) == 0x7E);
  CHECK(float_to_e4m3(-0.0f) == 0x80);
  CHECK(float_to_e4m3(std::ldexp(1.0f, -10)) == 0x00);  // exactly half the smallest subnormal: even (0)
  const float qnan = std::numeric_limits<float>::quiet_NaN();
  CHECK((float_to_e4m3(qnan) & 0x7F) == 0x7F);
  CHECK(float_to_e4m3(-qnan) == 0xFF);
  CHECK(float_to_e4m3(oracle::from_bits(0x7f800001u)) == 0x7F);  // signalling NaN stays NaN
  CHECK(checked > 220000);
}

TEST_CASE("bf16 RNE: random fp32 against a float64 oracle", "[codec]") {
  test::Rng rng(102);
  auto check = [&](float x) {
    const uint16_t got = float_to_bf16(x).bits;
    const double want = oracle::bf16_round(x);
    if (got != oracle::bf16_bits_of(want))
      FAIL_CHECK("x = " << x << " (bits 0x" << std::hex << oracle::bits(x) << ") gave 0x" << got
                        << ", oracle 0x" << oracle::bf16_bits_of(want));
    if (round_bf16(x) != static_cast<float>(want) && !std::isnan(want)) FAIL_CHECK("round_bf16(" << x << ")");
  };
  for (int i = 0; i < 200000; ++i) check(random_wide_float(rng, -140, 127));
  for (int i = 0; i < 100000; ++i) check(oracle::from_bits(static_cast<uint32_t>(rng.engine()()) & 0x7f7fffffu));
  // Ties: exactly half an ulp above even and odd bf16 values, and their neighbours.
  for (int i = 0; i < 20000; ++i) {
    const uint32_t hi = static_cast<uint32_t>(rng.integer(0, 0x7f7e)) << 16;
    const float tie = oracle::from_bits(hi | 0x8000u);
    for (float x : {tie, std::nextafter(tie, 0.0f), std::nextafter(tie, 1e38f)}) {
      check(x);
      check(-x);
    }
    CHECK((float_to_bf16(tie).bits & 1) == 0);
  }
  const float inf = std::numeric_limits<float>::infinity();
  const float max = std::numeric_limits<float>::max();
  for (float x : {0.0f, -0.0f, inf, -inf, max, -max, 1e-45f, 1.1754942e-38f}) check(x);
  CHECK(float_to_bf16(max).bits == 0x7f80);  // rounds up to +inf (RNE overflow)
  CHECK(float_to_bf16(oracle::from_bits(0x7f7f7fffu)).bits == 0x7f7f);
  CHECK(float_to_bf16(-0.0f).bits == 0x8000);
  const uint16_t nan_bits = float_to_bf16(oracle::from_bits(0x7f800001u)).bits;  // sNaN → NaN, not inf
  CHECK((nan_bits & 0x7f80) == 0x7f80);
  CHECK((nan_bits & 0x007f) != 0);
  CHECK(std::isnan(bf16_to_float(nan_bits == 0 ? bf16_t{0} : bf16_t{nan_bits})));
  // bf16 → float is exact widening.
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    const float f = bf16_to_float(bf16_t{static_cast<uint16_t>(b)});
    CHECK((oracle::bits(f) == (b << 16) || std::isnan(f)));
  }
}

TEST_CASE("SPEC §4.4 scale rules: 1e-4 amax clamp, a·fl32(1/448), ue8m0 rounding up", "[codec][fp8]") {
  test::Rng rng(103);
  // The constants.
  CHECK(kAmaxFloor == static_cast<float>(1e-4));
  CHECK(oracle::bits(kAmaxFloor) == oracle::bits(9.99999975e-5f));
  CHECK(kInvE4M3Max == static_cast<float>(1.0 / 448.0));
  // Random amax over many binades, every positive bf16 value, and around the clamp.
  std::vector<float> amaxes;
  for (int i = 0; i < 100000; ++i) amaxes.push_back(std::fabs(random_wide_float(rng, -30, 20)));
  for (uint32_t b = 0; b < 0x7f80; ++b) amaxes.push_back(oracle::from_bits(b << 16));
  for (float a : {0.0f, 1e-30f, 9.99e-5f, kAmaxFloor, std::nextafter(kAmaxFloor, 1.0f), 0.02734375f, 448.0f, 1.0f})
    amaxes.push_back(a);
  int64_t division_differs = 0;
  for (float a : amaxes) {
    const float raw = fp8_scale_raw(a), ue = fp8_scale_ue8m0(a);
    const float want_raw = oracle::scale_raw(a), want_ue = oracle::scale_ue8m0(a);
    if (oracle::bits(raw) != oracle::bits(want_raw)) FAIL_CHECK("raw scale of amax " << a << ": " << raw << " vs " << want_raw);
    if (oracle::bits(ue) != oracle::bits(want_ue)) FAIL_CHECK("ue8m0 scale of amax " << a << ": " << ue << " vs " << want_ue);
    // ue8m0 is a power of two ≥ the raw scale and < twice it.
    int e;
    if (std::frexp(ue, &e) != 0.5) FAIL_CHECK("ue8m0 scale " << ue << " is not a power of two");
    if (!(ue >= raw && ue < 2 * raw)) FAIL_CHECK("ue8m0 " << ue << " vs raw " << raw);
    const float clamped = std::max(a, kAmaxFloor);
    if (oracle::f32(static_cast<double>(clamped) / 448.0) != raw) ++division_differs;
  }
  // A true division would differ for many amax values: the rule is the multiplication.
  CHECK(division_differs > 1000);
  // The 1e-4 clamp applies to amax, not to amax/448: an all-zero block gets 2^-22 (SPEC §4.4).
  CHECK(fp8_scale_ue8m0(0.0f) == std::ldexp(1.0f, -22));
  CHECK(fp8_scale_raw(0.0f) == oracle::f32(static_cast<double>(kAmaxFloor) * kInvE4M3Max));
  CHECK(fp8_scale_ue8m0(0.02734375f) == std::ldexp(1.0f, -14));
  CHECK(fp8_scale_ue8m0(448.0f) == 1.0f);
  CHECK(fp8_scale_ue8m0(std::nextafter(448.0f, 1e9f)) == 2.0f);
  // fp8_quantize_value: an IEEE division by the scale, clamp, RNE cast.
  for (int i = 0; i < 100000; ++i) {
    const float x = random_wide_float(rng, -12, 6);
    const float s = i % 2 ? fp8_scale_raw(std::fabs(random_wide_float(rng, -10, 6)))
                          : fp8_scale_ue8m0(std::fabs(random_wide_float(rng, -10, 6)));
    const double q = std::min(448.0, std::max(-448.0, static_cast<double>(oracle::div(x, s))));
    const uint8_t want = oracle::e4m3_encode(q);
    if (fp8_quantize_value(x, s) != want) FAIL_CHECK("quantize " << x << " / " << s);
  }
}

TEST_CASE("indexer weight fold constant and order (SPEC §4.2 step 5)", "[codec]") {
  CHECK(kIndexerInvSqrtDim == static_cast<float>(1.0 / std::sqrt(128.0)));
  test::Rng rng(104);
  for (int i = 0; i < 10000; ++i) {
    const float w = static_cast<float>(rng.normal());
    const float s = i % 2 ? std::ldexp(1.0f, static_cast<int>(rng.integer(-20, 5)))
                          : fp8_scale_raw(static_cast<float>(rng.uniform(0, 10)));
    const float want = oracle::mul(oracle::mul(oracle::mul(w, 0.125f), s), kIndexerInvSqrtDim);
    if (oracle::bits(indexer_fold_weight(w, s)) != oracle::bits(want)) FAIL_CHECK("fold " << w << " · " << s);
  }
}
