// OP-QUANT (SPEC §4.4): quantize / dequantize against a naive float64 re-implementation, and the
// DeepGEMM golden keys (raw scales, §7.2 page layout) reproduced bit for bit.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/transform_oracles.hpp"
#include "dsa/dsa.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;

namespace {

void expect_failure(const Status& s, StatusCode code, const char* op, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind(std::string(op) + ": ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
}

// Random values whose 128-blocks have very different magnitudes: normal blocks, tiny blocks
// (amax below the 1e-4 clamp and below 0.0273), blocks with one outlier, and (rarely) a zero block.
std::vector<double> block_values(test::Rng& rng, int64_t n, int64_t d) {
  std::vector<double> v(n * d);
  for (int64_t b = 0; b < n * d / 128; ++b) {
    const int kind = static_cast<int>(rng.integer(0, 9));
    const double scale = kind == 0 ? std::ldexp(1.0, static_cast<int>(rng.integer(-24, -14)))
                                   : std::ldexp(1.0, static_cast<int>(rng.integer(-8, 8)));
    for (int i = 0; i < 128; ++i) v[b * 128 + i] = rng.normal() * scale;
    if (kind == 1) v[b * 128 + rng.integer(0, 127)] *= 300;
    if (kind == 2 && rng.integer(0, 3) == 0)
      for (int i = 0; i < 128; ++i) v[b * 128 + i] = 0;
  }
  return v;
}

struct QuantRun {
  int64_t n, d, pad;
  DType dtype;
  std::vector<bf16_t> xb;
  std::vector<float> xf;
  std::vector<double> x;  // the exact input values
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  QuantizeParams p;
  QuantRun(test::Rng& rng, int64_t n_, int64_t d_, int64_t pad_, DType dt, ScaleFormat fmt)
      : n(n_), d(d_), pad(pad_), dtype(dt) {
    const int64_t stride = d + pad;
    const std::vector<double> v = block_values(rng, n, d);
    x.resize(n * d);
    xb.resize(std::max<int64_t>(n * stride, 1));
    xf.resize(std::max<int64_t>(n * stride, 1));
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < d; ++i) {
        const float f = static_cast<float>(v[r * d + i]);
        xb[r * stride + i] = float_to_bf16(f);
        xf[r * stride + i] = f;
        x[r * d + i] = dt == DType::kBF16 ? bf16_to_float(xb[r * stride + i]) : f;
      }
    codes.resize(std::max<int64_t>(n * d, 1));
    scales.resize(std::max<int64_t>(n * d / 128, 1));
    test::poison_float(codes);
    test::poison_float(scales);
    p.x = make_view(dt == DType::kBF16 ? static_cast<void*>(xb.data()) : static_cast<void*>(xf.data()), dt,
                    {n, d}, {stride, 1});
    p.codes = make_view(codes.data(), DType::kE4M3, {n, d});
    p.scales = make_view(scales.data(), DType::kF32, {n, d / 128});
    p.scale_format = fmt;
  }
};

}  // namespace

