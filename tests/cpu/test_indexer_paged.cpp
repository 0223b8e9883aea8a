// OP-IDXLOGITS decode (SPEC §7.2, §12.4) against a naive float64 oracle that reads the paged
// 132-byte cache bytes itself, against DeepGEMM's fp8_paged_mqa_logits golden output, and on bad
// input. Unreferenced cache slots hold NaN codes and NaN scales, so a stray read shows up.
//
// Error bound (same argument as test_indexer_logits.cpp): products of e4m3 codes are exact in
// fp32, so |ref − exact| ≤ (d + h + 4)·2⁻²⁴·A with A = σ_k·Σ_j |w_j|·Σ_d |q_jd·k_d|.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "support/child_process.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kU32 = 1.0 / 16777216.0;
constexpr double kU64 = 1.0 / 9007199254740992.0;

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

struct Paged {
  int64_t b, next_n, h, d = 128, page, num_blocks, max_blocks, max_ctx, page_bytes, ld;
  bool two_d;
  std::vector<uint8_t> q, cache;
  std::vector<float> w, logits;
  std::vector<int32_t> lens_in, block_table;
  std::vector<int64_t> len;  // per row, as the oracle understands SPEC §12.4
  IndexerPagedLogitsParams p;

  // `lens` holds one length per request (1-D form) or per (request, token) (2-D form).
  Paged(test::Rng& rng, int64_t b_, int64_t next_n_, int64_t h_, int64_t page_, bool two_d_,
        const std::vector<int32_t>& lens, int64_t extra_blocks, int64_t max_ctx_pad, int64_t page_pad,
        int64_t ld_pad)
      : b(b_), next_n(next_n_), h(h_), page(page_), two_d(two_d_), lens_in(lens) {
    len.assign(b * next_n, 0);
    int64_t need_pages = 0, longest = 0;
    std::vector<int64_t> pages_of(b, 0);
    for (int64_t i = 0; i < b; ++i) {
      int64_t lmax = 0;
      for (int64_t j = 0; j < next_n; ++j) {
        const int64_t L = two_d ? lens[i * next_n + j] : std::max<int64_t>(0, lens[i] - next_n + 1 + j);
        len[i * next_n + j] = L;
        lmax = std::max(lmax, L);
      }
      if (!two_d) lmax = std::max<int64_t>(lmax, lens[i]);
      pages_of[i] = (lmax + page - 1) / page;
      need_pages += pages_of[i];
      longest = std::max(longest, lmax);
    }
    max_blocks = 1;
    for (int64_t n : pages_of) max_blocks = std::max(max_blocks, n + 1);
    num_blocks = need_pages + extra_blocks;
    max_ctx = longest + max_ctx_pad;
    page_bytes = (d + 4) * page + page_pad;
    ld = max_ctx + ld_pad;

    // Cache: NaN codes and NaN scales everywhere, then real keys in the referenced slots.
    cache.assign(num_blocks * page_bytes, 0x7F);
    std::vector<int32_t> pool(num_blocks);
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng.engine());
    block_table.assign(b * max_blocks, -7);  // unused entries: garbage that must not be read
    int64_t next_page = 0;
    for (int64_t i = 0; i < b; ++i)
      for (int64_t pg = 0; pg < pages_of[i]; ++pg) block_table[i * max_blocks + pg] = pool[next_page++];
    for (int64_t i = 0; i < b; ++i) {
      int64_t lmax = 0;
      for (int64_t j = 0; j < next_n; ++j) lmax = std::max(lmax, len[i * next_n + j]);
      for (int64_t pos = 0; pos < lmax; ++pos) {
        uint8_t* pg = cache.data() + block_table[i * max_blocks + pos / page] * page_bytes;
        const int64_t off = pos % page;
        float x[128], amax = 0;
        for (auto& v : x) {
          v = round_bf16(static_cast<float>(rng.normal()));
          amax = std::max(amax, std::fabs(v));
        }
        const float sc = fp8_scale_raw(amax);
        for (int64_t k = 0; k < d; ++k) pg[off * d + k] = fp8_quantize_value(x[k], sc);
        std::memcpy(pg + d * page + 4 * off, &sc, 4);
      }
    }
    q.resize(b * next_n * h * d);
    for (auto& c : q) c = float_to_e4m3(static_cast<float>(rng.normal() * 2.0));
    w = test::randn_f32(rng, b * next_n * h);
  }

  IndexerPagedLogitsParams& params() {
    p = IndexerPagedLogitsParams{};
    p.q = make_view(q.data(), DType::kE4M3, {b, next_n, h, d});
    p.k_cache = make_view(cache.data(), DType::kU8, {num_blocks, page_bytes});
    p.weights = make_view(w.data(), DType::kF32, {b * next_n, h});
    if (two_d)
      p.context_lens = make_view(lens_in.data(), DType::kI32, {b, next_n});
    else
      p.context_lens = make_view(lens_in.data(), DType::kI32, {b});
    p.block_table = make_view(block_table.data(), DType::kI32, {b, max_blocks});
    logits.assign(b * next_n * ld, 0);
    test::poison_float(logits);
    p.logits = make_view(logits.data(), DType::kF32, {b * next_n, max_ctx}, {ld, 1});
    p.page_block_size = static_cast<int32_t>(page);
    return p;
  }

  // float64 oracle from the raw page bytes (SPEC §7.2 layout, §4.2 step 7).
  void oracle(int64_t r, int64_t pos, double* val, double* absum) const {
    const int64_t i = r / next_n;
    const uint8_t* pg = cache.data() + int64_t{block_table[i * max_blocks + pos / page]} * page_bytes;
    const int64_t off = pos % page;
    float sc;
    std::memcpy(&sc, pg + d * page + 4 * off, 4);
    double acc = 0, aacc = 0;
    for (int64_t j = 0; j < h; ++j) {
      double dot = 0, adot = 0;
      for (int64_t k = 0; k < d; ++k) {
        const double pr = static_cast<double>(e4m3_to_float(q[(r * h + j) * d + k])) * e4m3_to_float(pg[off * d + k]);
        dot += pr;
        adot += std::fabs(pr);
      }
      acc += w[r * h + j] * std::max(0.0, dot);
      aacc += std::fabs(w[r * h + j]) * adot;
    }
    *val = sc * acc;
    *absum = sc * aacc;
  }
};


