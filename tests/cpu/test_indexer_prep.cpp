// OP-IDXPREP (SPEC §4.2 steps 1–6, §4.6, §7.2, §11): end to end against a naive re-implementation
// in the test (bit for bit: codes, scales, folded weights, cache bytes — SPEC §9.1), the score
// computed from the outputs against the exact score of the raw inputs, and bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "cpu/transform_oracles.hpp"
#include "dsa/dsa.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

void expect_failure(const Status& s, StatusCode code, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("indexer_prep: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
}

constexpr int64_t kMaxPos = 6000;
constexpr uint8_t kCanary = 0xA5;

const std::vector<float>& table(bool want_sin) {
  static std::vector<float> cos(kMaxPos * 32), sin(kMaxPos * 32);
  static bool made = [] {
    RopeTableParams p;
    p.cos = make_view(cos.data(), DType::kF32, {kMaxPos, 32});
    p.sin = make_view(sin.data(), DType::kF32, {kMaxPos, 32});
    return run(p).ok();
  }();
  REQUIRE(made);
  return want_sin ? sin : cos;
}

struct Prep {
  int64_t T, H, P = 64, num_blocks = 0, page_bytes = 0, page_stride = 0;
  bool fp8;
  std::vector<bf16_t> q, k;
  std::vector<float> w;
  std::vector<int32_t> pos, slots;
  // outputs
  std::vector<uint8_t> q_codes, k_codes, cache;
  std::vector<bf16_t> q_bf, k_bf;
  std::vector<float> w_out, k_scale;
  IndexerPrepParams p;

  Prep(test::Rng& rng, int64_t T_, int64_t H_, IndexerMode mode, bool hadamard, ScaleFormat fmt,
       double q_scale = 1.0)
      : T(T_), H(H_), fp8(mode == IndexerMode::kFp8) {
    q = test::randn_bf16(rng, std::max<int64_t>(T * H * 128, 1), q_scale, 0.05, 100);
    k = test::randn_bf16(rng, std::max<int64_t>(T * 128, 1), 1.0, 0.05, 100);
    w = test::randn_f32(rng, std::max<int64_t>(T * H, 1));
    pos.resize(std::max<int64_t>(T, 1));
    for (auto& x : pos) x = static_cast<int32_t>(rng.integer(0, kMaxPos - 1));
    p.q = make_view(q.data(), DType::kBF16, {T, H, 128});
    p.weights = make_view(w.data(), DType::kF32, {T, H});
    p.k = make_view(k.data(), DType::kBF16, {T, 128});
    p.positions = make_view(pos.data(), DType::kI32, {T});
    p.rope_cos = make_view(table(false).data(), DType::kF32, {kMaxPos, 32});
    p.rope_sin = make_view(table(true).data(), DType::kF32, {kMaxPos, 32});
    p.mode = mode;
    p.hadamard = hadamard;
    p.scale_format = fmt;
    w_out.resize(std::max<int64_t>(T * H, 1));
    test::poison_float(w_out);
    p.weights_out = make_view(w_out.data(), DType::kF32, {T, H});
    if (fp8) {
      q_codes.assign(std::max<int64_t>(T * H * 128, 1), 0xFF);
      k_codes.assign(std::max<int64_t>(T * 128, 1), 0xFF);
      k_scale.resize(std::max<int64_t>(T, 1));
      test::poison_float(k_scale);
      p.q_out = make_view(q_codes.data(), DType::kE4M3, {T, H, 128});
      p.k_out = make_view(k_codes.data(), DType::kE4M3, {T, 128});
      p.k_scale_out = make_view(k_scale.data(), DType::kF32, {T});
    } else {
      q_bf.resize(std::max<int64_t>(T * H * 128, 1));
      k_bf.resize(std::max<int64_t>(T * 128, 1));
      test::poison_float(q_bf);
      test::poison_float(k_bf);
      p.q_out = make_view(q_bf.data(), DType::kBF16, {T, H, 128});
      p.k_out = make_view(k_bf.data(), DType::kBF16, {T, 128});
    }
  }

  // A paged cache of num_blocks pages of P tokens; page_bytes ≥ 132·P, row stride ≥ page_bytes.
  void add_cache(test::Rng& rng, int64_t P_, int64_t num_blocks_, int64_t extra_bytes, int64_t extra_stride,
                 double skip_fraction) {
    P = P_;
    num_blocks = num_blocks_;
    page_bytes = 132 * P + extra_bytes;
    page_stride = page_bytes + extra_stride;
    cache.assign(std::max<int64_t>(num_blocks * page_stride, 1), kCanary);
    std::vector<int32_t> all(num_blocks * P);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.engine());
    REQUIRE(static_cast<int64_t>(all.size()) >= T);
    slots.resize(std::max<int64_t>(T, 1));
    for (int64_t t = 0; t < T; ++t) slots[t] = rng.uniform() < skip_fraction ? -1 - static_cast<int32_t>(rng.integer(0, 5)) : all[t];
    p.k_cache = make_view(cache.data(), DType::kU8, {num_blocks, page_bytes}, {page_stride, 1});
    p.slot_mapping = make_view(slots.data(), DType::kI32, {T});
    p.page_block_size = static_cast<int32_t>(P);
  }
};

