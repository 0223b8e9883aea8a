// OP-TOPK (SPEC §5, D7, §12.5) against a naive full-sort oracle written here: bitwise-equal
// indices, scores and k_eff over random, tied, non-finite and very wide rows, every index domain,
// the FlashMLA decode golden page mapping, and bad input for every argument.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "support/child_process.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- the oracle: collect the valid entries, full sort by (score desc, column asc) --------------
struct Selection {
  std::vector<int32_t> idx;    // absolute columns, −1 padded, [rows, k]
  std::vector<float> scores;   // −∞ padded
  std::vector<int32_t> keff;
};

Selection oracle(const std::vector<float>& s, int64_t rows, int64_t cols, int64_t ld, int64_t k,
                 const std::vector<int32_t>& ks, const std::vector<int32_t>& ke) {
  Selection o;
  o.idx.assign(rows * k, -1);
  o.scores.assign(rows * k, -kInf);
  o.keff.assign(rows, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t lo = ks.empty() ? 0 : ks[r], hi = ke.empty() ? cols : ke[r];
    std::vector<std::pair<double, int64_t>> v;
    for (int64_t c = lo; c < hi; ++c) {
      const float x = s[r * ld + c];
      if (std::isnan(x) || x == -kInf) continue;
      v.push_back({static_cast<double>(x), c});
    }
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
      if (a.first != b.first) return a.first > b.first;
      return a.second < b.second;
    });
    const int64_t n = std::min<int64_t>(k, static_cast<int64_t>(v.size()));
    o.keff[r] = static_cast<int32_t>(n);
    for (int64_t i = 0; i < n; ++i) {
      o.idx[r * k + i] = static_cast<int32_t>(v[i].second);
      o.scores[r * k + i] = static_cast<float>(v[i].first);
    }
  }
  return o;
}

// ---- one call's buffers ----------------------------------------------------------------------
struct Call {
  int64_t rows, cols, ld, k;
  std::vector<float> scores;
  std::vector<int32_t> ks, ke;  // empty: absent
  std::vector<int32_t> idx, keff;
  std::vector<float> osc;
  std::vector<int32_t> block_table;
  int64_t batches = 0, max_blocks = 0;
  TopKParams p;

  Call(int64_t rows_, int64_t cols_, int64_t k_, int64_t pad = 0)
      : rows(rows_), cols(cols_), ld(cols_ + pad), k(k_), scores(rows_ * (cols_ + pad), kNaN) {}