void check(const Paged& c, bool f64) {
  const double factor = (c.d + c.h + 4) * (f64 ? kU64 : kU32);
  int64_t bad = 0, bad_mask = 0, valid = 0;
  double worst = 0;
  for (int64_t r = 0; r < c.b * c.next_n; ++r)
    for (int64_t pos = 0; pos < c.ld; ++pos) {
      const float got = c.logits[r * c.ld + pos];
      if (pos >= c.max_ctx) {
        bad_mask += bits(got) != 0xFFFFFFFFu;
      } else if (pos >= c.len[r]) {
        bad_mask += !(got == -kInf);
      } else {
        ++valid;
        double val, absum;
        c.oracle(r, pos, &val, &absum);
        const double bound = factor * absum + (f64 ? kU32 * std::fabs(val) : 0.0) + 1e-30;
        const double err = std::fabs(static_cast<double>(got) - val);
        if (!(err <= bound)) ++bad;
        if (std::isnan(got)) worst = 1e300;
        else worst = std::max(worst, err / bound);
      }
    }
  INFO("valid entries " << valid << ", worst err/bound " << worst);
  CHECK(bad == 0);
  CHECK(bad_mask == 0);
}

}  // namespace

TEST_CASE("paged indexer logits match the float64 oracle", "[indexer][decode]") {
  test::Rng rng(0x9a01);
  struct Shape {
    int64_t b, next_n, h, page;
    bool two_d;
    std::vector<int32_t> lens;
    int64_t extra_blocks, max_ctx_pad, page_pad, ld_pad;
  };
  const std::vector<Shape> shapes = {
      {1, 1, 1, 64, true, {1}, 0, 0, 0, 0},
      {3, 2, 64, 64, true, {99, 100, 639, 640, 64, 65}, 3, 5, 0, 0},
      {2, 1, 8, 32, false, {33, 300}, 1, 0, 12, 3},
      {4, 3, 32, 16, false, {2, 50, 17, 0}, 2, 7, 4, 0},
      {2, 2, 64, 64, true, {0, 1, 1, 0}, 0, 3, 0, 1},
      {3, 2, 16, 1, true, {5, 6, 1, 2, 9, 3}, 2, 0, 0, 0},
      {1, 6, 64, 64, false, {700}, 0, 0, 256, 0},
      {0, 2, 64, 64, true, {}, 1, 4, 0, 0},
  };
  for (const Shape& sh : shapes) {
    INFO("b " << sh.b << " next_n " << sh.next_n << " h " << sh.h << " P " << sh.page
              << (sh.two_d ? " 2-D" : " 1-D") << " lens");
    Paged c(rng, sh.b, sh.next_n, sh.h, sh.page, sh.two_d, sh.lens, sh.extra_blocks, sh.max_ctx_pad,
            sh.page_pad, sh.ld_pad);
    Status s = run(c.params());
    INFO(s.message());
    REQUIRE(s.ok());
    check(c, false);
    const auto first = c.logits;
    REQUIRE(run(c.params()).ok());
    CHECK((first.empty() || std::memcmp(first.data(), c.logits.data(), first.size() * 4) == 0));  // run to run
    REQUIRE(ref::run(c.params(), Accum::kF64).ok());
    check(c, true);
  }
}

