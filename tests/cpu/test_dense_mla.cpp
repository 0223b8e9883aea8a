// Dense MLA forward (MQA mode, SPEC §6.2 over every key of [ks, ke)): the CPU reference against a
// naive float64 oracle on ragged causal batches and arbitrary ranges (empty, long multi-chunk),
// the "sparse = dense under the same mask" property, determinism, and bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cpu/mla_oracle.hpp"
#include "dsa/dsa.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"

using namespace dsa;
using mla_test::as_double;
using mla_test::expect_close;

namespace {

struct Case {
  int64_t s_q, h, d_qk, d_v, s_kv;
  DType in, out_dt;
  std::vector<bf16_t> qb, kvb, outb;
  std::vector<float> qf, kvf, outf, lse, ml;
  std::vector<int32_t> ks, ke;
  DenseMlaFwdParams p;

  Case(int64_t s_q_, int64_t h_, int64_t d_qk_, int64_t d_v_, int64_t s_kv_, DType in_, DType out_, test::Rng& rng,
       bool base2 = false)
      : s_q(s_q_), h(h_), d_qk(d_qk_), d_v(d_v_), s_kv(s_kv_), in(in_), out_dt(out_) {
    if (in == DType::kBF16) {
      qb = test::randn_bf16(rng, s_q * h * d_qk);
      kvb = test::randn_bf16(rng, s_kv * d_qk);
    } else {
      qf = test::randn_f32(rng, s_q * h * d_qk, 0.1);
      kvf = test::randn_f32(rng, s_kv * d_qk, 0.1);
    }
    ks.resize(s_q);
    ke.resize(s_q);
    if (out_dt == DType::kBF16) outb.resize(s_q * h * d_v); else outf.resize(s_q * h * d_v);
    lse.resize(s_q * h);
    ml.resize(s_q * h);
    p.q = make_view(in == DType::kBF16 ? static_cast<const void*>(qb.data()) : qf.data(), in, {s_q, h, d_qk});
    p.kv = make_view(in == DType::kBF16 ? static_cast<const void*>(kvb.data()) : kvf.data(), in, {s_kv, d_qk});
    p.ks = make_view(ks.data(), DType::kI32, {s_q});
    p.ke = make_view(ke.data(), DType::kI32, {s_q});
    p.out = make_view(out_dt == DType::kBF16 ? static_cast<void*>(outb.data()) : outf.data(), out_dt, {s_q, h, d_v});
    p.lse = make_view(lse.data(), DType::kF32, {s_q, h});
    p.max_logits = make_view(ml.data(), DType::kF32, {s_q, h});
    p.sm_scale = kSoftmaxScaleV32;
    p.lse_base = base2 ? LseBase::kBase2 : LseBase::kNatural;
  }
  // A ragged causal batch: packed sequences of the given lengths; queries are all tokens.
  void causal(const std::vector<int64_t>& lens) {
    int64_t start = 0, t = 0;
    for (int64_t L : lens) {
      for (int64_t i = 0; i < L; ++i, ++t) {
        ks[t] = static_cast<int32_t>(start);
        ke[t] = static_cast<int32_t>(t + 1);
      }
      start += L;
    }
    REQUIRE(t == s_q);
  }
  void poison() {
    test::poison_float(outb);
    test::poison_float(outf);
    test::poison_float(lse);
    test::poison_float(ml);
  }
  std::vector<double> out_d() const { return out_dt == DType::kBF16 ? as_double(outb) : as_double(outf); }
  mla_test::Oracle oracle() const {
    const std::vector<double> q = in == DType::kBF16 ? as_double(qb) : as_double(qf);
    const std::vector<double> kv = in == DType::kBF16 ? as_double(kvb) : as_double(kvf);
    return mla_test::attention64(
        s_q, h, d_qk, d_v, q,
        [&](int64_t t) {
          std::vector<const double*> keys;
          for (int64_t s = ks[t]; s < ke[t]; ++s) keys.push_back(&kv[s * d_qk]);
          return keys;
        },
        static_cast<double>(p.sm_scale), nullptr, p.lse_base == LseBase::kBase2);
  }
  void check() {
    const auto o = oracle();
    for (Accum acc : {Accum::kF32, Accum::kF64}) {
      INFO("accum " << (acc == Accum::kF64 ? "f64" : "f32"));
      poison();
      const Status s = acc == Accum::kF32 ? run(p) : ref::run(p, acc);
      INFO(s.message());
      REQUIRE(s.ok());
      expect_close("out", out_d(), o.out, test::kPrefillOut);
      expect_close("lse", as_double(lse), o.lse, test::kPrefillLse);
      expect_close("max_logits", as_double(ml), o.max_logits, test::kPrefillLse);
      const auto out = out_d();
      for (int64_t r = 0; r < s_q * h; ++r) {
        if (!std::isinf(o.lse[r])) continue;
        CHECK(lse[r] == std::numeric_limits<float>::infinity());
        CHECK(ml[r] == -std::numeric_limits<float>::infinity());
        for (int64_t d = 0; d < d_v; ++d) REQUIRE(out[r * d_v + d] == 0.0);
      }
    }
  }
};

}  // namespace