  TopKParams& params(bool with_scores = true, bool with_keff = true) {
    p = TopKParams{};
    p.scores = make_view(scores.data(), DType::kF32, {rows, cols}, {ld, 1});
    if (!ks.empty()) p.ks = make_view(ks.data(), DType::kI32, {rows});
    if (!ke.empty()) p.ke = make_view(ke.data(), DType::kI32, {rows});
    idx.assign(rows * k, 0);
    test::poison_index(idx);
    p.indices = make_view(idx.data(), DType::kI32, {rows, k});
    if (with_scores) {
      osc.assign(rows * k, 0);
      test::poison_float(osc);
      p.out_scores = make_view(osc.data(), DType::kF32, {rows, k});
    }
    if (with_keff) {
      keff.assign(rows, 0);
      test::poison_index(keff);
      p.k_eff = make_view(keff.data(), DType::kI32, {rows});
    }
    if (!block_table.empty()) p.block_table = make_view(block_table.data(), DType::kI32, {batches, max_blocks});
    return p;
  }
  Selection expect() const { return oracle(scores, rows, cols, ld, k, ks, ke); }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// Score distributions: plain normals, ReLU-sum-like rows with exact-zero plateaus, coarse values
// (heavy ties), low-bit near-ties, and a sprinkle of ±∞ / NaN.
enum class Dist { kNormal, kReluSum, kCoarse, kLowBits, kSpecial };

void fill(test::Rng& rng, Call& c, Dist dist) {
  for (int64_t r = 0; r < c.rows; ++r) {
    const float base = static_cast<float>(rng.uniform(-2, 2));
    for (int64_t col = 0; col < c.cols; ++col) {
      float v = 0;
      switch (dist) {
        case Dist::kNormal: v = static_cast<float>(rng.normal()); break;
        case Dist::kReluSum: {
          double acc = 0;  // Σ_j w_j ReLU(dot_j): exact 0.0 when every dot is ≤ 0
          for (int j = 0; j < 4; ++j) acc += (j + 1) * 0.25 * std::max(0.0, rng.normal() - 1.2);
          v = static_cast<float>(acc);
          break;
        }
        case Dist::kCoarse: v = static_cast<float>(std::round(rng.normal() * 2) / 2); break;
        case Dist::kLowBits: {
          v = base;
          for (int64_t u = rng.integer(0, 3); u > 0; --u) v = std::nextafter(v, kInf);
          break;
        }
        case Dist::kSpecial: {
          const int64_t pick = rng.integer(0, 9);
          v = pick == 0 ? kNaN : pick == 1 ? -kInf : pick == 2 ? kInf : static_cast<float>(rng.normal());
          if (pick == 3) v = -0.0f;
          if (pick == 4) v = 0.0f;
          break;
        }
      }
      c.scores[r * c.ld + col] = v;
    }
  }
}

void random_ranges(test::Rng& rng, Call& c) {
  c.ks.resize(c.rows);
  c.ke.resize(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t kind = rng.integer(0, 5);
    int64_t a = rng.integer(0, c.cols), b = rng.integer(0, c.cols);
    if (a > b) std::swap(a, b);
    if (kind == 0) b = a;                                  // empty
    if (kind == 1 && a < c.cols) b = a + 1;                // one key
    if (kind == 2) { a = 0; b = c.cols; }                  // full
    c.ks[r] = static_cast<int32_t>(a);
    c.ke[r] = static_cast<int32_t>(b);
  }
}

void check_against_oracle(Call& c, const Selection& o) {
  CHECK(c.idx == o.idx);
  CHECK(same_bits(c.osc, o.scores));
  CHECK(c.keff == o.keff);
}


const char* dist_name(Dist d) {
  switch (d) {
    case Dist::kNormal: return "normal";
    case Dist::kReluSum: return "relu-sum";
    case Dist::kCoarse: return "coarse";
    case Dist::kLowBits: return "low-bits";
    default: return "special";
  }
}

}  // namespace

TEST_CASE("topk equals the full-sort oracle over shapes, distributions and ranges", "[topk]") {
  test::Rng rng(0x70a1);
  struct Shape { int64_t rows, cols, k, pad; };
  const Shape shapes[] = {{1, 1, 1, 0},    {3, 10, 4, 3},     {5, 100, 16, 0},    {7, 1521, 64, 5},
                          {13, 300, 300, 0}, {4, 50, 80, 1},   {62, 2049, 2048, 0}, {2, 4096, 2048, 7},
                          {213, 77, 5, 0},  {3, 0, 4, 0},      {0, 10, 4, 0},      {4, 9, 0, 0}};
  for (const Shape& sh : shapes) {
    for (Dist dist : {Dist::kNormal, Dist::kReluSum, Dist::kCoarse, Dist::kLowBits, Dist::kSpecial}) {
      for (int ranges = 0; ranges < 2; ++ranges) {
        INFO("rows " << sh.rows << " cols " << sh.cols << " k " << sh.k << " " << dist_name(dist)
                     << (ranges ? " ragged" : " full rows"));
        Call c(sh.rows, sh.cols, sh.k, sh.pad);
        fill(rng, c, dist);
        if (ranges) random_ranges(rng, c);
        Status s = run(c.params());
        INFO(s.message());
        REQUIRE(s.ok());
        check_against_oracle(c, c.expect());
      }
    }
  }
}