TEST_CASE("paged indexer logits reproduce DeepGEMM fp8_paged_mqa_logits (golden)", "[indexer][decode][golden]") {
  auto gc = test::load_golden("deepgemm_paged_mqa_logits");
  if (!gc) return;
  const int64_t B = 4, N = 2, H = 64, D = 128, P = 64, max_ctx = 2048;
  auto q = gc->tensor("q").bytes;
  auto cache = gc->tensor("kv_cache").bytes;
  auto w = gc->tensor("weights").as<float>();
  auto lens = gc->tensor("context_lens").as<int32_t>();
  auto bt = gc->tensor("block_table").as<int32_t>();
  const auto golden = gc->tensor("logits").as<float>();
  const int64_t num_blocks = gc->tensor("kv_cache").shape[0], page_bytes = gc->tensor("kv_cache").shape[1];
  const int64_t max_blocks = gc->tensor("block_table").shape[1];
  REQUIRE(page_bytes == 132 * P);

  std::vector<float> out(B * N * max_ctx);
  test::poison_float(out);
  IndexerPagedLogitsParams p;
  p.q = make_view(q.data(), DType::kE4M3, {B, N, H, D});
  p.k_cache = make_view(cache.data(), DType::kU8, {num_blocks, page_bytes});
  p.weights = make_view(w.data(), DType::kF32, {B * N, H});
  p.context_lens = make_view(lens.data(), DType::kI32, {B, N});
  p.block_table = make_view(bt.data(), DType::kI32, {B, max_blocks});
  p.logits = make_view(out.data(), DType::kF32, {B * N, max_ctx});
  p.page_block_size = static_cast<int32_t>(P);
  Status s = run(p);
  INFO(s.message());
  REQUIRE(s.ok());

  // Only p < context_lens[i][j] is specified in the golden file (README: do not compare the rest).
  std::vector<double> a, r;
  int64_t past_not_neg_inf = 0;
  for (int64_t row = 0; row < B * N; ++row)
    for (int64_t pos = 0; pos < max_ctx; ++pos) {
      const float ours = out[row * max_ctx + pos];
      if (pos < lens[row]) {
        a.push_back(golden[row * max_ctx + pos]);
        r.push_back(ours);
      } else {
        past_not_neg_inf += !(ours == -kInf);
      }
    }
  CHECK(a.size() == 7570);
  int64_t non_finite = 0;
  for (size_t i = 0; i < a.size(); ++i) non_finite += !std::isfinite(a[i]) || !std::isfinite(r[i]);
  CHECK(non_finite == 0);
  CHECK(past_not_neg_inf == 0);
  const double diff = test::cos_diff(a, r);
  INFO("calc_diff " << diff);
  if (std::getenv("DSA_TEST_VERBOSE")) std::printf("paged calc_diff %.3e (limit 5e-6)\n", diff);
  CHECK(diff < 5e-6);
}

