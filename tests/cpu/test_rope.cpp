// OP-ROPE: the YaRN table (SPEC §3.3) and RoPE apply (SPEC §4.2 step 2, §11.1) against the
// independent recipe and the float64 formulas of transform_oracles.hpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/transform_oracles.hpp"
#include "dsa/dsa.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

void expect_failure(const Status& s, StatusCode code, const std::string& op, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind(op + ": ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
}

struct Table {
  int64_t max_pos;
  int half;
  std::vector<float> cos, sin;
  RopeTableParams p;
  Table(int64_t max_pos_, int rope_dim = 64) : max_pos(max_pos_), half(rope_dim / 2) {
    cos.resize(max_pos * half);
    sin.resize(max_pos * half);
    test::poison_float(cos);
    test::poison_float(sin);
    p.rope_dim = rope_dim;
    p.cos = make_view(cos.data(), DType::kF32, {max_pos, half});
    p.sin = make_view(sin.data(), DType::kF32, {max_pos, half});
  }
};

// The SPEC §3.3 recipe in the test: θ = fl32(p·f_i), cosf/sinf.
void check_table_rows(const Table& t, const std::vector<float>& freq, const std::vector<int64_t>& rows) {
  int64_t bad = 0;
  for (int64_t pos : rows)
    for (int i = 0; i < t.half; ++i) {
      const float theta = oracle::mul(static_cast<float>(pos), freq[i]);
      const float c = t.cos[pos * t.half + i], s = t.sin[pos * t.half + i];
      if (oracle::bits(c) != oracle::bits(::cosf(theta)) || oracle::bits(s) != oracle::bits(::sinf(theta))) {
        if (++bad < 5) FAIL_CHECK("table row " << pos << " col " << i << ": " << c << ", " << s);
      }
    }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("rope table: V3.2 YaRN table equals the SPEC recipe bit for bit", "[rope]") {
  const oracle::YarnConfig cfg;  // base 10000, factor 40, original 4096, beta 32 / 1, dim 64
  // The correction range of the SPEC: low = 10, high = 23.
  CHECK(std::max(static_cast<int>(std::floor(oracle::corr_dim(32, cfg))), 0) == 10);
  CHECK(std::min(static_cast<int>(std::ceil(oracle::corr_dim(1, cfg))), 63) == 23);
  const std::vector<float> freq = oracle::yarn_freqs(cfg);
  // Dims i ≤ 10 unchanged, i ≥ 23 divided by 40.
  const oracle::YarnConfig plain{64, 10000.0f, 1.0f};
  const std::vector<float> f0 = oracle::yarn_freqs(plain);
  for (int i = 0; i <= 10; ++i) CHECK(freq[i] == f0[i]);
  for (int i = 23; i < 32; ++i) CHECK(freq[i] == oracle::div(f0[i], 40.0f));
  // The base frequencies are within 1.5 ulp of the float64 value: powf (not correctly rounded,
  // < 1 ulp) and the rounded division (0.5 ulp).
  for (int i = 0; i < 32; ++i) {
    const double exact = 1.0 / std::pow(10000.0, 2.0 * i / 64.0);
    INFO("i = " << i);
    CHECK(std::fabs(f0[i] - exact) <= 1.5 * std::ldexp(1.0, std::ilogb(exact) - 23));
  }

  Table t(163840);  // max_position_embeddings
  Status s = run(t.p);
  INFO(s.message());
  REQUIRE(s.ok());
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < t.max_pos; r += 37) rows.push_back(r);
  for (int64_t r : {1, 2, 4095, 4096, 65535, 65536, 163838, 163839}) rows.push_back(r);
  check_table_rows(t, freq, rows);
  // Every element was written (poisoned with NaN before).
  int64_t nan = 0;
  for (size_t i = 0; i < t.cos.size(); ++i) nan += std::isnan(t.cos[i]) + std::isnan(t.sin[i]);
  CHECK(nan == 0);

  // The 1 − smooth order matters: substituting ramp changes the table (SPEC §3.3, i = 12).
  const std::vector<float> wrong = oracle::yarn_freqs(cfg, /*use_ramp=*/true);
  int differ = 0;
  for (int i = 0; i < 32; ++i) differ += wrong[i] != freq[i];
  CHECK(differ > 0);
  CHECK(wrong[12] != freq[12]);
  int64_t table_differs = 0;
  for (int64_t pos = 1; pos < t.max_pos; pos += 101)
    table_differs += t.cos[pos * 32 + 12] != ::cosf(oracle::mul(static_cast<float>(pos), wrong[12]));
  CHECK(table_differs > 0);

  // Against float64 cos/sin of the exact angle p·f_i: within the fp32 rounding of the angle.
  for (int64_t pos : {0, 1, 3, 1000, 4095, 4096, 77777, 163839})
    for (int i = 0; i < 32; ++i) {
      const double exact = static_cast<double>(pos) * freq[i];
      const float theta = oracle::mul(static_cast<float>(pos), freq[i]);
      const double tol = std::fabs(theta - exact) + std::ldexp(1.0, -23);
      CHECK(std::fabs(t.cos[pos * 32 + i] - std::cos(exact)) <= tol);
      CHECK(std::fabs(t.sin[pos * 32 + i] - std::sin(exact)) <= tol);
    }
  // No mscale: cos² + sin² = 1.
  for (int64_t pos : {5, 4242, 160001})
    for (int i = 0; i < 32; ++i) {
      const double c = t.cos[pos * 32 + i], sn = t.sin[pos * 32 + i];
      CHECK(std::fabs(c * c + sn * sn - 1) < 1e-6);
    }
}

TEST_CASE("rope table: other configurations (no YaRN, computed correction range)", "[rope]") {
  SECTION("yarn_factor 1 disables YaRN") {
    oracle::YarnConfig cfg{64, 10000.0f, 1.0f};
    Table t(300);
    t.p.yarn_factor = 1.0f;
    REQUIRE(run(t.p).ok());
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < t.max_pos; ++r) rows.push_back(r);
    check_table_rows(t, oracle::yarn_freqs(cfg), rows);
  }
  SECTION("dim 32, base 5e5, factor 8, original 2048, beta 16 / 2") {
    oracle::YarnConfig cfg{32, 500000.0f, 8.0f, 16.0f, 2.0f, 2048};
    const int low = std::max(static_cast<int>(std::floor(oracle::corr_dim(16, cfg))), 0);
    const int high = std::min(static_cast<int>(std::ceil(oracle::corr_dim(2, cfg))), 31);
    CHECK(low < high);
    CHECK((low != 10 || high != 23));
    Table t(1000, 32);
    t.p.base = cfg.base;
    t.p.yarn_factor = cfg.factor;
    t.p.beta_fast = cfg.beta_fast;
    t.p.beta_slow = cfg.beta_slow;
    t.p.original_max_position = cfg.original;
    REQUIRE(run(t.p).ok());
    std::vector<int64_t> rows;
    for (int64_t r = 0; r < t.max_pos; ++r) rows.push_back(r);
    check_table_rows(t, oracle::yarn_freqs(cfg), rows);
  }
  SECTION("rows do not depend on max_pos") {
    Table big(5000), small(7);
    REQUIRE(run(big.p).ok());
    REQUIRE(run(small.p).ok());
    CHECK(std::memcmp(big.cos.data(), small.cos.data(), small.cos.size() * 4) == 0);
    CHECK(std::memcmp(big.sin.data(), small.sin.data(), small.sin.size() * 4) == 0);
  }
  SECTION("empty table") {
    RopeTableParams p;
    p.cos = make_view(nullptr, DType::kF32, {0, 32});
    p.sin = make_view(nullptr, DType::kF32, {0, 32});
    CHECK(run(p).ok());
  }
}