TEST_CASE("quantize and dequantize vs a float64 re-implementation of SPEC §4.4", "[quant][fp8]") {
  test::Rng rng(401);
  struct Shape { int64_t n, d, pad; };
  for (const Shape& sh : {Shape{1, 128, 0}, Shape{5, 256, 0}, Shape{33, 512, 64}, Shape{7, 1024, 3},
                          Shape{0, 128, 0}, Shape{200, 128, 0}})
    for (DType dt : {DType::kBF16, DType::kF32})
      for (ScaleFormat fmt : {ScaleFormat::kUe8m0, ScaleFormat::kRaw}) {
        INFO("n " << sh.n << " d " << sh.d << " pad " << sh.pad << " dtype " << dtype_name(dt) << " raw "
                  << (fmt == ScaleFormat::kRaw));
        QuantRun q(rng, sh.n, sh.d, sh.pad, dt, fmt);
        Status s = run(q.p);
        INFO(s.message());
        REQUIRE(s.ok());
        int64_t bad_codes = 0, bad_scales = 0, bad_error = 0;
        uint8_t want[128];
        for (int64_t r = 0; r < sh.n; ++r)
          for (int64_t b = 0; b < sh.d / 128; ++b) {
            const double* xs = &q.x[r * sh.d + b * 128];
            const float sc = oracle::quantize_block(xs, fmt == ScaleFormat::kUe8m0, want);
            if (oracle::bits(sc) != oracle::bits(q.scales[r * sh.d / 128 + b]) && ++bad_scales < 5)
              FAIL_CHECK("scale row " << r << " block " << b << ": " << q.scales[r * sh.d / 128 + b] << " vs " << sc);
            for (int i = 0; i < 128; ++i) {
              const uint8_t got = q.codes[r * sh.d + b * 128 + i];
              if (got != want[i] && ++bad_codes < 5)
                FAIL_CHECK("code row " << r << " col " << b * 128 + i << ": 0x" << std::hex << int(got) << " vs 0x"
                                       << int(want[i]));
              // Quantization error: half an e4m3 ulp (relative 2^-4, absolute 2^-10·s for subnormals)
              // of the fp32 quotient f32(x/s) that SPEC §4.4 rounds, plus that fp32 rounding itself
              // (≤ 2^-24·|x|): a quotient just below an e4m3 tie can round onto the tie in fp32 and
              // then away from x (seed 488101503: x = 2.71875, s = 397.714, error 2^-10·s + 2e-7).
              const double back = oracle::e4m3_value(got) * sc;
              if (std::fabs(back - xs[i]) >
                  std::max(std::fabs(xs[i]) * 0.0625, sc * std::ldexp(1.0, -10)) + std::fabs(xs[i]) * std::ldexp(1.0, -24))
                ++bad_error;
            }
          }
        CHECK(bad_codes == 0);
        CHECK(bad_scales == 0);
        CHECK(bad_error == 0);

        // Dequantize into f32 and bf16: code·scale in fp32, then bf16 RNE.
        for (DType out_dt : {DType::kF32, DType::kBF16}) {
          std::vector<float> of(std::max<int64_t>(sh.n * sh.d, 1));
          std::vector<bf16_t> ob(of.size());
          test::poison_float(of);
          test::poison_float(ob);
          DequantizeParams dp;
          dp.codes = q.p.codes;
          dp.scales = q.p.scales;
          dp.out = make_view(out_dt == DType::kF32 ? static_cast<void*>(of.data()) : static_cast<void*>(ob.data()),
                             out_dt, {sh.n, sh.d});
          REQUIRE(run(dp).ok());
          int64_t bad = 0;
          for (int64_t r = 0; r < sh.n; ++r)
            for (int64_t i = 0; i < sh.d; ++i) {
              const float prod = oracle::mul(static_cast<float>(oracle::e4m3_value(q.codes[r * sh.d + i])),
                                             q.scales[r * sh.d / 128 + i / 128]);
              const double want_v = out_dt == DType::kF32 ? prod : oracle::bf16_round(prod);
              const double got = out_dt == DType::kF32 ? of[r * sh.d + i] : bf16_to_float(ob[r * sh.d + i]);
              if (got != want_v) ++bad;
            }
          CHECK(bad == 0);
        }
      }
}

TEST_CASE("quantize: ue8m0 and raw scales give the documented special cases", "[quant][fp8]") {
  // One block of zeros and one block of tiny values: the clamp is on amax, not on amax/448.
  std::vector<bf16_t> x(256);
  test::Rng rng(402);
  for (int i = 0; i < 128; ++i) x[i] = bf16_t{0};
  for (int i = 128; i < 256; ++i) x[i] = float_to_bf16(static_cast<float>(rng.normal() * 1e-6));
  std::vector<uint8_t> codes(256);
  std::vector<float> scales(2);
  QuantizeParams p;
  p.x = make_view(x.data(), DType::kBF16, {1, 256});
  p.codes = make_view(codes.data(), DType::kE4M3, {1, 256});
  p.scales = make_view(scales.data(), DType::kF32, {1, 2});
  REQUIRE(run(p).ok());
  CHECK(scales[0] == std::ldexp(1.0f, -22));
  CHECK(scales[1] == std::ldexp(1.0f, -22));
  for (int i = 0; i < 128; ++i) CHECK(codes[i] == 0);
  p.scale_format = ScaleFormat::kRaw;
  REQUIRE(run(p).ok());
  CHECK(scales[0] == oracle::f32(static_cast<double>(oracle::f32(1e-4)) * oracle::f32(1.0 / 448)));
}

