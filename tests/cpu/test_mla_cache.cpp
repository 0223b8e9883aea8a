// OP-MLACACHE (SPEC §7.1): the 656-byte FP8 cache and the bf16 cache, against the FlashMLA golden
// cache bytes, a naive writer in the test, and OP-QUANT round trips; bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/transform_oracles.hpp"
#include "dsa/dsa.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;

namespace {

void expect_failure(const Status& s, StatusCode code, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("mla_cache_write: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
}

constexpr uint8_t kCanary = 0x5C;

// The naive 656-byte token (SPEC §7.1): 4 tiles of 128 codes, 4 fp32 scales, 64 bf16 k^R.
void naive_token(const bf16_t* kv, bool ue8m0, uint8_t* out) {
  for (int b = 0; b < 4; ++b) {
    double x[128];
    for (int i = 0; i < 128; ++i) x[i] = bf16_to_float(kv[b * 128 + i]);
    const float s = oracle::quantize_block(x, ue8m0, out + b * 128);
    std::memcpy(out + 512 + 4 * b, &s, 4);
  }
  for (int i = 0; i < 64; ++i) {
    const uint16_t v = kv[512 + i].bits;
    out[528 + 2 * i] = static_cast<uint8_t>(v & 0xFF);  // little-endian
    out[528 + 2 * i + 1] = static_cast<uint8_t>(v >> 8);
  }
}

struct CacheRun {
  int64_t n, blocks, P, row_stride, page_stride;
  bool fp8;
  std::vector<bf16_t> kv;
  std::vector<int32_t> slots;
  std::vector<uint8_t> bytes;   // FP8 cache storage
  std::vector<bf16_t> values;   // bf16 cache storage
  MlaCacheWriteParams p;
  CacheRun(test::Rng& rng, int64_t n_, int64_t blocks_, int64_t P_, int64_t row_pad, int64_t page_pad, bool fp8_,
           ScaleFormat fmt, double skip)
      : n(n_), blocks(blocks_), P(P_), fp8(fp8_) {
    const int64_t width = fp8 ? 656 : 576;
    row_stride = width + row_pad;
    page_stride = P * row_stride + page_pad;
    kv = test::randn_bf16(rng, std::max<int64_t>(n * 576, 1), 0.1, 0.05, 1.0);
    // Tiles of very different magnitudes (incl. below the 1e-4 clamp), as real latents have.
    for (int64_t t = 0; t < n; ++t)
      for (int b = 0; b < 4; ++b) {
        const float f = std::ldexp(1.0f, static_cast<int>(rng.integer(-16, 4)));
        for (int i = 0; i < 128; ++i) kv[t * 576 + b * 128 + i] = float_to_bf16(bf16_to_float(kv[t * 576 + b * 128 + i]) * f);
      }
    std::vector<int32_t> all(blocks * P);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.engine());
    REQUIRE(static_cast<int64_t>(all.size()) >= n);
    slots.resize(std::max<int64_t>(n, 1));
    for (int64_t t = 0; t < n; ++t) slots[t] = rng.uniform() < skip ? -static_cast<int32_t>(rng.integer(1, 1000)) : all[t];
    p.kv = make_view(kv.data(), DType::kBF16, {n, 576});
    p.slot_mapping = make_view(slots.data(), DType::kI32, {n});
    p.scale_format = fmt;
    if (fp8) {
      bytes.assign(std::max<int64_t>(blocks * page_stride, 1), kCanary);
      p.cache = make_view(bytes.data(), DType::kU8, {blocks, P, 656}, {page_stride, row_stride, 1});
    } else {
      values.assign(std::max<int64_t>(blocks * page_stride, 1), bf16_t{0x5C5C});
      p.cache = make_view(values.data(), DType::kBF16, {blocks, P, 576}, {page_stride, row_stride, 1});
    }
  }
  int64_t slot_offset(int64_t slot) const { return (slot / P) * page_stride + (slot % P) * row_stride; }
};

void check_cache(const CacheRun& c) {
  std::vector<char> written(c.blocks * c.P, 0);
  int64_t bad = 0;
  uint8_t want[656];
  for (int64_t t = 0; t < c.n; ++t) {
    if (c.slots[t] < 0) continue;
    written[c.slots[t]] = 1;
    const int64_t off = c.slot_offset(c.slots[t]);
    if (c.fp8) {
      naive_token(&c.kv[t * 576], c.p.scale_format == ScaleFormat::kUe8m0, want);
      for (int i = 0; i < 656; ++i)
        if (c.bytes[off + i] != want[i] && ++bad < 5)
          FAIL_CHECK("token " << t << " slot " << c.slots[t] << " byte " << i << ": 0x" << std::hex
                              << int(c.bytes[off + i]) << " vs 0x" << int(want[i]));
    } else {
      for (int i = 0; i < 576; ++i) bad += c.values[off + i].bits != c.kv[t * 576 + i].bits;
    }
  }
  CHECK(bad == 0);
  // Unwritten slots, row padding and page padding keep the canary.
  int64_t stray = 0;
  const int64_t width = c.fp8 ? 656 : 576;
  for (int64_t b = 0; b < c.blocks; ++b)
    for (int64_t i = 0; i < c.page_stride; ++i) {
      const int64_t o = i / c.row_stride, col = i % c.row_stride;
      const bool in_token = o < c.P && col < width;
      if (in_token && written[b * c.P + o]) continue;
      const int64_t at = b * c.page_stride + i;
      stray += c.fp8 ? c.bytes[at] != kCanary : c.values[at].bits != 0x5C5C;
    }
  CHECK(stray == 0);
}

}  // namespace