// ---- RoPE apply -----------------------------------------------------------------------------------

namespace {

struct RopeCase {
  int64_t n, heads, d, row_pad;
  int offset, rope_dim;
  RopeStyle style;
  bool inverse = false;
};

struct RopeRun {
  std::vector<bf16_t> x, out;
  std::vector<int32_t> pos;
  RopeParams p;
};

const Table& shared_table() {
  static Table t = [] {
    Table tt(8192);
    REQUIRE(run(tt.p).ok());
    return tt;
  }();
  return t;
}

// Builds x (row stride d·heads + row_pad), positions and the call; `out_pad` like x.
RopeRun make_rope(const RopeCase& rc, test::Rng& rng) {
  const Table& t = shared_table();
  RopeRun r;
  const int64_t row = rc.heads * rc.d + rc.row_pad;
  r.x = test::randn_bf16(rng, std::max<int64_t>(rc.n * row, 1), 1.0, 0.05);
  r.out.resize(r.x.size());
  test::poison_float(r.out);
  r.pos.resize(std::max<int64_t>(rc.n, 1));
  for (auto& q : r.pos) q = static_cast<int32_t>(rng.integer(0, t.max_pos - 1));
  if (rc.n > 1) r.pos[0] = 0, r.pos[1] = static_cast<int32_t>(t.max_pos - 1);
  r.p.x = make_view(r.x.data(), DType::kBF16, {rc.n, rc.heads, rc.d}, {row, rc.d, 1});
  r.p.out = make_view(r.out.data(), DType::kBF16, {rc.n, rc.heads, rc.d}, {row, rc.d, 1});
  r.p.positions = make_view(r.pos.data(), DType::kI32, {rc.n});
  const int half = rc.rope_dim / 2;
  // A table with rope_dim / 2 columns: the first columns of the 64-dim table, re-strided.
  r.p.cos = make_view(t.cos.data(), DType::kF32, {t.max_pos, half}, {32, 1});
  r.p.sin = make_view(t.sin.data(), DType::kF32, {t.max_pos, half}, {32, 1});
  r.p.style = rc.style;
  r.p.rope_offset = rc.offset;
  r.p.rope_dim = rc.rope_dim;
  r.p.inverse = rc.inverse;
  return r;
}

// The expected output of one (token, head) by the fp32 recipe, and the float64 direct formula.
// `mag` gets |a·cos| + |b·sin| of each rotated output (0 for pass-through dims): the scale of the
// fp32 rounding error before the bf16 cast, which matters when the two products cancel.
void expected_row(const RopeCase& rc, const bf16_t* x, int32_t pos, bool interleaved_pairs, double* recipe,
                  double* direct, double* mag) {
  const Table& t = shared_table();
  for (int64_t i = 0; i < rc.d; ++i) recipe[i] = direct[i] = bf16_to_float(x[i]), mag[i] = 0;
  const int half = rc.rope_dim / 2;
  for (int i = 0; i < half; ++i) {
    const int ia = rc.offset + (interleaved_pairs ? 2 * i : i);
    const int ib = rc.offset + (interleaved_pairs ? 2 * i + 1 : i + half);
    const float a = bf16_to_float(x[ia]), b = bf16_to_float(x[ib]);
    const float c = t.cos[pos * 32 + i];
    const float s = rc.inverse ? -t.sin[pos * 32 + i] : t.sin[pos * 32 + i];
    float ya, yb;
    oracle::rope_pair(a, b, c, s, &ya, &yb);
    recipe[ia] = oracle::bf16_round(ya);
    recipe[ib] = oracle::bf16_round(yb);
    direct[ia] = static_cast<double>(a) * c - static_cast<double>(b) * s;
    direct[ib] = static_cast<double>(a) * s + static_cast<double>(b) * c;
    mag[ia] = mag[ib] = std::fabs(static_cast<double>(a) * c) + std::fabs(static_cast<double>(b) * s);
  }
}

void check_rope(const RopeCase& rc, const RopeRun& r) {
  const int64_t row = rc.heads * rc.d + rc.row_pad;
  const bool inter = rc.style == RopeStyle::kInterleaved;
  std::vector<double> recipe(rc.d), direct(rc.d), mag(rc.d);
  int64_t bitwise_bad = 0, direct_bad = 0;
  for (int64_t t = 0; t < rc.n; ++t)
    for (int64_t h = 0; h < rc.heads; ++h) {
      const int64_t base = t * row + h * rc.d;
      expected_row(rc, &r.x[base], r.pos[t], inter, recipe.data(), direct.data(), mag.data());
      for (int64_t i = 0; i < rc.d; ++i) {
        const double got = bf16_to_float(r.out[base + i]);
        if (oracle::bits(static_cast<float>(got)) != oracle::bits(static_cast<float>(recipe[i])) &&
            ++bitwise_bad < 5)
          FAIL_CHECK("token " << t << " head " << h << " dim " << i << ": " << got << " vs recipe " << recipe[i]);
        // Direct formula: one bf16 ulp (the final cast) plus the fp32 rounding of the two products
        // and their sum, at most 2^-23·(|a·cos| + |b·sin|) — visible only when the products cancel.
        const double ulp = std::ldexp(1.0, std::ilogb(std::max(std::fabs(direct[i]), 1e-30)) - 7);
        if (std::fabs(got - direct[i]) > ulp + std::ldexp(mag[i], -23) + 1e-30) ++direct_bad;
      }
    }
  CHECK(bitwise_bad == 0);
  CHECK(direct_bad == 0);
  // Padding between rows untouched.
  for (int64_t t = 0; t < rc.n; ++t)
    for (int64_t k = rc.heads * rc.d; k < row; ++k) CHECK(r.out[t * row + k].bits == 0xFFFF);
}

}  // namespace