TEST_CASE("quantize: DeepGEMM mqa_logits keys (raw scales) and q casts, bit-exact", "[quant][fp8][golden]") {
  auto gc = test::load_golden("deepgemm_mqa_logits");
  if (!gc) return;
  const auto& kvb = gc->tensor("kv_bf16");
  const int64_t skv = kvb.shape[0], d = kvb.shape[1];
  std::vector<uint8_t> codes(skv * d);
  std::vector<float> scales(skv);
  test::poison_float(codes);
  test::poison_float(scales);
  QuantizeParams p;
  p.x = make_view(kvb.bytes.data(), DType::kBF16, {skv, d});
  p.codes = make_view(codes.data(), DType::kE4M3, {skv, d});
  p.scales = make_view(scales.data(), DType::kF32, {skv, 1});
  p.scale_format = ScaleFormat::kRaw;
  REQUIRE(run(p).ok());
  const auto& want_codes = gc->tensor("kv").bytes;
  const auto want_scales = gc->tensor("kv_scale").as<float>();
  REQUIRE(want_codes.size() == codes.size());
  int64_t code_diff = 0, scale_diff = 0, division_diff = 0;
  const auto kv_values = kvb.as<bf16_t>();
  for (size_t i = 0; i < codes.size(); ++i) code_diff += codes[i] != want_codes[i];
  for (int64_t t = 0; t < skv; ++t) {
    scale_diff += oracle::bits(scales[t]) != oracle::bits(want_scales[t]);
    // The true-division rule would not reproduce these bytes (SPEC §4.4 step 2).
    float amax = 0;
    for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::fabs(bf16_to_float(kv_values[t * d + i])));
    division_diff += oracle::f32(std::max(amax, kAmaxFloor) / 448.0) != want_scales[t];
  }
  CHECK(code_diff == 0);
  CHECK(scale_diff == 0);
  CHECK(division_diff > skv / 4);
  // q codes: a plain RNE cast, no scale.
  const auto qb = gc->tensor("q_bf16").as<bf16_t>();
  const auto& q = gc->tensor("q").bytes;
  int64_t q_diff = 0;
  for (size_t i = 0; i < qb.size(); ++i) q_diff += float_to_e4m3(bf16_to_float(qb[i])) != q[i];
  CHECK(q_diff == 0);
  CHECK(qb.size() == q.size());
}

TEST_CASE("quantize: DeepGEMM paged kv_cache bytes (raw scales, SPEC §7.2 pages), bit-exact",
          "[quant][fp8][golden]") {
  auto gc = test::load_golden("deepgemm_paged_mqa_logits");
  if (!gc) return;
  const auto& kvb = gc->tensor("kv_bf16");  // [num_blocks, P, 128]
  const int64_t blocks = kvb.shape[0], P = kvb.shape[1], d = kvb.shape[2];
  std::vector<uint8_t> codes(blocks * P * d);
  std::vector<float> scales(blocks * P);
  QuantizeParams p;
  p.x = make_view(kvb.bytes.data(), DType::kBF16, {blocks * P, d});
  p.codes = make_view(codes.data(), DType::kE4M3, {blocks * P, d});
  p.scales = make_view(scales.data(), DType::kF32, {blocks * P, 1});
  p.scale_format = ScaleFormat::kRaw;
  REQUIRE(run(p).ok());
  // Page = [P × 128 codes, token-major | P fp32 scales].
  const int64_t page_bytes = P * (d + 4);
  std::vector<uint8_t> cache(blocks * page_bytes);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t t = 0; t < P; ++t) {
      std::memcpy(&cache[b * page_bytes + t * d], &codes[(b * P + t) * d], d);
      std::memcpy(&cache[b * page_bytes + P * d + 4 * t], &scales[b * P + t], 4);
    }
  const auto& want = gc->tensor("kv_cache");
  REQUIRE(want.shape[1] == page_bytes);
  REQUIRE(want.bytes.size() == cache.size());
  int64_t diff = 0;
  for (size_t i = 0; i < cache.size(); ++i) diff += cache[i] != want.bytes[i];
  CHECK(diff == 0);
  const auto qb = gc->tensor("q_bf16").as<bf16_t>();
  const auto& q = gc->tensor("q").bytes;
  int64_t q_diff = 0;
  for (size_t i = 0; i < qb.size(); ++i) q_diff += float_to_e4m3(bf16_to_float(qb[i])) != q[i];
  CHECK(q_diff == 0);
}