TEST_CASE("topk ties: plateaus, all-equal rows, short rows, k > cols", "[topk]") {
  test::Rng rng(0x70a2);
  SECTION("thousands of exact 0.0 after ReLU: positives first, then the lowest zero columns") {
    Call c(2, 6000, 2048);
    for (auto& v : c.scores) v = 0.0f;
    std::vector<int32_t> pos;
    for (int i = 0; i < 300; ++i) {
      const int64_t col = rng.integer(0, 5999);
      c.scores[col] = static_cast<float>(rng.uniform(0.01, 5));
      c.scores[6000 + col] = c.scores[col];
    }
    c.scores[6000 + 17] = -0.0f;  // −0.0 ties with +0.0 (IEEE equal): ordered by column
    REQUIRE(run(c.params()).ok());
    const Selection o = c.expect();
    check_against_oracle(c, o);
    // The tail of row 0 is the zero plateau in ascending column order.
    int64_t zeros = 0, last = -1;
    for (int64_t i = 0; i < 2048; ++i) {
      const int32_t col = c.idx[i];
      if (c.scores[col] == 0.0f) {
        CHECK(col > last);
        last = col;
        ++zeros;
      }
    }
    CHECK(zeros >= 2048 - 300);
  }
  SECTION("all-equal row: the first k columns of the range, in order") {
    Call c(3, 5000, 1000);
    const float v = static_cast<float>(rng.uniform(-3, 3));
    for (auto& x : c.scores) x = v;
    c.ks = {0, 17, 4990};
    c.ke = {5000, 4000, 5000};
    REQUIRE(run(c.params()).ok());
    for (int64_t i = 0; i < 1000; ++i) {
      CHECK(c.idx[i] == i);
      CHECK(c.idx[1000 + i] == 17 + i);
      CHECK(c.idx[2000 + i] == (i < 10 ? 4990 + i : -1));
    }
    CHECK(c.keff == std::vector<int32_t>{1000, 1000, 10});
    check_against_oracle(c, c.expect());
  }
  SECTION("rows shorter than k, k > cols, empty ranges") {
    Call c(4, 37, 64);
    fill(rng, c, Dist::kCoarse);
    c.ks = {0, 5, 36, 20};
    c.ke = {37, 5, 37, 20};
    REQUIRE(run(c.params()).ok());
    const Selection o = c.expect();
    check_against_oracle(c, o);
    CHECK(c.keff == std::vector<int32_t>{37, 0, 1, 0});
    for (int64_t i = 37; i < 64; ++i) CHECK(c.idx[i] == -1);
    for (int64_t i = 0; i < 64; ++i) CHECK(c.idx[64 + i] == -1);
    CHECK(std::isinf(c.osc[64]));
  }
}

TEST_CASE("topk non-finite values: +inf ranks first, -inf and NaN are never selected", "[topk]") {
  Call c(4, 8, 6);
  const float row0[] = {1.0f, kInf, kNaN, -kInf, 2.0f, kInf, -1.0f, kNaN};
  const float row1[] = {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN};
  const float row2[] = {-kInf, -kInf, -kInf, -kInf, -kInf, -kInf, -kInf, 3.0f};
  const float row3[] = {-0.0f, 0.0f, -0.0f, 0.0f, kNaN, -kInf, 0.0f, -0.0f};
  std::copy(row0, row0 + 8, c.scores.begin());
  std::copy(row1, row1 + 8, c.scores.begin() + 8);
  std::copy(row2, row2 + 8, c.scores.begin() + 16);
  std::copy(row3, row3 + 8, c.scores.begin() + 24);
  REQUIRE(run(c.params()).ok());
  CHECK(std::vector<int32_t>(c.idx.begin(), c.idx.begin() + 6) == std::vector<int32_t>{1, 5, 4, 0, 6, -1});
  CHECK(std::vector<int32_t>(c.idx.begin() + 6, c.idx.begin() + 12) == std::vector<int32_t>(6, -1));
  CHECK(std::vector<int32_t>(c.idx.begin() + 12, c.idx.begin() + 18) ==
        std::vector<int32_t>{7, -1, -1, -1, -1, -1});
  CHECK(std::vector<int32_t>(c.idx.begin() + 18, c.idx.begin() + 24) == std::vector<int32_t>{0, 1, 2, 3, 6, 7});
  CHECK(c.keff == std::vector<int32_t>{5, 0, 1, 6});
  CHECK(c.osc[0] == kInf);
  CHECK(c.osc[1] == kInf);
  CHECK(c.osc[5] == -kInf);
  check_against_oracle(c, c.expect());
}

TEST_CASE("topk on a 256K-wide row with a ReLU plateau and low-bit near-ties", "[topk]") {
  test::Rng rng(0x70a3);
  const int64_t cols = 262144 + 37;
  Call c(2, cols, 2048);
  fill(rng, c, Dist::kReluSum);
  // Row 1: a narrow band of values 0..7 ulps apart straddling the k-th place.
  const float base = 1.0f;
  for (int64_t col = 0; col < cols; ++col) {
    float v = base;
    for (int64_t u = rng.integer(0, 7); u > 0; --u) v = std::nextafter(v, kInf);
    c.scores[cols + col] = v;
  }
  c.ks = {0, 1000};
  c.ke = {static_cast<int32_t>(cols), static_cast<int32_t>(cols - 5)};
  REQUIRE(run(c.params()).ok());
  check_against_oracle(c, c.expect());
  CHECK(c.keff == std::vector<int32_t>{2048, 2048});
}