TEST_CASE("rope apply: both pairings, slices, strides, inverse, in place", "[rope]") {
  const RopeCase cases[] = {
      {7, 64, 128, 0, 0, 64, RopeStyle::kNonInterleaved},      // indexer q
      {33, 1, 128, 0, 0, 64, RopeStyle::kNonInterleaved},      // indexer k
      {5, 3, 576, 8, 512, 64, RopeStyle::kInterleaved},        // MLA q (rope part last), padded rows
      {9, 1, 64, 0, 0, 64, RopeStyle::kInterleaved},           // MLA k_pe alone
      {4, 2, 192, 0, 128, 64, RopeStyle::kInterleaved},        // MHA 192-d q: last 64 dims
      {3, 5, 10, 3, 3, 6, RopeStyle::kNonInterleaved},         // awkward slice
      {2, 2, 10, 0, 1, 8, RopeStyle::kInterleaved},            // awkward slice
      {1, 1, 128, 0, 0, 64, RopeStyle::kNonInterleaved},
      {0, 64, 128, 0, 0, 64, RopeStyle::kNonInterleaved},      // empty
  };
  test::Rng rng(201);
  for (const RopeCase& base : cases)
    for (bool inverse : {false, true}) {
      RopeCase rc = base;
      rc.inverse = inverse;
      INFO("n " << rc.n << " heads " << rc.heads << " d " << rc.d << " offset " << rc.offset << " dim "
                << rc.rope_dim << " interleaved " << (rc.style == RopeStyle::kInterleaved) << " inverse "
                << inverse);
      RopeRun r = make_rope(rc, rng);
      Status s = run(r.p);
      INFO(s.message());
      REQUIRE(s.ok());
      check_rope(rc, r);
      // Bitwise deterministic and equal in place.
      RopeRun again = r;
      again.p.x.data = again.x.data();
      again.p.out.data = again.x.data();
      again.p.positions.data = again.pos.data();
      REQUIRE(run(again.p).ok());
      for (int64_t t = 0; t < rc.n; ++t)
        for (int64_t k = 0; k < rc.heads * rc.d; ++k) {
          const int64_t idx = t * (rc.heads * rc.d + rc.row_pad) + k;
          if (again.x[idx].bits != r.out[idx].bits) FAIL_CHECK("in-place result differs at " << idx);
        }
    }
}

