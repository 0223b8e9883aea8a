// The argument checker and dispatch: every failure names the argument and the rule; nothing is
// written on a failed call.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "dsa/dsa.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {
struct QuantCase {
  int64_t n = 3, d = 256;
  std::vector<bf16_t> x;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  QuantizeParams p;
  QuantCase() {
    test::Rng rng(1);
    x = test::randn_bf16(rng, n * d);
    codes.assign(n * d, 0x5A);
    scales.assign(n * d / 128, 123.0f);
    p.x = make_view(x.data(), DType::kBF16, {n, d});
    p.codes = make_view(codes.data(), DType::kE4M3, {n, d});
    p.scales = make_view(scales.data(), DType::kF32, {n, d / 128});
  }
  bool untouched() const {
    for (auto c : codes) if (c != 0x5A) return false;
    for (auto s : scales) if (s != 123.0f) return false;
    return true;
  }
};

void expect_failure(const Status& s, StatusCode code, const char* needle) {
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().find("quantize: ") == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  CHECK(std::string(last_error()) == s.message());
}
}  // namespace

TEST_CASE("valid quantize call succeeds and writes every output", "[validation]") {
  QuantCase c;
  REQUIRE(supports(c.p).ok());
  REQUIRE(workspace_size(c.p) == 0);
  Status s = run(c.p);
  INFO(s.message());
  REQUIRE(s.ok());
  CHECK_FALSE(c.untouched());
}

TEST_CASE("bad arguments name the argument and write nothing", "[validation]") {
  QuantCase c;
  SECTION("missing input") {
    c.p.x = TensorView{};
    expect_failure(run(c.p), StatusCode::kNullPointer, "x is required");
  }
  SECTION("null data with elements") {
    c.p.codes.data = nullptr;
    expect_failure(run(c.p), StatusCode::kNullPointer, "codes is null");
  }
  SECTION("wrong dtype") {
    c.p.x.dtype = DType::kI32;
    expect_failure(run(c.p), StatusCode::kUnsupportedDtype, "x.dtype = i32");
  }
  SECTION("wrong rank") {
    c.p.scales = make_view(c.scales.data(), DType::kF32, {c.n * 2});
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "scales has rank 1");
  }
  SECTION("shape mismatch between arguments") {
    c.p.codes.shape[0] = 2;
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "codes.shape[0] = 2 does not match n = 3");
  }
  SECTION("innermost stride") {
    c.p.x.stride[1] = 2;
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "x.stride[1] = 2");
  }
  SECTION("negative stride") {
    c.p.x.stride[0] = -256;
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "x.stride[0] = -256 is negative");
  }
  SECTION("unsupported block multiple") {
    c.p.x.shape[1] = 100;
    expect_failure(run(c.p), StatusCode::kUnsupportedShape, "not a multiple of the 128-element");
  }
  SECTION("misaligned pointer") {
    c.p.scales.data = reinterpret_cast<char*>(c.scales.data()) + 1;
    expect_failure(run(c.p), StatusCode::kMisaligned, "scales");
  }
  SECTION("overflowing strides") {
    c.p.x.stride[0] = int64_t{1} << 62;
    expect_failure(run(c.p), StatusCode::kInvalidArgument, "x: shape and strides address");
  }
  CHECK(c.untouched());
}

TEST_CASE("empty problems succeed without touching memory", "[validation]") {
  QuantizeParams p;
  p.x = make_view(nullptr, DType::kBF16, {0, 128});
  p.codes = make_view(nullptr, DType::kE4M3, {0, 128});
  p.scales = make_view(nullptr, DType::kF32, {0, 1});
  Status s = run(p);
  INFO(s.message());
  CHECK(s.ok());
}

TEST_CASE("version and names", "[validation]") {
  CHECK(std::string(version_string()) == "0.1.0");
  CHECK(std::string(dtype_name(DType::kE4M3)) == "e4m3");
  CHECK(dtype_size(DType::kBF16) == 2);
  CHECK(std::string(status_code_name(StatusCode::kNotImplemented)) == "not implemented");
}