TEST_CASE("topk unsorted: the same set, deterministic, run-to-run bitwise", "[topk]") {
  test::Rng rng(0x70a4);
  Call c(9, 3000, 512);
  fill(rng, c, Dist::kReluSum);
  random_ranges(rng, c);
  REQUIRE(run(c.params()).ok());
  const auto sorted_idx = c.idx;
  const auto sorted_sc = c.osc;
  const auto sorted_keff = c.keff;
  // Sorted runs are bitwise reproducible.
  REQUIRE(run(c.params()).ok());
  CHECK(c.idx == sorted_idx);
  CHECK(same_bits(c.osc, sorted_sc));

  c.params().sorted = false;
  REQUIRE(run(c.p).ok());
  const auto first_idx = c.idx;
  const auto first_sc = c.osc;
  CHECK(c.keff == sorted_keff);
  for (int64_t r = 0; r < c.rows; ++r) {
    const int64_t n = c.keff[r];
    std::multiset<int32_t> a(c.idx.begin() + r * c.k, c.idx.begin() + r * c.k + n);
    std::multiset<int32_t> b(sorted_idx.begin() + r * c.k, sorted_idx.begin() + r * c.k + n);
    CHECK(a == b);
    CHECK(std::set<int32_t>(a.begin(), a.end()).size() == static_cast<size_t>(n));  // distinct
    for (int64_t i = n; i < c.k; ++i) CHECK(c.idx[r * c.k + i] == -1);
    for (int64_t i = 0; i < n; ++i)  // each selected score travels with its column
      CHECK(c.osc[r * c.k + i] == c.scores[r * c.ld + c.idx[r * c.k + i]]);
  }
  c.params().sorted = false;
  REQUIRE(run(c.p).ok());
  CHECK(c.idx == first_idx);
  CHECK(same_bits(c.osc, first_sc));
}

TEST_CASE("topk index domains: relative and paged slot", "[topk]") {
  test::Rng rng(0x70a5);
  const int64_t rows = 6, cols = 700, k = 100, page = 16, rpb = 2, batches = 3, max_blocks = 50;
  Call c(rows, cols, k);
  fill(rng, c, Dist::kReluSum);
  random_ranges(rng, c);
  c.ks[0] = 0;
  c.ke[0] = 700;  // uses the last page of its row
  const Selection o = c.expect();

  SECTION("absolute (default) and relative") {
    REQUIRE(run(c.params()).ok());
    CHECK(c.idx == o.idx);
    c.params().domain = IndexDomain::kRelative;
    REQUIRE(run(c.p).ok());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < k; ++i) {
        const int32_t a = o.idx[r * k + i];
        CHECK(c.idx[r * k + i] == (a < 0 ? -1 : a - c.ks[r]));
      }
    CHECK(same_bits(c.osc, o.scores));
    CHECK(c.keff == o.keff);
  }
  SECTION("paged slot: block_table[r / rows_per_batch][c_rel / P] * P + c_rel % P") {
    c.batches = batches;
    c.max_blocks = max_blocks;
    c.block_table.resize(batches * max_blocks);
    for (auto& v : c.block_table) v = static_cast<int32_t>(rng.integer(0, 999));
    c.params().domain = IndexDomain::kPagedSlot;
    c.p.rows_per_batch = rpb;
    c.p.page_block_size = page;
    Status s = run(c.p);
    INFO(s.message());
    REQUIRE(s.ok());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < k; ++i) {
        const int32_t a = o.idx[r * k + i];
        int64_t want = -1;
        if (a >= 0) {
          const int64_t rel = a - c.ks[r];
          want = int64_t{c.block_table[(r / rpb) * max_blocks + rel / page]} * page + rel % page;
        }
        CHECK(c.idx[r * k + i] == want);
      }
    CHECK(same_bits(c.osc, o.scores));
  }
}

