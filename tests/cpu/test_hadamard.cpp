// OP-HAD (SPEC §4.5): the Sylvester matrix, the reference against a float64 matrix product and
// bit for bit against an independent fp32 butterfly (transform_oracles.hpp).
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

void expect_failure(const Status& s, StatusCode code, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("hadamard: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
}

struct HadRun {
  int64_t n, stride;
  std::vector<bf16_t> x, out;
  HadamardParams p;
  // wide: each element scaled by 2^U[-20, 20], so fp32 partial sums round and the butterfly order
  // becomes visible in the bits (with a narrow range the fp32 sums of bf16 values are exact).
  HadRun(test::Rng& rng, int64_t n_, int64_t pad, double scale = 1.0, bool wide = false) : n(n_), stride(128 + pad) {
    x = test::randn_bf16(rng, std::max<int64_t>(n * stride, 1), scale, 0.05, 1e30);
    if (wide)
      for (auto& v : x) v = float_to_bf16(std::ldexp(bf16_to_float(v), static_cast<int>(rng.integer(-20, 20))));
    out.resize(x.size());
    test::poison_float(out);
    p.x = make_view(x.data(), DType::kBF16, {n, 128}, {stride, 1});
    p.out = make_view(out.data(), DType::kBF16, {n, 128}, {stride, 1});
  }
};

}  // namespace

TEST_CASE("Sylvester H128: orthonormal and self-inverse in float64", "[hadamard]") {
  // H·Hᵀ = 128·I exactly; (H/√128)·(H/√128) = I within float64 rounding; symmetric.
  double worst = 0;
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 128; ++c) {
      CHECK(oracle::sylvester(r, c) == oracle::sylvester(c, r));
      int64_t dot = 0;
      double scaled = 0;
      for (int k = 0; k < 128; ++k) {
        dot += oracle::sylvester(r, k) * oracle::sylvester(c, k);
        scaled += (oracle::sylvester(r, k) / std::sqrt(128.0)) * (oracle::sylvester(k, c) / std::sqrt(128.0));
      }
      CHECK(dot == (r == c ? 128 : 0));
      worst = std::max(worst, std::fabs(scaled - (r == c ? 1.0 : 0.0)));
    }
  CHECK(worst < 1e-14);
  // Natural order: row 0 all +1, row 1 alternates, H[r][c] = (−1)^popcount(r & c).
  CHECK(oracle::sylvester(1, 1) == -1);
  CHECK(oracle::sylvester(3, 3) == 1);
  CHECK(oracle::sylvester(127, 64) == -1);
}

TEST_CASE("hadamard: reference vs float64 matrix product and the fp32 butterfly", "[hadamard]") {
  test::Rng rng(301);
  struct Shape { int64_t n, pad; double scale; bool wide; };
  for (const Shape& sh : {Shape{1, 0, 1.0, false}, Shape{3, 0, 0.1, false}, Shape{257, 0, 1.0, false},
                          Shape{19, 72, 3.0, false}, Shape{64, 5, 1e-3, false}, Shape{0, 0, 1.0, false},
                          Shape{200, 0, 1.0, true}, Shape{7, 9, 1e-2, true}}) {
    INFO("n " << sh.n << " pad " << sh.pad << " scale " << sh.scale << " wide " << sh.wide);
    HadRun h(rng, sh.n, sh.pad, sh.scale, sh.wide);
    // A few rows with outliers (what the rotation is for).
    if (sh.n > 2) h.x[h.stride + 17] = float_to_bf16(static_cast<float>(50 * sh.scale));
    Status s = run(h.p);
    INFO(s.message());
    REQUIRE(s.ok());
    int64_t bitwise_bad = 0, product_bad = 0;
    double x[128], want[128];
    for (int64_t r = 0; r < sh.n; ++r) {
      double l1 = 0;
      for (int i = 0; i < 128; ++i) l1 += std::fabs(x[i] = bf16_to_float(h.x[r * h.stride + i]));
      oracle::hadamard_fp32(x, want);
      for (int i = 0; i < 128; ++i) {
        const double got = bf16_to_float(h.out[r * h.stride + i]);
        if (oracle::bits(static_cast<float>(got)) != oracle::bits(static_cast<float>(want[i])) && ++bitwise_bad < 5)
          FAIL_CHECK("row " << r << " col " << i << ": " << got << " vs butterfly " << want[i]);
        double y = 0;
        for (int c = 0; c < 128; ++c) y += oracle::sylvester(i, c) * x[c];
        y /= std::sqrt(128.0);
        // fp32 butterfly error (7 stages + the scale) plus the final bf16 rounding (half an ulp).
        const double e32 = 8 * std::ldexp(l1, -24);
        const double tol = std::ldexp(std::fabs(y) + e32, -8) + e32;
        if (std::fabs(got - y) > tol) ++product_bad;
      }
    }
    CHECK(bitwise_bad == 0);
    CHECK(product_bad == 0);
    for (int64_t r = 0; r < sh.n; ++r)
      for (int64_t k = 128; k < h.stride; ++k) CHECK(h.out[r * h.stride + k].bits == 0xFFFF);
  }
}