TEST_CASE("rope apply: inverse(apply(x)) ≈ x", "[rope]") {
  test::Rng rng(202);
  for (RopeStyle style : {RopeStyle::kNonInterleaved, RopeStyle::kInterleaved}) {
    RopeCase rc{17, 4, 128, 0, 0, 64, style};
    RopeRun r = make_rope(rc, rng);
    REQUIRE(run(r.p).ok());
    std::vector<bf16_t> back(r.out.size());
    RopeParams inv = r.p;
    inv.x.data = r.out.data();
    inv.out.data = back.data();
    inv.inverse = true;
    REQUIRE(run(inv).ok());
    double worst = 0;
    for (int64_t t = 0; t < rc.n; ++t)
      for (int64_t h = 0; h < rc.heads; ++h)
        for (int i = 0; i < 32; ++i) {
          const int64_t base = (t * rc.heads + h) * 128;
          const int ia = style == RopeStyle::kInterleaved ? 2 * i : i;
          const int ib = style == RopeStyle::kInterleaved ? 2 * i + 1 : i + 32;
          const double a = bf16_to_float(r.x[base + ia]), b = bf16_to_float(r.x[base + ib]);
          const double bound = 3 * std::ldexp(std::fabs(a) + std::fabs(b), -8);
          for (int k : {ia, ib}) {
            const double err = std::fabs(bf16_to_float(back[base + k]) - bf16_to_float(r.x[base + k]));
            worst = std::max(worst, err / bound);
            if (err > bound) FAIL_CHECK("round trip error " << err << " > " << bound);
          }
        }
    INFO("worst error / bound = " << worst);
    CHECK(worst <= 1.0);
  }
}