TEST_CASE("topk reproduces FlashMLA's abs_indices -> physical slot mapping (decode golden)", "[topk][golden]") {
  auto gc = test::load_golden("flashmla_sparse_decode_fp8");
  if (!gc) return;
  const auto abs_idx = gc->tensor("abs_indices").as<int32_t>();
  const auto phys = gc->tensor("indices").as<int32_t>();
  auto bt = gc->tensor("block_table").as<int32_t>();
  const auto& bt_shape = gc->tensor("block_table").shape;
  REQUIRE(gc->tensor("abs_indices").shape == std::vector<int64_t>{3, 2, 512});
  const int64_t rows = 6, k = 512, page = 64, cols = bt_shape[1] * page;

  // Scores rank the golden logical positions in list order; everything else is −∞.
  Call c(rows, cols, k);
  for (auto& v : c.scores) v = -kInf;
  std::vector<int32_t> want(rows * k, -1);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t n = 0;
    for (int64_t i = 0; i < k; ++i) {
      const int32_t a = abs_idx[r * k + i];
      CHECK((a < 0) == (phys[r * k + i] < 0));
      if (a < 0) continue;
      c.scores[r * cols + a] = static_cast<float>(1000 - i);
      want[r * k + n++] = phys[r * k + i];
    }
  }
  c.batches = bt_shape[0];
  c.max_blocks = bt_shape[1];
  c.block_table = bt;
  c.params().domain = IndexDomain::kPagedSlot;
  c.p.rows_per_batch = 2;
  c.p.page_block_size = static_cast<int32_t>(page);
  Status s = run(c.p);
  INFO(s.message());
  REQUIRE(s.ok());
  CHECK(c.idx == want);
  int64_t valid = 0;
  for (int32_t v : want) valid += v >= 0;
  CHECK(valid == 512 * 3 + 450 + 300);
}