TEST_CASE("hadamard: natural order, in place, self-inverse, determinism", "[hadamard]") {
  test::Rng rng(302);
  SECTION("unit vectors give the columns of H/√128") {
    std::vector<bf16_t> x(128 * 128, bf16_t{0}), out(128 * 128);
    for (int c = 0; c < 128; ++c) x[c * 128 + c] = float_to_bf16(1.0f);
    HadamardParams p;
    p.x = make_view(x.data(), DType::kBF16, {128, 128});
    p.out = make_view(out.data(), DType::kBF16, {128, 128});
    REQUIRE(run(p).ok());
    const float h = round_bf16(kIndexerInvSqrtDim);
    for (int c = 0; c < 128; ++c)
      for (int r = 0; r < 128; ++r)
        if (bf16_to_float(out[c * 128 + r]) != oracle::sylvester(r, c) * h) FAIL_CHECK("e_" << c << " row " << r);
  }
  SECTION("in place equals out of place; reruns are bitwise equal") {
    HadRun h(rng, 37, 0);
    REQUIRE(run(h.p).ok());
    std::vector<bf16_t> first = h.out;
    REQUIRE(run(h.p).ok());
    CHECK(std::memcmp(first.data(), h.out.data(), first.size() * 2) == 0);
    // Accum does not apply to a bit-exact recipe: the float64 reference gives the same bits.
    REQUIRE(ref::run(h.p, Accum::kF64).ok());
    CHECK(std::memcmp(first.data(), h.out.data(), first.size() * 2) == 0);
    h.p.out = h.p.x;
    REQUIRE(run(h.p).ok());
    CHECK(std::memcmp(first.data(), h.x.data(), first.size() * 2) == 0);
  }
  SECTION("applied twice returns the input within bf16 rounding") {
    HadRun h(rng, 50, 0);
    REQUIRE(run(h.p).ok());
    std::vector<bf16_t> back(h.out.size());
    HadamardParams p2;
    p2.x = make_view(h.out.data(), DType::kBF16, {h.n, 128});
    p2.out = make_view(back.data(), DType::kBF16, {h.n, 128});
    REQUIRE(run(p2).ok());
    for (int64_t r = 0; r < h.n; ++r) {
      double norm = 0;
      for (int i = 0; i < 128; ++i) norm += std::pow(bf16_to_float(h.x[r * 128 + i]), 2);
      norm = std::sqrt(norm);
      for (int i = 0; i < 128; ++i) {
        const double err = std::fabs(bf16_to_float(back[r * 128 + i]) - bf16_to_float(h.x[r * 128 + i]));
        // two bf16 roundings of an orthonormal transform: ≤ 2^-8 relative in the 2-norm, per element
        if (err > std::ldexp(norm, -7)) FAIL_CHECK("row " << r << " col " << i << " error " << err);
      }
    }
  }
}

TEST_CASE("hadamard: bad arguments are rejected by name, nothing written", "[hadamard][validation]") {
  test::Rng rng(303);
  HadRun h(rng, 4, 0);
  const std::vector<bf16_t> x0 = h.x;
  SECTION("x missing") { h.p.x = TensorView{}; expect_failure(run(h.p), StatusCode::kNullPointer, "x is required"); }
  SECTION("x null") { h.p.x.data = nullptr; expect_failure(run(h.p), StatusCode::kNullPointer, "x is null"); }
  SECTION("x dtype") { h.p.x.dtype = DType::kF32; expect_failure(run(h.p), StatusCode::kUnsupportedDtype, "x.dtype = f32"); }
  SECTION("x width") { h.p.x = make_view(h.x.data(), DType::kBF16, {8, 64}); expect_failure(run(h.p), StatusCode::kUnsupportedShape, "x.shape[1] = 64, expected 128"); }
  SECTION("x rank") { h.p.x = make_view(h.x.data(), DType::kBF16, {4, 1, 128}); expect_failure(run(h.p), StatusCode::kInvalidArgument, "x has rank 3"); }
  SECTION("x stride") { h.p.x.stride[1] = 2; expect_failure(run(h.p), StatusCode::kInvalidArgument, "x.stride[1] = 2"); }
  SECTION("x negative stride") { h.p.x.stride[0] = -128; expect_failure(run(h.p), StatusCode::kInvalidArgument, "x.stride[0] = -128 is negative"); }
  SECTION("out missing") { h.p.out = TensorView{}; expect_failure(run(h.p), StatusCode::kNullPointer, "out is required"); }
  SECTION("out dtype") { h.p.out.dtype = DType::kE4M3; expect_failure(run(h.p), StatusCode::kUnsupportedDtype, "out.dtype = e4m3"); }
  SECTION("out rows") { h.p.out.shape[0] = 3; expect_failure(run(h.p), StatusCode::kInvalidArgument, "out.shape[0] = 3 does not match n = 4"); }
  SECTION("out misaligned") { h.p.out.data = reinterpret_cast<char*>(h.out.data()) + 1; expect_failure(run(h.p), StatusCode::kMisaligned, "out"); }
  SECTION("out overflowing strides") { h.p.out.stride[0] = int64_t{1} << 62; expect_failure(run(h.p), StatusCode::kInvalidArgument, "out: shape and strides address"); }
  SECTION("out rows alias") { h.p.out.stride[0] = 64; expect_failure(run(h.p), StatusCode::kInvalidArgument, "out.stride[0] = 64 makes elements of out overlap"); }
  SECTION("out partially overlaps x") { h.p.out.data = h.x.data() + 128; expect_failure(run(h.p), StatusCode::kInvalidArgument, "out overlaps x"); }
  CHECK(std::memcmp(h.x.data(), x0.data(), x0.size() * 2) == 0);
  for (auto v : h.out) CHECK(v.bits == 0xFFFF);
}