TEST_CASE("rope apply: pairings and slice positions are pinned (SPEC §11.1)", "[rope]") {
  const Table& t = shared_table();
  const int32_t pos = 1234;
  // A unit vector in dim 0 (plus a marker in dim 70) rotates into dim 32 (non-interleaved) or
  // dim 1 (interleaved); dims outside the slice are untouched.
  for (RopeStyle style : {RopeStyle::kNonInterleaved, RopeStyle::kInterleaved}) {
    std::vector<bf16_t> x(128, bf16_t{0}), out(128);
    x[0] = float_to_bf16(1.0f);
    x[70] = float_to_bf16(0.75f);
    test::poison_float(out);
    std::vector<int32_t> positions{pos};
    RopeParams p;
    p.x = make_view(x.data(), DType::kBF16, {1, 1, 128});
    p.out = make_view(out.data(), DType::kBF16, {1, 1, 128});
    p.positions = make_view(positions.data(), DType::kI32, {1});
    p.cos = make_view(t.cos.data(), DType::kF32, {t.max_pos, 32});
    p.sin = make_view(t.sin.data(), DType::kF32, {t.max_pos, 32});
    p.style = style;
    REQUIRE(run(p).ok());
    const int partner = style == RopeStyle::kInterleaved ? 1 : 32;
    CHECK(bf16_to_float(out[0]) == round_bf16(t.cos[pos * 32]));
    CHECK(bf16_to_float(out[partner]) == round_bf16(t.sin[pos * 32]));
    for (int i = 1; i < 128; ++i)
      if (i != partner && i != 70) CHECK(bf16_to_float(out[i]) == 0.0f);
    CHECK(bf16_to_float(out[70]) == 0.75f);
  }
  // Random data: the indexer configuration (non-interleaved, dims 0–63) differs from the
  // interleaved pairing and from rotating dims 64–127, so a swapped layout cannot pass.
  test::Rng rng(203);
  RopeCase rc{6, 8, 128, 0, 0, 64, RopeStyle::kNonInterleaved};
  RopeRun r = make_rope(rc, rng);
  REQUIRE(run(r.p).ok());
  check_rope(rc, r);
  std::vector<double> recipe(128), direct(128), wrong(128), mag(128);
  int64_t differs_interleaved = 0, differs_slice = 0, rest_changed = 0;
  for (int64_t tkn = 0; tkn < rc.n; ++tkn)
    for (int64_t h = 0; h < rc.heads; ++h) {
      const int64_t base = (tkn * rc.heads + h) * 128;
      expected_row(rc, &r.x[base], r.pos[tkn], /*interleaved=*/true, wrong.data(), direct.data(), mag.data());
      for (int i = 0; i < 64; ++i) differs_interleaved += bf16_to_float(r.out[base + i]) != wrong[i];
      RopeCase last = rc;
      last.offset = 64;
      expected_row(last, &r.x[base], r.pos[tkn], false, wrong.data(), direct.data(), mag.data());
      for (int i = 64; i < 128; ++i) {
        differs_slice += bf16_to_float(r.out[base + i]) != wrong[i];
        rest_changed += r.out[base + i].bits != r.x[base + i].bits;
      }
    }
  CHECK(differs_interleaved > 1000);
  CHECK(differs_slice > 1000);
  CHECK(rest_changed == 0);
}

// ---- bad input --------------------------------------------------------------------------------------