TEST_CASE("mla_cache_write: FlashMLA golden k_cache reproduced bit for bit (ue8m0)", "[mla_cache][fp8][golden]") {
  auto gc = test::load_golden("flashmla_sparse_decode_fp8");
  if (!gc) return;
  const auto& latent = gc->tensor("kv_latent");  // [51, 64, 576]
  const auto& want = gc->tensor("k_cache");      // [51, 64, 656]
  const int64_t blocks = latent.shape[0], P = latent.shape[1], n = blocks * P;
  REQUIRE(want.bytes.size() == static_cast<size_t>(n * 656));
  test::Rng rng(601);
  for (bool permuted : {false, true}) {
    INFO("permuted token order " << permuted);
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    if (permuted) std::shuffle(order.begin(), order.end(), rng.engine());
    const auto src = latent.as<bf16_t>();
    std::vector<bf16_t> kv(n * 576);
    std::vector<int32_t> slots(n);
    for (int64_t t = 0; t < n; ++t) {
      std::memcpy(&kv[t * 576], &src[order[t] * 576], 576 * 2);
      slots[t] = order[t];
    }
    std::vector<uint8_t> cache(n * 656, 0xFF);
    MlaCacheWriteParams p;
    p.kv = make_view(kv.data(), DType::kBF16, {n, 576});
    p.slot_mapping = make_view(slots.data(), DType::kI32, {n});
    p.cache = make_view(cache.data(), DType::kU8, {blocks, P, 656});
    Status s = run(p);
    INFO(s.message());
    REQUIRE(s.ok());
    int64_t diff = 0, first = -1;
    for (int64_t i = 0; i < n * 656; ++i)
      if (cache[i] != want.bytes[i] && diff++ == 0) first = i;
    INFO("first differing byte " << first);
    CHECK(diff == 0);
  }
}

TEST_CASE("mla_cache_write: FP8 and bf16 caches vs a naive writer (shapes, strides, skips)", "[mla_cache][fp8]") {
  test::Rng rng(602);
  struct Shape { int64_t n, blocks, P, row_pad, page_pad; double skip; };
  for (const Shape& sh : {Shape{10, 1, 64, 0, 0, 0.0}, Shape{37, 4, 16, 16, 100, 0.25}, Shape{5, 7, 1, 0, 3, 0.4},
                          Shape{100, 2, 64, 0, 0, 0.1}, Shape{0, 2, 64, 0, 0, 0.0}})
    for (int mode = 0; mode < 3; ++mode) {
      const bool fp8 = mode < 2;
      const ScaleFormat fmt = mode == 1 ? ScaleFormat::kRaw : ScaleFormat::kUe8m0;
      INFO("n " << sh.n << " blocks " << sh.blocks << " P " << sh.P << " pads " << sh.row_pad << "/" << sh.page_pad
                << " mode " << mode);
      CacheRun c(rng, sh.n, sh.blocks, sh.P, sh.row_pad, sh.page_pad, fp8, fmt, sh.skip);
      Status s = run(c.p);
      INFO(s.message());
      REQUIRE(s.ok());
      check_cache(c);
    }
}

TEST_CASE("mla_cache_write: write → dequantize equals quantize → dequantize, k_pe exact", "[mla_cache][fp8]") {
  test::Rng rng(603);
  for (ScaleFormat fmt : {ScaleFormat::kUe8m0, ScaleFormat::kRaw}) {
    CacheRun c(rng, 50, 1, 64, 0, 0, true, fmt, 0.0);
    REQUIRE(run(c.p).ok());
    // OP-QUANT + OP-DEQUANT of the latent part, through the public API.
    const int64_t n = c.n;
    std::vector<uint8_t> codes(n * 512);
    std::vector<float> scales(n * 4);
    std::vector<bf16_t> deq(n * 512), from_cache(n * 512);
    QuantizeParams qp;
    qp.x = make_view(c.kv.data(), DType::kBF16, {n, 512}, {576, 1});
    qp.codes = make_view(codes.data(), DType::kE4M3, {n, 512});
    qp.scales = make_view(scales.data(), DType::kF32, {n, 4});
    qp.scale_format = fmt;
    REQUIRE(run(qp).ok());
    DequantizeParams dp;
    dp.codes = qp.codes;
    dp.scales = qp.scales;
    dp.out = make_view(deq.data(), DType::kBF16, {n, 512});
    REQUIRE(run(dp).ok());
    // Dequantize the cache: codes at bytes 0–511, scales at 512–527 (one row per token here).
    for (int64_t t = 0; t < n; ++t) {
      const uint8_t* tok = &c.bytes[c.slot_offset(c.slots[t])];
      float s[4];
      std::memcpy(s, tok + 512, 16);
      for (int i = 0; i < 512; ++i) from_cache[t * 512 + i] = float_to_bf16(e4m3_to_float(tok[i]) * s[i / 128]);
      CHECK(std::memcmp(tok + 528, &c.kv[t * 576 + 512], 128) == 0);  // k_pe bytes copied exactly
      if (fmt == ScaleFormat::kUe8m0)
        for (float v : s) {
          int e;
          CHECK(std::frexp(v, &e) == 0.5f);  // powers of two
        }
    }
    CHECK(std::memcmp(from_cache.data(), deq.data(), deq.size() * 2) == 0);
    // And the dequantized latent approximates the input within e4m3 precision.
    int64_t far = 0;
    for (int64_t t = 0; t < n; ++t)
      for (int i = 0; i < 512; ++i) {
        const double x = bf16_to_float(c.kv[t * 576 + i]), y = bf16_to_float(deq[t * 512 + i]);
        far += std::fabs(x - y) > std::max(std::fabs(x) * (1.0 / 16 + 1.0 / 256), scales[t * 4 + i / 128] * std::ldexp(1.0, -9));
      }
    CHECK(far == 0);
  }
}