TEST_CASE("quantize / dequantize: bad arguments are rejected by name, nothing written",
          "[quant][validation]") {
  test::Rng rng(403);
  QuantRun q(rng, 3, 256, 0, DType::kBF16, ScaleFormat::kUe8m0);
  auto untouched = [&] {
    for (auto c : q.codes) if (c != 0xFF) return false;
    for (auto s : q.scales) if (!std::isnan(s)) return false;
    return true;
  };
  SECTION("x missing") { q.p.x = TensorView{}; expect_failure(run(q.p), StatusCode::kNullPointer, "quantize", "x is required"); }
  SECTION("x dtype") { q.p.x.dtype = DType::kE4M3; expect_failure(run(q.p), StatusCode::kUnsupportedDtype, "quantize", "x.dtype = e4m3"); }
  SECTION("x width") { q.p.x.shape[1] = 200; expect_failure(run(q.p), StatusCode::kUnsupportedShape, "quantize", "x.shape[1] = 200"); }
  SECTION("x stride") { q.p.x.stride[1] = 2; expect_failure(run(q.p), StatusCode::kInvalidArgument, "quantize", "x.stride[1] = 2"); }
  SECTION("codes missing") { q.p.codes = TensorView{}; expect_failure(run(q.p), StatusCode::kNullPointer, "quantize", "codes is required"); }
  SECTION("codes dtype") { q.p.codes.dtype = DType::kU8; expect_failure(run(q.p), StatusCode::kUnsupportedDtype, "quantize", "codes.dtype = u8"); }
  SECTION("codes shape") { q.p.codes.shape[1] = 128; expect_failure(run(q.p), StatusCode::kInvalidArgument, "quantize", "codes.shape[1] = 128 does not match d = 256"); }
  SECTION("scales missing") { q.p.scales = TensorView{}; expect_failure(run(q.p), StatusCode::kNullPointer, "quantize", "scales is required"); }
  SECTION("scales dtype") { q.p.scales.dtype = DType::kBF16; expect_failure(run(q.p), StatusCode::kUnsupportedDtype, "quantize", "scales.dtype = bf16"); }
  SECTION("scales blocks") { q.p.scales.shape[1] = 1; expect_failure(run(q.p), StatusCode::kInvalidArgument, "quantize", "scales.shape[1] = 1, expected d / 128 = 2"); }
  SECTION("scales misaligned") { q.p.scales.data = reinterpret_cast<char*>(q.scales.data()) + 2; expect_failure(run(q.p), StatusCode::kMisaligned, "quantize", "scales"); }
  SECTION("scale_format") { q.p.scale_format = static_cast<ScaleFormat>(9); expect_failure(run(q.p), StatusCode::kInvalidArgument, "quantize", "scale_format = 9"); }
  SECTION("dequantize arguments") {
    std::vector<float> out(3 * 256);
    test::poison_float(out);
    DequantizeParams dp;
    dp.codes = q.p.codes;
    dp.scales = q.p.scales;
    dp.out = make_view(out.data(), DType::kF32, {3, 256});
    DequantizeParams bad = dp;
    bad.codes = TensorView{};
    expect_failure(run(bad), StatusCode::kNullPointer, "dequantize", "codes is required");
    bad = dp;
    bad.codes.dtype = DType::kBF16;
    expect_failure(run(bad), StatusCode::kUnsupportedDtype, "dequantize", "codes.dtype = bf16");
    bad = dp;
    bad.codes.shape[1] = 100;
    expect_failure(run(bad), StatusCode::kUnsupportedShape, "dequantize", "codes.shape[1] = 100");
    bad = dp;
    bad.scales.shape[1] = 3;
    expect_failure(run(bad), StatusCode::kInvalidArgument, "dequantize", "scales.shape[1] = 3");
    bad = dp;
    bad.scales = TensorView{};
    expect_failure(run(bad), StatusCode::kNullPointer, "dequantize", "scales is required");
    bad = dp;
    bad.out.dtype = DType::kI32;
    expect_failure(run(bad), StatusCode::kUnsupportedDtype, "dequantize", "out.dtype = i32");
    bad = dp;
    bad.out.shape[0] = 2;
    expect_failure(run(bad), StatusCode::kInvalidArgument, "dequantize", "out.shape[0] = 2 does not match n = 3");
    bad = dp;
    bad.out.data = nullptr;
    expect_failure(run(bad), StatusCode::kNullPointer, "dequantize", "out is null");
    for (float v : out) CHECK(std::isnan(v));
  }
  CHECK(untouched());
}