// ---- bad input ------------------------------------------------------------------------------
namespace {
void expect_failure(Paged& c, StatusCode code, const char* needle) {
  Status s = run(c.p);
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("indexer_paged_logits: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  bool untouched = true;
  for (float v : c.logits) untouched &= bits(v) == 0xFFFFFFFFu;
  CHECK(untouched);
}
}  // namespace

TEST_CASE("paged indexer logits reject bad input, naming the argument, and write nothing",
          "[indexer][decode][validation]") {
  test::Rng rng(0x9a02);
  // b = 2, next_n = 2, h = 8, P = 16; lengths 20/21 and 40/41 → 2 and 3 pages; max_blocks = 4.
  Paged c(rng, 2, 2, 8, 16, true, {20, 21, 40, 41}, 1, 0, 0, 0);
  REQUIRE(c.max_blocks == 4);
  REQUIRE(c.max_ctx == 41);
  c.params();
  SECTION("valid call passes") { CHECK(run(c.p).ok()); }
  SECTION("q") {
    SECTION("absent") { c.p.q = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "q is required"); }
    SECTION("dtype") { c.p.q.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "q.dtype = bf16"); }
    SECTION("rank") { c.p.q.rank = 3; expect_failure(c, StatusCode::kInvalidArgument, "q has rank 3"); }
    SECTION("stride") { c.p.q.stride[3] = 2; expect_failure(c, StatusCode::kInvalidArgument, "q.stride[3] = 2"); }
  }
  SECTION("k_cache") {
    SECTION("absent") { c.p.k_cache = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "k_cache is required"); }
    SECTION("dtype") { c.p.k_cache.dtype = DType::kE4M3; expect_failure(c, StatusCode::kUnsupportedDtype, "k_cache.dtype = e4m3"); }
    SECTION("page too small") { c.p.k_cache.shape[1] = 132 * 16 - 1; expect_failure(c, StatusCode::kInvalidArgument, "k_cache.shape[1] = 2111"); }
    SECTION("rank") { c.p.k_cache.rank = 1; expect_failure(c, StatusCode::kInvalidArgument, "k_cache has rank 1"); }
  }
  SECTION("weights") {
    SECTION("rows") { c.p.weights.shape[0] = 3; expect_failure(c, StatusCode::kInvalidArgument, "weights.shape[0] = 3 does not match rows = 4"); }
    SECTION("heads") { c.p.weights.shape[1] = 9; expect_failure(c, StatusCode::kInvalidArgument, "weights.shape[1] = 9 does not match h_idx = 8"); }
    SECTION("dtype") { c.p.weights.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "weights.dtype = bf16"); }
  }
  SECTION("context_lens") {
    SECTION("absent") { c.p.context_lens = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "context_lens is required"); }
    SECTION("dtype") { c.p.context_lens.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "context_lens.dtype = f32"); }
    SECTION("shape") { c.p.context_lens.shape[1] = 1; expect_failure(c, StatusCode::kInvalidArgument, "context_lens.shape[1] = 1 does not match next_n = 2"); }
    SECTION("1-D shape") { c.p.context_lens = make_view(c.lens_in.data(), DType::kI32, {3}); expect_failure(c, StatusCode::kInvalidArgument, "context_lens.shape[0] = 3 does not match b = 2"); }
    SECTION("negative") { c.lens_in[1] = -1; expect_failure(c, StatusCode::kInvalidArgument, "context_lens[0][1] = -1"); }
    SECTION("past max_context_len") { c.lens_in[3] = 42; expect_failure(c, StatusCode::kInvalidArgument, "context_lens[1][1] = 42 exceeds max_context_len = 41"); }
    SECTION("past max_blocks * P") {
      Paged e(rng, 1, 1, 8, 16, true, {20}, 0, 30, 0, 0);  // max_blocks 3 → 48 keys; max_ctx 50
      e.params();
      e.lens_in[0] = 49;
      expect_failure(e, StatusCode::kInvalidArgument, "context_lens[0][0] = 49 exceeds max_blocks * page_block_size");
    }
  }
  SECTION("block_table") {
    SECTION("absent") { c.p.block_table = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "block_table is required"); }
    SECTION("dtype") { c.p.block_table.dtype = DType::kU8; expect_failure(c, StatusCode::kUnsupportedDtype, "block_table.dtype = u8"); }
    SECTION("batch") { c.p.block_table.shape[0] = 1; expect_failure(c, StatusCode::kInvalidArgument, "block_table.shape[0] = 1 does not match b = 2"); }
    SECTION("page id out of range") {
      c.block_table[1 * c.max_blocks + 2] = static_cast<int32_t>(c.num_blocks);
      expect_failure(c, StatusCode::kInvalidArgument, "block_table[1][2] = 6 is out of range [0, num_blocks = 6)");
    }
    SECTION("negative page id") { c.block_table[1] = -1; expect_failure(c, StatusCode::kInvalidArgument, "block_table[0][1] = -1"); }
  }
  SECTION("logits") {
    SECTION("absent") { c.p.logits = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "logits is required"); }
    SECTION("rows") { c.p.logits.shape[0] = 5; expect_failure(c, StatusCode::kInvalidArgument, "logits.shape[0] = 5 does not match rows = 4"); }
    SECTION("dtype") { c.p.logits.dtype = DType::kI32; expect_failure(c, StatusCode::kUnsupportedDtype, "logits.dtype = i32"); }
  }
  SECTION("page_block_size") {
    c.p.page_block_size = 0;
    expect_failure(c, StatusCode::kInvalidArgument, "page_block_size = 0");
  }
}

// Run by hand with DSA_NUM_THREADS=1 and =2 and the same --rng-seed: the hashes must agree.
TEST_CASE("paged indexer logits output hash for thread-count comparison", "[indexer][decode][.threads]") {
  test::Rng rng(0x9a03);
  Paged c(rng, 5, 2, 64, 64, true, {99, 100, 1000, 1001, 1, 2, 640, 641, 300, 301}, 2, 3, 0, 1);
  REQUIRE(run(c.params()).ok());
  std::printf("paged hash %016llx\n", (unsigned long long)test::fnv1a(c.logits.data(), c.logits.size() * 4));
}

TEST_CASE("paged indexer logits are bitwise independent of the thread count", "[indexer][decode]") {
  const std::vector<std::string> one = test::run_self_with_threads("[.threads]", 1, "hash").lines,
                                 three = test::run_self_with_threads("[.threads]", 3, "hash").lines;
  REQUIRE(!one.empty());
  CHECK(one == three);
}