// ---- bad input ------------------------------------------------------------------------------
namespace {
void expect_failure(Call& c, StatusCode code, const char* needle) {
  Status s = run(c.p);
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("topk: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  std::vector<int32_t> poisoned_i(c.idx.size());
  test::poison_index(poisoned_i);
  CHECK(c.idx == poisoned_i);
  if (!c.osc.empty()) {
    std::vector<float> poisoned_f(c.osc.size());
    test::poison_float(poisoned_f);
    CHECK(same_bits(c.osc, poisoned_f));
  }
  if (!c.keff.empty()) {
    std::vector<int32_t> poisoned_k(c.keff.size());
    test::poison_index(poisoned_k);
    CHECK(c.keff == poisoned_k);
  }
}
}  // namespace

TEST_CASE("topk rejects bad input, naming the argument, and writes nothing", "[topk][validation]") {
  test::Rng rng(0x70a6);
  Call c(4, 40, 8);
  fill(rng, c, Dist::kNormal);
  c.ks = {0, 3, 10, 39};
  c.ke = {40, 20, 10, 40};
  c.batches = 2;
  c.max_blocks = 4;
  c.block_table = {0, 1, 2, 3, 4, 5, 6, 7};
  c.scores[39] = 100.0f;  // row 0 selects column 39 (page 2 at P = 16, page 9 at P = 4) ...
  c.scores[20] = 99.0f;   // ... and column 20 (page 1 at P = 16)
  c.params();
  c.p.block_table = TensorView{};

  SECTION("scores") {
    SECTION("absent") { c.p.scores = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "scores is required"); }
    SECTION("null data") { c.p.scores.data = nullptr; expect_failure(c, StatusCode::kNullPointer, "scores is null"); }
    SECTION("dtype") { c.p.scores.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "scores.dtype = bf16"); }
    SECTION("rank") { c.p.scores.rank = 1; expect_failure(c, StatusCode::kInvalidArgument, "scores has rank 1"); }
    SECTION("stride") { c.p.scores.stride[1] = 2; expect_failure(c, StatusCode::kInvalidArgument, "scores.stride[1] = 2"); }
  }
  SECTION("ks") {
    SECTION("dtype") { c.p.ks.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "ks.dtype = f32"); }
    SECTION("shape") { c.p.ks.shape[0] = 3; expect_failure(c, StatusCode::kInvalidArgument, "ks.shape[0] = 3"); }
    SECTION("null") { c.p.ks.data = nullptr; expect_failure(c, StatusCode::kNullPointer, "ks is null"); }
    SECTION("negative value") { c.ks[2] = -1; expect_failure(c, StatusCode::kInvalidArgument, "ks[2] = -1"); }
    SECTION("ks > ke") { c.ks[1] = 21; expect_failure(c, StatusCode::kInvalidArgument, "ke[1] = 20 is less than ks[1] = 21"); }
  }
  SECTION("ke") {
    SECTION("dtype") { c.p.ke.dtype = DType::kU8; expect_failure(c, StatusCode::kUnsupportedDtype, "ke.dtype = u8"); }
    SECTION("rank") { c.p.ke.rank = 2; c.p.ke.shape[1] = 1; c.p.ke.stride[0] = 1; c.p.ke.stride[1] = 1; expect_failure(c, StatusCode::kInvalidArgument, "ke has rank 2"); }
    SECTION("past cols") { c.ke[3] = 41; expect_failure(c, StatusCode::kInvalidArgument, "ke[3] = 41 exceeds cols = 40"); }
  }
  SECTION("indices") {
    SECTION("absent") { c.p.indices = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "indices is required"); }
    SECTION("dtype") { c.p.indices.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "indices.dtype = f32"); }
    SECTION("rows") { c.p.indices.shape[0] = 3; expect_failure(c, StatusCode::kInvalidArgument, "indices.shape[0] = 3 does not match rows = 4"); }
    SECTION("stride") { c.p.indices.stride[1] = 3; expect_failure(c, StatusCode::kInvalidArgument, "indices.stride[1] = 3"); }
  }
  SECTION("out_scores") {
    SECTION("dtype") { c.p.out_scores.dtype = DType::kI32; expect_failure(c, StatusCode::kUnsupportedDtype, "out_scores.dtype = i32"); }
    SECTION("k mismatch") { c.p.out_scores.shape[1] = 7; expect_failure(c, StatusCode::kInvalidArgument, "out_scores.shape[1] = 7 does not match k = 8"); }
  }
  SECTION("k_eff") {
    SECTION("shape") { c.p.k_eff.shape[0] = 5; expect_failure(c, StatusCode::kInvalidArgument, "k_eff.shape[0] = 5 does not match rows = 4"); }
    SECTION("dtype") { c.p.k_eff.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "k_eff.dtype = f32"); }
  }
  SECTION("domain") {
    c.p.domain = static_cast<IndexDomain>(7);
    expect_failure(c, StatusCode::kInvalidArgument, "domain = 7");
  }
  SECTION("paged slot arguments") {
    c.p.domain = IndexDomain::kPagedSlot;
    c.p.page_block_size = 16;
    c.p.rows_per_batch = 2;
    c.p.block_table = make_view(c.block_table.data(), DType::kI32, {2, 4});
    SECTION("block_table absent") { c.p.block_table = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "block_table is required"); }
    SECTION("block_table dtype") { c.p.block_table.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "block_table.dtype = f32"); }
    SECTION("block_table too few batches") { c.p.rows_per_batch = 1; expect_failure(c, StatusCode::kInvalidArgument, "block_table.shape[0] = 2"); }
    SECTION("rows_per_batch") { c.p.rows_per_batch = 0; expect_failure(c, StatusCode::kInvalidArgument, "rows_per_batch = 0"); }
    SECTION("page_block_size") { c.p.page_block_size = 0; expect_failure(c, StatusCode::kInvalidArgument, "page_block_size = 0"); }
    SECTION("negative page id") { c.block_table[1] = -1; expect_failure(c, StatusCode::kInvalidArgument, "block_table[0][1] = -1"); }
    SECTION("page past max_blocks") { c.p.page_block_size = 4; expect_failure(c, StatusCode::kInvalidArgument, "block_table.shape[1] = 4"); }
    SECTION("valid call passes") {
      Status s = run(c.p);
      INFO(s.message());
      CHECK(s.ok());
    }
  }
}

// Run by hand with DSA_NUM_THREADS=1 and =2 and the same --rng-seed: the hashes must agree
// (DSA_NUM_THREADS is read once per process, so one run cannot compare both).
TEST_CASE("topk output hash for thread-count comparison", "[topk][.threads]") {
  test::Rng rng(0x70a7);
  Call c(257, 3001, 300);
  fill(rng, c, Dist::kReluSum);
  random_ranges(rng, c);
  REQUIRE(run(c.params()).ok());
  std::printf("topk hash %016llx %016llx\n", (unsigned long long)test::fnv1a(c.idx.data(), c.idx.size() * 4),
              (unsigned long long)test::fnv1a(c.osc.data(), c.osc.size() * 4));
}

TEST_CASE("topk results are bitwise independent of the thread count", "[topk]") {
  const std::vector<std::string> one = test::run_self_with_threads("[.threads]", 1, "hash").lines,
                                 three = test::run_self_with_threads("[.threads]", 3, "hash").lines;
  REQUIRE(!one.empty());
  CHECK(one == three);
}