// The naive pipeline for one 128-vector: RoPE (i, i+32) on dims 0–63 → bf16; Hadamard → bf16.
void naive_transform(const bf16_t* x, int32_t pos, bool rotate, double* y) {
  const auto& cs = table(false);
  const auto& sn = table(true);
  for (int i = 0; i < 128; ++i) y[i] = bf16_to_float(x[i]);
  for (int i = 0; i < 32; ++i) {
    float ya, yb;
    oracle::rope_pair(static_cast<float>(y[i]), static_cast<float>(y[i + 32]), cs[pos * 32 + i], sn[pos * 32 + i], &ya, &yb);
    y[i] = oracle::bf16_round(ya);
    y[i + 32] = oracle::bf16_round(yb);
  }
  if (rotate) {
    double tmp[128];
    oracle::hadamard_fp32(y, tmp);
    std::copy(tmp, tmp + 128, y);
  }
}

float naive_fold(float w, float sigma) {
  return oracle::mul(oracle::mul(oracle::mul(w, 0.125f), sigma), oracle::f32(1.0 / std::sqrt(128.0)));
}

// Checks every output of a call against the naive pipeline.
void check_prep(const Prep& c) {
  const bool rotate = c.fp8 || c.p.hadamard;
  const bool ue8m0 = c.p.scale_format == ScaleFormat::kUe8m0;
  double y[128];
  uint8_t codes[128];
  int64_t bad_q = 0, bad_w = 0, bad_k = 0, bad_cache = 0;
  if (c.p.q.present())
    for (int64_t t = 0; t < c.T; ++t)
      for (int64_t j = 0; j < c.H; ++j) {
        const int64_t base = (t * c.H + j) * 128;
        naive_transform(&c.q[base], c.pos[t], rotate, y);
        float sigma = 1.0f;
        if (c.fp8) {
          sigma = oracle::quantize_block(y, ue8m0, codes);
          for (int i = 0; i < 128; ++i) bad_q += c.q_codes[base + i] != codes[i];
        } else {
          for (int i = 0; i < 128; ++i) bad_q += c.q_bf[base + i].bits != oracle::bf16_bits_of(y[i]);
        }
        bad_w += oracle::bits(c.w_out[t * c.H + j]) != oracle::bits(naive_fold(c.w[t * c.H + j], sigma));
      }
  if (c.p.k.present())
    for (int64_t t = 0; t < c.T; ++t) {
      naive_transform(&c.k[t * 128], c.pos[t], rotate, y);
      if (!c.fp8) {
        for (int i = 0; i < 128; ++i) bad_k += c.k_bf[t * 128 + i].bits != oracle::bf16_bits_of(y[i]);
        continue;
      }
      const float sigma = oracle::quantize_block(y, ue8m0, codes);
      if (c.p.k_out.present()) {
        for (int i = 0; i < 128; ++i) bad_k += c.k_codes[t * 128 + i] != codes[i];
        bad_k += oracle::bits(c.k_scale[t]) != oracle::bits(sigma);
      }
      if (c.p.k_cache.present() && c.slots[t] >= 0) {
        const int64_t page = c.slots[t] / c.P, o = c.slots[t] % c.P;
        const uint8_t* pg = &c.cache[page * c.page_stride];
        for (int i = 0; i < 128; ++i) bad_cache += pg[o * 128 + i] != codes[i];
        bad_cache += std::memcmp(&pg[c.P * 128 + 4 * o], &sigma, 4) != 0;
      }
    }
  CHECK(bad_q == 0);
  CHECK(bad_w == 0);
  CHECK(bad_k == 0);
  CHECK(bad_cache == 0);
  // Cache bytes of unwritten slots, page padding and the gap between pages keep the canary.
  if (c.p.k_cache.present()) {
    std::vector<char> written(c.num_blocks * c.P, 0);
    for (int64_t t = 0; t < c.T; ++t)
      if (c.slots[t] >= 0) written[c.slots[t]] = 1;
    int64_t stray = 0;
    for (int64_t b = 0; b < c.num_blocks; ++b)
      for (int64_t i = 0; i < c.page_stride; ++i) {
        int64_t slot = -1;
        if (i < 128 * c.P) slot = b * c.P + i / 128;
        else if (i < 132 * c.P) slot = b * c.P + (i - 128 * c.P) / 4;
        if ((slot < 0 || !written[slot]) && c.cache[b * c.page_stride + i] != kCanary) ++stray;
      }
    CHECK(stray == 0);
  }
}

}  // namespace