TEST_CASE("dense_mla_fwd matches the float64 oracle on a ragged causal batch", "[dense_mla]") {
  test::Rng rng(0xde01);
  SECTION("V3.2 dims, three sequences, h_q 16") {
    Case k(213, 16, 576, 512, 213, DType::kBF16, DType::kBF16, rng);
    k.causal({1, 62, 150});
    k.check();
  }
  SECTION("h_q 128, short sequences, lse base 2") {
    Case k(6, 128, 576, 512, 6, DType::kBF16, DType::kBF16, rng, true);
    k.causal({2, 4});
    k.check();
  }
  SECTION("V3.2 dims, h_q 1, three sequences") {
    Case k(97, 1, 576, 512, 97, DType::kBF16, DType::kBF16, rng);
    k.causal({1, 40, 56});
    k.check();
  }
  SECTION("V3.2 dims, h_q 64, two sequences") {
    Case k(23, 64, 576, 512, 23, DType::kBF16, DType::kBF16, rng);
    k.causal({17, 6});
    k.check();
  }
  SECTION("f32 inputs and output, small dims") {
    Case k(62, 3, 72, 40, 62, DType::kF32, DType::kF32, rng);
    k.causal({30, 32});
    k.check();
  }
}

TEST_CASE("dense_mla_fwd: arbitrary ranges, empty rows, ranges longer than a key chunk", "[dense_mla]") {
  test::Rng rng(0xde02);
  const int64_t s_kv = 5000;
  Case k(9, 2, 576, 512, s_kv, DType::kBF16, DType::kBF16, rng);
  const int32_t ranges[9][2] = {{0, 5000}, {17, 17}, {0, 1}, {4999, 5000}, {100, 2149}, {0, 0},
                                {1234, 3282}, {300, 4400}, {5000, 5000}};
  for (int t = 0; t < 9; ++t) k.ks[t] = ranges[t][0], k.ke[t] = ranges[t][1];
  k.check();
}

TEST_CASE("sparse = dense under the same mask (whole range in shuffled order)", "[dense_mla][sparse_mla_fwd]") {
  test::Rng rng(0xde03);
  const int64_t h = 16, d_qk = 576, d_v = 512;
  const std::vector<int64_t> lens = {40, 1, 120, 77};
  const int64_t s = 238;
  Case k(s, h, d_qk, d_v, s, DType::kBF16, DType::kBF16, rng);
  k.causal(lens);
  k.poison();
  REQUIRE(run(k.p).ok());
  // Sparse: topk = the longest range; row t lists [ks, ke) shuffled, padded with sentinels,
  // and half the rows use topk_length instead of padding.
  const int64_t topk = 120;
  std::vector<int32_t> idx(s * topk), len(s);
  const auto bad = mla_test::sentinels(s);
  for (int64_t t = 0; t < s; ++t) {
    int32_t* row = &idx[t * topk];
    const int64_t n = k.ke[t] - k.ks[t];
    for (int64_t i = 0; i < n; ++i) row[i] = k.ks[t] + static_cast<int32_t>(i);
    std::shuffle(row, row + n, rng.engine());
    for (int64_t i = n; i < topk; ++i) row[i] = bad[rng.integer(0, 7)];
    if (t % 2) {
      len[t] = static_cast<int32_t>(n);
      for (int64_t i = n; i < topk; ++i) row[i] = static_cast<int32_t>(rng.integer(0, s - 1));  // valid but past length
    } else {
      len[t] = static_cast<int32_t>(topk);
      std::shuffle(row, row + topk, rng.engine());
    }
  }
  std::vector<bf16_t> out(s * h * d_v);
  std::vector<float> lse(s * h), ml(s * h);
  test::poison_float(out);
  test::poison_float(lse);
  test::poison_float(ml);
  SparseMlaFwdParams sp;
  sp.q = k.p.q;
  sp.kv = k.p.kv;
  sp.indices = make_view(idx.data(), DType::kI32, {s, topk});
  sp.topk_length = make_view(len.data(), DType::kI32, {s});
  sp.out = make_view(out.data(), DType::kBF16, {s, h, d_v});
  sp.lse = make_view(lse.data(), DType::kF32, {s, h});
  sp.max_logits = make_view(ml.data(), DType::kF32, {s, h});
  sp.sm_scale = k.p.sm_scale;
  REQUIRE(run(sp).ok());
  expect_close("sparse vs dense out", as_double(out), k.out_d(), test::kPrefillOut);
  expect_close("sparse vs dense lse", as_double(lse), as_double(k.lse), test::kPrefillLse);
  expect_close("sparse vs dense max_logits", as_double(ml), as_double(k.ml), test::kPrefillLse);
}