TEST_CASE("rope table: bad arguments are rejected by name, nothing written", "[rope][validation]") {
  Table t(16);
  auto untouched = [&] {
    for (float v : t.cos) if (!std::isnan(v)) return false;
    for (float v : t.sin) if (!std::isnan(v)) return false;
    return true;
  };
  SECTION("cos missing") { t.p.cos = TensorView{}; expect_failure(run(t.p), StatusCode::kNullPointer, "rope_table", "cos is required"); }
  SECTION("sin null") { t.p.sin.data = nullptr; expect_failure(run(t.p), StatusCode::kNullPointer, "rope_table", "sin is null"); }
  SECTION("cos dtype") { t.p.cos.dtype = DType::kBF16; expect_failure(run(t.p), StatusCode::kUnsupportedDtype, "rope_table", "cos.dtype = bf16"); }
  SECTION("sin rank") { t.p.sin = make_view(t.sin.data(), DType::kF32, {16 * 32}); expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "sin has rank 1"); }
  SECTION("sin rows") { t.p.sin.shape[0] = 15; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "sin.shape[0] = 15"); }
  SECTION("cos columns vs rope_dim") { t.p.rope_dim = 32; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "cos.shape[1] = 32, expected rope_dim / 2 = 16"); }
  SECTION("cos stride") { t.p.cos.stride[1] = 2; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "cos.stride[1] = 2"); }
  SECTION("rope_dim odd") { t.p.rope_dim = 63; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "rope_dim = 63"); }
  SECTION("rope_dim zero") { t.p.rope_dim = 0; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "rope_dim = 0"); }
  SECTION("base") { t.p.base = 1.0f; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "base = 1"); }
  SECTION("base NaN") { t.p.base = NAN; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "base = nan"); }
  SECTION("yarn_factor") { t.p.yarn_factor = 0.5f; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "yarn_factor = 0.5"); }
  SECTION("original_max_position") { t.p.original_max_position = 0; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "original_max_position = 0"); }
  SECTION("beta_slow") { t.p.beta_slow = -1.0f; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "beta_slow = -1"); }
  SECTION("beta_fast") { t.p.beta_fast = 0.5f; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "beta_fast = 0.5"); }
  SECTION("cos rows alias") { t.p.cos.stride[0] = 0; expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "cos.stride[0] = 0 makes elements of cos overlap"); }
  SECTION("sin aliases cos") { t.p.sin.data = t.cos.data(); expect_failure(run(t.p), StatusCode::kInvalidArgument, "rope_table", "sin overlaps cos"); }
  CHECK(untouched());
}

TEST_CASE("rope apply: bad arguments are rejected by name, nothing written", "[rope][validation]") {
  test::Rng rng(204);
  RopeCase rc{4, 2, 128, 0, 0, 64, RopeStyle::kNonInterleaved};
  RopeRun r = make_rope(rc, rng);
  const std::vector<bf16_t> x0 = r.x;
  const char* op = "rope";
  SECTION("x missing") { r.p.x = TensorView{}; expect_failure(run(r.p), StatusCode::kNullPointer, op, "x is required"); }
  SECTION("x dtype") { r.p.x.dtype = DType::kF32; expect_failure(run(r.p), StatusCode::kUnsupportedDtype, op, "x.dtype = f32"); }
  SECTION("x rank") { r.p.x = make_view(r.x.data(), DType::kBF16, {4, 256}); expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "x has rank 2"); }
  SECTION("x stride") { r.p.x.stride[2] = 2; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "x.stride[2] = 2"); }
  SECTION("out missing") { r.p.out = TensorView{}; expect_failure(run(r.p), StatusCode::kNullPointer, op, "out is required"); }
  SECTION("out null") { r.p.out.data = nullptr; expect_failure(run(r.p), StatusCode::kNullPointer, op, "out is null"); }
  SECTION("out dtype") { r.p.out.dtype = DType::kE4M3; expect_failure(run(r.p), StatusCode::kUnsupportedDtype, op, "out.dtype = e4m3"); }
  SECTION("out shape") { r.p.out.shape[1] = 1; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "out.shape[1] = 1 does not match heads = 2"); }
  SECTION("out misaligned") { r.p.out.data = reinterpret_cast<char*>(r.out.data()) + 1; expect_failure(run(r.p), StatusCode::kMisaligned, op, "out"); }
  SECTION("out partially overlaps x") { r.p.out.data = r.x.data() + 1; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "out overlaps x"); }
  SECTION("out overlaps positions") {
    std::vector<bf16_t> big(4 * 2 * 128 + 8);
    r.p.out.data = big.data();
    r.p.positions.data = big.data() + 4;
    expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "out overlaps positions");
  }
  SECTION("out heads alias") { r.p.out.stride[1] = 0; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "out.stride[1] = 0 makes elements of out overlap"); }
  SECTION("positions missing") { r.p.positions = TensorView{}; expect_failure(run(r.p), StatusCode::kNullPointer, op, "positions is required"); }
  SECTION("positions dtype") { r.p.positions.dtype = DType::kF32; expect_failure(run(r.p), StatusCode::kUnsupportedDtype, op, "positions.dtype = f32"); }
  SECTION("positions length") { r.p.positions.shape[0] = 3; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "positions.shape[0] = 3 does not match n = 4"); }
  SECTION("positions value too large") { r.pos[2] = 8192; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "positions[2] = 8192 is out of range [0, max_pos = 8192)"); }
  SECTION("positions value negative") { r.pos[3] = -1; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "positions[3] = -1"); }
  SECTION("cos missing") { r.p.cos = TensorView{}; expect_failure(run(r.p), StatusCode::kNullPointer, op, "cos is required"); }
  SECTION("cos dtype") { r.p.cos.dtype = DType::kBF16; expect_failure(run(r.p), StatusCode::kUnsupportedDtype, op, "cos.dtype = bf16"); }
  SECTION("cos columns") { r.p.rope_dim = 32; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "cos.shape[1] = 32, expected rope_dim / 2 = 16"); }
  SECTION("sin missing") { r.p.sin = TensorView{}; expect_failure(run(r.p), StatusCode::kNullPointer, op, "sin is required"); }
  SECTION("sin rows") { r.p.sin.shape[0] = 100; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "sin.shape[0] = 100 does not match max_pos = 8192"); }
  SECTION("style") { r.p.style = static_cast<RopeStyle>(7); expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "style = 7"); }
  SECTION("rope_dim odd") { r.p.rope_dim = 63; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "rope_dim = 63"); }
  SECTION("rope_offset negative") { r.p.rope_offset = -2; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "rope_offset = -2 is negative"); }
  SECTION("slice past the head") { r.p.rope_offset = 65; expect_failure(run(r.p), StatusCode::kInvalidArgument, op, "rope_offset + rope_dim = 65 + 64 exceeds"); }
  CHECK(std::memcmp(r.x.data(), x0.data(), x0.size() * 2) == 0);
  for (auto v : r.out) CHECK(v.bits == 0xFFFF);
}