TEST_CASE("indexer_prep FP8 mode: codes, scales, folded weights and cache bytes bit-exact", "[indexer_prep][fp8]") {
  test::Rng rng(501);
  struct Shape { int64_t T, H, P, blocks, extra_bytes, extra_stride; double skip; };
  for (const Shape& sh : {Shape{5, 64, 64, 2, 0, 0, 0.0}, Shape{37, 3, 16, 5, 100, 36, 0.3},
                          Shape{1, 1, 1, 3, 0, 0, 0.0}, Shape{70, 64, 64, 3, 0, 64, 0.1},
                          Shape{0, 64, 64, 1, 0, 0, 0.0}})
    for (ScaleFormat fmt : {ScaleFormat::kUe8m0, ScaleFormat::kRaw}) {
      INFO("T " << sh.T << " H " << sh.H << " P " << sh.P << " page padding " << sh.extra_bytes << "+"
                << sh.extra_stride << " raw " << (fmt == ScaleFormat::kRaw));
      Prep c(rng, sh.T, sh.H, IndexerMode::kFp8, true, fmt);
      c.add_cache(rng, sh.P, sh.blocks, sh.extra_bytes, sh.extra_stride, sh.skip);
      Status s = run(c.p);
      INFO(s.message());
      REQUIRE(s.ok());
      check_prep(c);
      // Determinism: a rerun gives the same bytes.
      Prep again = c;
      again.p.q.data = again.q.data();
      again.p.k.data = again.k.data();
      again.p.weights.data = again.w.data();
      again.p.positions.data = again.pos.data();
      again.p.slot_mapping.data = again.slots.data();
      again.p.q_out.data = again.q_codes.data();
      again.p.k_out.data = again.k_codes.data();
      again.p.k_scale_out.data = again.k_scale.data();
      again.p.weights_out.data = again.w_out.data();
      again.p.k_cache.data = again.cache.data();
      REQUIRE(ref::run(again.p, Accum::kF64).ok());  // Accum does not apply (bit-exact recipe)
      CHECK(again.q_codes == c.q_codes);
      CHECK(again.k_codes == c.k_codes);
      CHECK(again.cache == c.cache);
      CHECK(std::memcmp(again.w_out.data(), c.w_out.data(), c.w_out.size() * 4) == 0);
    }
}