TEST_CASE("dense_mla_fwd is deterministic and batch invariant", "[dense_mla]") {
  test::Rng rng(0xde04);
  Case k(100, 8, 576, 512, 100, DType::kBF16, DType::kBF16, rng);
  k.causal({60, 40});
  k.poison();
  REQUIRE(run(k.p).ok());
  const auto out1 = k.outb;
  const auto lse1 = k.lse;
  k.poison();
  REQUIRE(run(k.p).ok());
  CHECK(std::memcmp(out1.data(), k.outb.data(), out1.size() * 2) == 0);
  CHECK(std::memcmp(lse1.data(), k.lse.data(), lse1.size() * 4) == 0);
  for (int64_t t : {0, 37, 99}) {
    DenseMlaFwdParams one = k.p;
    std::vector<bf16_t> o(8 * 512);
    std::vector<float> l(8);
    one.q.data = k.qb.data() + t * 8 * 576;
    one.q.shape[0] = 1;
    one.ks.data = k.ks.data() + t;
    one.ks.shape[0] = 1;
    one.ke.data = k.ke.data() + t;
    one.ke.shape[0] = 1;
    one.out = make_view(o.data(), DType::kBF16, {1, 8, 512});
    one.lse = make_view(l.data(), DType::kF32, {1, 8});
    one.max_logits = TensorView{};
    REQUIRE(run(one).ok());
    CHECK(std::memcmp(o.data(), out1.data() + t * 8 * 512, o.size() * 2) == 0);
    CHECK(std::memcmp(l.data(), lse1.data() + t * 8, l.size() * 4) == 0);
  }
}