TEST_CASE("rope apply: products are rounded before the sum (no FMA), on cancelling inputs", "[rope]") {
  // With random data a fused multiply-add almost never changes the bf16 result. Here each pair is
  // built so that a·c ≈ b·s (catastrophic cancellation), where rounding a·c first matters; the
  // table is the caller's (SPEC §3.3 allows custom tables), one row per token.
  test::Rng rng(205);
  const int64_t n = 64;
  std::vector<float> cos(n * 32), sin(n * 32);
  std::vector<bf16_t> x(n * 64), out(n * 64);
  std::vector<int32_t> pos(n);
  for (int64_t t = 0; t < n; ++t) {
    pos[t] = static_cast<int32_t>(t);
    for (int i = 0; i < 32; ++i) {
      float a, b, c, s;
      do {
        a = round_bf16(static_cast<float>(rng.uniform(0.5, 2.0)));
        b = round_bf16(static_cast<float>(rng.uniform(0.5, 2.0)));
        c = static_cast<float>(rng.uniform(0.1, 1.0));
        s = oracle::f32(static_cast<double>(a) * c / b);
      } while (s > 1.0f);
      x[t * 64 + i] = float_to_bf16(a);
      x[t * 64 + i + 32] = float_to_bf16(b);
      cos[t * 32 + i] = c;
      sin[t * 32 + i] = s;
    }
  }
  test::poison_float(out);
  RopeParams p;
  p.x = make_view(x.data(), DType::kBF16, {n, 1, 64});
  p.out = make_view(out.data(), DType::kBF16, {n, 1, 64});
  p.positions = make_view(pos.data(), DType::kI32, {n});
  p.cos = make_view(cos.data(), DType::kF32, {n, 32});
  p.sin = make_view(sin.data(), DType::kF32, {n, 32});
  REQUIRE(run(p).ok());
  int64_t bad = 0, fused_differs = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int i = 0; i < 32; ++i) {
      const float a = bf16_to_float(x[t * 64 + i]), b = bf16_to_float(x[t * 64 + i + 32]);
      const float c = cos[t * 32 + i], s = sin[t * 32 + i];
      float ya, yb;
      oracle::rope_pair(a, b, c, s, &ya, &yb);
      const double fused = oracle::bf16_round(oracle::f32(static_cast<double>(a) * c - oracle::mul(b, s)));
      fused_differs += fused != oracle::bf16_round(ya);
      bad += out[t * 64 + i].bits != oracle::bf16_bits_of(oracle::bf16_round(ya));
      bad += out[t * 64 + i + 32].bits != oracle::bf16_bits_of(oracle::bf16_round(yb));
    }
  CHECK(fused_differs > 100);  // the data can tell the two apart
  CHECK(bad == 0);
}