TEST_CASE("indexer_prep: q only, k only, cache only", "[indexer_prep][fp8]") {
  test::Rng rng(502);
  Prep full(rng, 23, 8, IndexerMode::kFp8, true, ScaleFormat::kUe8m0);
  full.add_cache(rng, 8, 4, 0, 0, 0.2);
  REQUIRE(run(full.p).ok());
  SECTION("q only") {
    Prep c = full;
    std::fill(c.q_codes.begin(), c.q_codes.end(), 0xFF);
    test::poison_float(c.w_out);
    c.p.q.data = c.q.data();
    c.p.weights.data = c.w.data();
    c.p.positions.data = c.pos.data();
    c.p.q_out.data = c.q_codes.data();
    c.p.weights_out.data = c.w_out.data();
    c.p.k = c.p.k_out = c.p.k_scale_out = c.p.k_cache = c.p.slot_mapping = TensorView{};
    REQUIRE(run(c.p).ok());
    CHECK(c.q_codes == full.q_codes);
    CHECK(std::memcmp(c.w_out.data(), full.w_out.data(), c.w_out.size() * 4) == 0);
  }
  SECTION("k only, cache only") {
    Prep c = full;
    std::fill(c.cache.begin(), c.cache.end(), kCanary);
    c.p.k.data = c.k.data();
    c.p.positions.data = c.pos.data();
    c.p.slot_mapping.data = c.slots.data();
    c.p.k_cache.data = c.cache.data();
    c.p.q = c.p.weights = c.p.q_out = c.p.weights_out = c.p.k_out = c.p.k_scale_out = TensorView{};
    REQUIRE(run(c.p).ok());
    CHECK(c.cache == full.cache);
    check_prep(c);
  }
}

TEST_CASE("indexer_prep exact mode: bf16 q/k, σ = 1, Hadamard optional", "[indexer_prep]") {
  test::Rng rng(503);
  for (bool hadamard : {false, true}) {
    INFO("hadamard " << hadamard);
    Prep c(rng, 11, 64, IndexerMode::kExact, hadamard, ScaleFormat::kUe8m0);
    c.p.k_scale_out = TensorView{};
    Status s = run(c.p);
    INFO(s.message());
    REQUIRE(s.ok());
    check_prep(c);
    if (!hadamard) {
      // SPEC §11.1 pinned: dims 64–127 pass through and the pairs are (i, i + 32) on dims 0–63.
      int64_t passthrough_bad = 0, differs_interleaved = 0;
      const auto& cs = table(false);
      const auto& sn = table(true);
      for (int64_t t = 0; t < c.T; ++t)
        for (int64_t j = 0; j < c.H; ++j) {
          const int64_t base = (t * c.H + j) * 128;
          for (int i = 64; i < 128; ++i) passthrough_bad += c.q_bf[base + i].bits != c.q[base + i].bits;
          for (int i = 0; i < 32; ++i) {
            float ya, yb;
            oracle::rope_pair(bf16_to_float(c.q[base + 2 * i]), bf16_to_float(c.q[base + 2 * i + 1]),
                              cs[c.pos[t] * 32 + i], sn[c.pos[t] * 32 + i], &ya, &yb);
            differs_interleaved += bf16_to_float(c.q_bf[base + 2 * i]) != oracle::bf16_round(ya);
          }
        }
      CHECK(passthrough_bad == 0);
      CHECK(differs_interleaved > 100);
    }
  }
}