TEST_CASE("dense_mla_fwd rejects bad input for every argument and writes nothing", "[dense_mla][validation]") {
  test::Rng rng(0xde05);
  Case k(4, 2, 64, 32, 10, DType::kBF16, DType::kBF16, rng);
  k.causal({4});
  k.poison();
  auto& p = k.p;
  const StatusCode kInv = StatusCode::kInvalidArgument, kNull = StatusCode::kNullPointer;
  const StatusCode kDt = StatusCode::kUnsupportedDtype, kShape = StatusCode::kUnsupportedShape;
  std::vector<float> f32buf(4096, 1.0f);
  std::vector<int32_t> bad = {0, 0, 0, 1};
  StatusCode code = StatusCode::kOk;
  std::string needle;
  SECTION("q missing") { p.q = TensorView{}; code = kNull; needle = "q is required"; }
  SECTION("q dtype") { p.q.dtype = DType::kF64; code = kDt; needle = "q.dtype = f64"; }
  SECTION("q inner stride") { p.q.stride[2] = 2; code = kInv; needle = "q.stride[2] = 2"; }
  SECTION("kv missing") { p.kv = TensorView{}; code = kNull; needle = "kv is required"; }
  SECTION("kv d_qk") { p.kv.shape[1] = 32; code = kInv; needle = "kv.shape[1] = 32"; }
  SECTION("kv dtype differs") { p.kv = make_view(f32buf.data(), DType::kF32, {10, 64}); code = kDt; needle = "kv.dtype = f32"; }
  SECTION("ks missing") { p.ks = TensorView{}; code = kNull; needle = "ks is required"; }
  SECTION("ks dtype") { p.ks.dtype = DType::kF32; code = kDt; needle = "ks.dtype = f32"; }
  SECTION("ks shape") { p.ks.shape[0] = 3; code = kInv; needle = "ks.shape[0] = 3"; }
  SECTION("ke missing") { p.ke = TensorView{}; code = kNull; needle = "ke is required"; }
  SECTION("ke shape") { p.ke.shape[0] = 5; code = kInv; needle = "ke.shape[0] = 5"; }
  SECTION("ks value negative") { bad = {0, -1, 0, 0}; p.ks.data = bad.data(); code = kInv; needle = "ks[1] = -1"; }
  SECTION("ks value past s_kv") { bad = {0, 0, 11, 0}; p.ks.data = bad.data(); code = kInv; needle = "ks[2] = 11"; }
  SECTION("ke < ks") { bad = {0, 3, 0, 0}; p.ks.data = bad.data(); code = kInv; needle = "ke[1] = 2"; }
  SECTION("ke past s_kv") { bad = {1, 2, 3, 11}; p.ke.data = bad.data(); code = kInv; needle = "ke[3] = 11"; }
  SECTION("out missing") { p.out = TensorView{}; code = kNull; needle = "out is required"; }
  SECTION("out dtype") { p.out.dtype = DType::kI32; code = kDt; needle = "out.dtype = i32"; }
  SECTION("d_v > d_qk") { p.out = make_view(f32buf.data(), DType::kF32, {4, 2, 65}); code = kShape; needle = "d_v = 65"; }
  SECTION("out h_q") { p.out.shape[1] = 3; code = kInv; needle = "out.shape[1] = 3"; }
  SECTION("lse missing") { p.lse = TensorView{}; code = kNull; needle = "lse is required"; }
  SECTION("lse shape") { p.lse.shape[0] = 2; code = kInv; needle = "lse.shape[0] = 2"; }
  SECTION("max_logits dtype") { p.max_logits.dtype = DType::kBF16; code = kDt; needle = "max_logits.dtype = bf16"; }
  SECTION("sm_scale 0") { p.sm_scale = 0.0f; code = kInv; needle = "sm_scale = 0"; }
  SECTION("sm_scale NaN") { p.sm_scale = std::nanf(""); code = kInv; needle = "sm_scale = nan"; }
  SECTION("lse_base") { p.lse_base = static_cast<LseBase>(2); code = kInv; needle = "lse_base = 2"; }
  const Status s = run(p);
  mla_test::expect_failure(s, code, "dense_mla_fwd", needle);
  CHECK(mla_test::all_bytes(k.outb, 0xFF));
  CHECK(mla_test::all_bytes(k.lse, 0xFF));
  CHECK(mla_test::all_bytes(k.ml, 0xFF));
  mla_test::expect_failure(ref::run(p, Accum::kF64), code, "dense_mla_fwd", needle);
}

// Hash of every output (run by the next test in child processes with different DSA_NUM_THREADS).
TEST_CASE("dense_mla_fwd output hash", "[.dense_mla_hash]") {
  test::Rng rng(0xde06);
  Case k(90, 8, 576, 512, 2600, DType::kBF16, DType::kBF16, rng);
  for (int64_t t = 0; t < 90; ++t) {
    k.ks[t] = static_cast<int32_t>(t < 45 ? 0 : 100 + t);
    k.ke[t] = static_cast<int32_t>(t < 45 ? 2560 - t : 2600);  // > one key chunk
  }
  uint64_t h = dsa::test::kFnvOffset;
  for (Accum acc : {Accum::kF32, Accum::kF64}) {
    k.poison();
    REQUIRE(ref::run(k.p, acc).ok());
    h = dsa::test::fnv1a(k.outb, h);
    h = dsa::test::fnv1a(k.lse, h);
    h = dsa::test::fnv1a(k.ml, h);
  }
  std::printf("MLAHASH %016llx\n", static_cast<unsigned long long>(h));
}

TEST_CASE("dense_mla_fwd results do not depend on the thread count", "[dense_mla]") {
  mla_test::expect_thread_count_invariant("[.dense_mla_hash]");
}