TEST_CASE("mla_cache_write: bad arguments are rejected by name, nothing written", "[mla_cache][validation]") {
  test::Rng rng(604);
  CacheRun c(rng, 6, 2, 4, 0, 0, true, ScaleFormat::kUe8m0, 0.0);
  std::vector<float> f32_cache(2 * 4 * 656);
  SECTION("kv missing") { c.p.kv = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "kv is required"); }
  SECTION("kv null") { c.p.kv.data = nullptr; expect_failure(run(c.p), StatusCode::kNullPointer, "kv is null"); }
  SECTION("kv dtype") { c.p.kv.dtype = DType::kF32; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "kv.dtype = f32"); }
  SECTION("kv width") { c.p.kv = make_view(c.kv.data(), DType::kBF16, {6, 512}); expect_failure(run(c.p), StatusCode::kUnsupportedShape, "kv.shape[1] = 512, expected 576"); }
  SECTION("kv stride") { c.p.kv.stride[1] = 2; expect_failure(run(c.p), StatusCode::kInvalidArgument, "kv.stride[1] = 2"); }
  SECTION("slot_mapping missing") { c.p.slot_mapping = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "slot_mapping is required"); }
  SECTION("slot_mapping dtype") { c.p.slot_mapping.dtype = DType::kU8; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "slot_mapping.dtype = u8"); }
  SECTION("slot_mapping length") { c.p.slot_mapping.shape[0] = 5; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping.shape[0] = 5 does not match n = 6"); }
  SECTION("slot_mapping out of range") { c.slots[2] = 8; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping[2] = 8 is out of range [0, num_blocks * P = 8)"); }
  SECTION("slot_mapping huge") { c.slots[0] = 2147483647; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping[0] = 2147483647"); }
  SECTION("slot_mapping repeated") { c.slots[4] = c.slots[0]; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping[4]"); }
  SECTION("cache missing") { c.p.cache = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "cache is required"); }
  SECTION("cache dtype") { c.p.cache = make_view(f32_cache.data(), DType::kF32, {2, 4, 656}); expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "cache.dtype = f32"); }
  SECTION("cache e4m3") { c.p.cache.dtype = DType::kE4M3; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "cache.dtype = e4m3"); }
  SECTION("cache token bytes") { c.p.cache = make_view(c.bytes.data(), DType::kU8, {2, 4, 576}); expect_failure(run(c.p), StatusCode::kUnsupportedShape, "cache.shape[2] = 576, expected 656"); }
  SECTION("bf16 cache width") { c.p.cache = make_view(c.bytes.data(), DType::kBF16, {2, 4, 328}); expect_failure(run(c.p), StatusCode::kUnsupportedShape, "cache.shape[2] = 328, expected 576"); }
  SECTION("cache rank") { c.p.cache = make_view(c.bytes.data(), DType::kU8, {8, 656}); expect_failure(run(c.p), StatusCode::kInvalidArgument, "cache has rank 2"); }
  SECTION("cache null") { c.p.cache.data = nullptr; expect_failure(run(c.p), StatusCode::kNullPointer, "cache is null"); }
  SECTION("cache tokens alias") { c.p.cache.stride[1] = 600; expect_failure(run(c.p), StatusCode::kInvalidArgument, "cache.stride[1] = 600 makes elements of cache overlap"); }
  SECTION("cache overlaps kv") { c.p.cache.data = c.kv.data(); expect_failure(run(c.p), StatusCode::kInvalidArgument, "cache overlaps kv"); }
  SECTION("scale_format") { c.p.scale_format = static_cast<ScaleFormat>(-1); expect_failure(run(c.p), StatusCode::kInvalidArgument, "scale_format = -1"); }
  for (auto b : c.bytes) CHECK(b == kCanary);
}