TEST_CASE("indexer_prep: the score from prep outputs approximates the exact score", "[indexer_prep][fp8]") {
  // I[t,s] = Σ_j w[t,j]·ReLU(q[t,j]·k[s]) with q, k the RoPE'd raw inputs and w = w_raw/8/√128
  // (float64), against σ_k[s]·Σ_j w'[t,j]·ReLU(q̂·k̂) from the FP8 outputs (SPEC §4.2 step 7), and
  // against Σ_j w'·ReLU(q'·k') from the exact-mode outputs (with and without the Hadamard).
  test::Rng rng(504);
  const int64_t T = 96, H = 64;
  Prep base(rng, T, H, IndexerMode::kFp8, true, ScaleFormat::kUe8m0);
  REQUIRE(run(base.p).ok());
  // RoPE of the raw bf16 inputs in float64 (no rounding), with the angle's float64 cos/sin.
  auto rope64 = [&](const bf16_t* x, int32_t pos, double* y) {
    for (int i = 0; i < 128; ++i) y[i] = bf16_to_float(x[i]);
    for (int i = 0; i < 32; ++i) {
      const double c = table(false)[pos * 32 + i], sn = table(true)[pos * 32 + i];
      const double a = y[i], b = y[i + 32];
      y[i] = a * c - b * sn;
      y[i + 32] = a * sn + b * c;
    }
  };
  std::vector<double> qr(T * H * 128), kr(T * 128);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t j = 0; j < H; ++j) rope64(&base.q[(t * H + j) * 128], base.pos[t], &qr[(t * H + j) * 128]);
    rope64(&base.k[t * 128], base.pos[t], &kr[t * 128]);
  }
  std::vector<double> exact(T * T);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t s = 0; s < T; ++s) {
      double sum = 0;
      for (int64_t j = 0; j < H; ++j) {
        double dot = 0;
        for (int i = 0; i < 128; ++i) dot += qr[(t * H + j) * 128 + i] * kr[s * 128 + i];
        sum += base.w[t * H + j] / 8 / std::sqrt(128.0) * std::max(dot, 0.0);
      }
      exact[t * T + s] = sum;
    }
  auto score = [&](auto qv, auto kv, auto kscale, const std::vector<float>& w) {
    std::vector<double> out(T * T);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t s = 0; s < T; ++s) {
        double sum = 0;
        for (int64_t j = 0; j < H; ++j) {
          double dot = 0;
          for (int i = 0; i < 128; ++i) dot += qv((t * H + j) * 128 + i) * kv(s * 128 + i);
          sum += w[t * H + j] * std::max(dot, 0.0);
        }
        out[t * T + s] = kscale(s) * sum;
      }
    return out;
  };
  const auto fp8 = score([&](int64_t i) { return oracle::e4m3_value(base.q_codes[i]); },
                         [&](int64_t i) { return oracle::e4m3_value(base.k_codes[i]); },
                         [&](int64_t s) { return static_cast<double>(base.k_scale[s]); }, base.w_out);
  const double cd_fp8 = test::cos_diff(fp8, exact);
  INFO("cos_diff FP8 prep vs exact " << cd_fp8);
  CHECK(cd_fp8 < 1e-3);  // SPEC §9.4: index logits (FP8) vs unquantized
  for (bool hadamard : {false, true}) {
    Prep ex(rng, T, H, IndexerMode::kExact, hadamard, ScaleFormat::kUe8m0);
    ex.q = base.q, ex.k = base.k, ex.w = base.w, ex.pos = base.pos;
    ex.p.q.data = ex.q.data(), ex.p.k.data = ex.k.data(), ex.p.weights.data = ex.w.data();
    ex.p.positions.data = ex.pos.data();
    ex.p.k_scale_out = TensorView{};
    REQUIRE(run(ex.p).ok());
    const auto sc = score([&](int64_t i) { return static_cast<double>(bf16_to_float(ex.q_bf[i])); },
                          [&](int64_t i) { return static_cast<double>(bf16_to_float(ex.k_bf[i])); },
                          [](int64_t) { return 1.0; }, ex.w_out);
    const double cd = test::cos_diff(sc, exact);
    INFO("hadamard " << hadamard << " cos_diff exact prep vs exact " << cd);
    CHECK(cd < 1e-4);  // bf16 rounding of the RoPE (and Hadamard) outputs only
    CHECK(cd < cd_fp8);
  }
}

TEST_CASE("indexer_prep: bad arguments are rejected by name, nothing written", "[indexer_prep][validation]") {
  test::Rng rng(505);
  Prep c(rng, 6, 4, IndexerMode::kFp8, true, ScaleFormat::kUe8m0);
  c.add_cache(rng, 4, 3, 8, 0, 0.0);
  auto untouched = [&] {
    for (auto b : c.q_codes) if (b != 0xFF) return false;
    for (auto b : c.k_codes) if (b != 0xFF) return false;
    for (auto v : c.w_out) if (!std::isnan(v)) return false;
    for (auto v : c.k_scale) if (!std::isnan(v)) return false;
    for (auto b : c.cache) if (b != kCanary) return false;
    return true;
  };
  std::vector<bf16_t> bf_buf(6 * 4 * 128);
  SECTION("mode") { c.p.mode = static_cast<IndexerMode>(5); expect_failure(run(c.p), StatusCode::kInvalidArgument, "mode = 5"); }
  SECTION("FP8 without Hadamard (SPEC §11.2)") { c.p.hadamard = false; expect_failure(run(c.p), StatusCode::kInvalidArgument, "hadamard = false is not allowed in FP8 mode"); }
  SECTION("scale_format") { c.p.scale_format = static_cast<ScaleFormat>(3); expect_failure(run(c.p), StatusCode::kInvalidArgument, "scale_format = 3"); }
  SECTION("q and k both absent") {
    c.p.q = c.p.k = TensorView{};
    expect_failure(run(c.p), StatusCode::kNullPointer, "q and k are both absent");
  }
  SECTION("q dtype") { c.p.q.dtype = DType::kF32; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "q.dtype = f32"); }
  SECTION("q head dim") { c.p.q = make_view(c.q.data(), DType::kBF16, {6, 8, 64}); expect_failure(run(c.p), StatusCode::kUnsupportedShape, "q.shape[2] = 64, expected 128"); }
  SECTION("q tokens") { c.p.q.shape[0] = 5; expect_failure(run(c.p), StatusCode::kInvalidArgument, "q.shape[0] = 5 does not match T = 6"); }
  SECTION("q null") { c.p.q.data = nullptr; expect_failure(run(c.p), StatusCode::kNullPointer, "q is null"); }
  SECTION("weights missing") { c.p.weights = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "weights is required"); }
  SECTION("weights heads") { c.p.weights.shape[1] = 3; expect_failure(run(c.p), StatusCode::kInvalidArgument, "weights.shape[1] = 3 does not match h_idx = 4"); }
  SECTION("weights dtype") { c.p.weights.dtype = DType::kBF16; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "weights.dtype = bf16"); }
  SECTION("weights without q") { c.p.q = c.p.q_out = c.p.weights_out = TensorView{}; expect_failure(run(c.p), StatusCode::kInvalidArgument, "weights is given but q is absent"); }
  SECTION("k dtype") { c.p.k.dtype = DType::kE4M3; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "k.dtype = e4m3"); }
  SECTION("k rank") { c.p.k = make_view(c.k.data(), DType::kBF16, {6, 1, 128}); expect_failure(run(c.p), StatusCode::kInvalidArgument, "k has rank 3"); }
  SECTION("k stride") { c.p.k.stride[1] = 3; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k.stride[1] = 3"); }
  SECTION("k without outputs") { c.p.k_out = c.p.k_scale_out = c.p.k_cache = c.p.slot_mapping = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "neither k_out nor k_cache"); }
  SECTION("positions missing") { c.p.positions = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "positions is required"); }
  SECTION("positions dtype") { c.p.positions.dtype = DType::kF32; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "positions.dtype = f32"); }
  SECTION("positions value") { c.pos[4] = kMaxPos; expect_failure(run(c.p), StatusCode::kInvalidArgument, "positions[4] = 6000 is out of range [0, max_pos = 6000)"); }
  SECTION("positions negative") { c.pos[0] = -7; expect_failure(run(c.p), StatusCode::kInvalidArgument, "positions[0] = -7"); }
  SECTION("rope_cos missing") { c.p.rope_cos = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "rope_cos is required"); }
  SECTION("rope_cos width") { c.p.rope_cos = make_view(table(false).data(), DType::kF32, {kMaxPos / 2, 64}); expect_failure(run(c.p), StatusCode::kUnsupportedShape, "rope_cos.shape[1] = 64, expected 32"); }
  SECTION("rope_sin rows") { c.p.rope_sin.shape[0] = 10; expect_failure(run(c.p), StatusCode::kInvalidArgument, "rope_sin.shape[0] = 10 does not match max_pos"); }
  SECTION("rope_sin dtype") { c.p.rope_sin.dtype = DType::kF64; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "rope_sin.dtype = f64"); }
  SECTION("q_out missing") { c.p.q_out = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "q_out is required"); }
  SECTION("q_out dtype in FP8 mode") { c.p.q_out = make_view(bf_buf.data(), DType::kBF16, {6, 4, 128}); expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "q_out.dtype = bf16"); }
  SECTION("q_out dtype in exact mode") { c.p.mode = IndexerMode::kExact; c.p.k_scale_out = c.p.k_cache = c.p.slot_mapping = c.p.k_out = TensorView{}; c.p.k = TensorView{}; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "q_out.dtype = e4m3"); }
  SECTION("q_out shape") { c.p.q_out.shape[1] = 2; expect_failure(run(c.p), StatusCode::kInvalidArgument, "q_out.shape[1] = 2 does not match h_idx = 4"); }
  SECTION("weights_out missing") { c.p.weights_out = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "weights_out is required"); }
  SECTION("weights_out aliases weights") { c.p.weights_out.data = c.w.data(); expect_failure(run(c.p), StatusCode::kInvalidArgument, "weights_out overlaps weights"); }
  SECTION("k_out dtype") { c.p.k_out.dtype = DType::kU8; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "k_out.dtype = u8"); }
  SECTION("k_out shape") { c.p.k_out.shape[0] = 7; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_out.shape[0] = 7 does not match T = 6"); }
  SECTION("k_out overlaps q_out") { c.p.k_out.data = c.q_codes.data() + 5; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_out overlaps q_out"); }
  SECTION("k_out without k") { c.p.k = c.p.k_cache = c.p.slot_mapping = TensorView{}; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_out is given but k is absent"); }
  SECTION("k_scale_out missing") { c.p.k_scale_out = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "k_scale_out is required"); }
  SECTION("k_scale_out dtype") { c.p.k_scale_out.dtype = DType::kI32; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "k_scale_out.dtype = i32"); }
  SECTION("k_scale_out in exact mode") {
    c.p.mode = IndexerMode::kExact;
    c.p.q_out = make_view(bf_buf.data(), DType::kBF16, {6, 4, 128});
    c.p.k_out = make_view(bf_buf.data(), DType::kBF16, {6, 128});
    c.p.k_cache = c.p.slot_mapping = TensorView{};
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_scale_out is given in exact mode");
  }
  SECTION("k_cache dtype") { c.p.k_cache.dtype = DType::kE4M3; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "k_cache.dtype = e4m3"); }
  SECTION("k_cache rank") { c.p.k_cache = make_view(c.cache.data(), DType::kU8, {3, 4, 140}); expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_cache has rank 3"); }
  SECTION("k_cache page too small") { c.p.k_cache.shape[1] = 132 * 4 - 1; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_cache.shape[1] = 527 bytes per page is less than 132 * page_block_size = 528"); }
  SECTION("k_cache in exact mode") {
    c.p.mode = IndexerMode::kExact;
    c.p.q_out = make_view(bf_buf.data(), DType::kBF16, {6, 4, 128});
    c.p.k_out = c.p.k_scale_out = TensorView{};
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_cache is given in exact mode");
  }
  SECTION("k_cache pages alias") { c.p.k_cache.stride[0] = 100; expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_cache.stride[0] = 100 makes elements of k_cache overlap"); }
  SECTION("k_cache overlaps k") { c.p.k_cache.data = c.k.data(); expect_failure(run(c.p), StatusCode::kInvalidArgument, "k_cache overlaps k"); }
  SECTION("page_block_size") { c.p.page_block_size = 0; expect_failure(run(c.p), StatusCode::kInvalidArgument, "page_block_size = 0 must be positive"); }
  SECTION("slot_mapping missing") { c.p.slot_mapping = TensorView{}; expect_failure(run(c.p), StatusCode::kNullPointer, "slot_mapping is required"); }
  SECTION("slot_mapping dtype") { c.p.slot_mapping.dtype = DType::kF32; expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "slot_mapping.dtype = f32"); }
  SECTION("slot_mapping length") { c.p.slot_mapping.shape[0] = 2; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping.shape[0] = 2 does not match T = 6"); }
  SECTION("slot_mapping value out of range") { c.slots[3] = 12; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping[3] = 12 is out of range [0, num_blocks * page_block_size = 12)"); }
  SECTION("slot_mapping repeated") { c.slots[5] = c.slots[1]; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping[5]"); }
  SECTION("slot_mapping without k_cache") { c.p.k_cache = TensorView{}; expect_failure(run(c.p), StatusCode::kInvalidArgument, "slot_mapping is given but k_cache is absent"); }
  CHECK(untouched());
}
