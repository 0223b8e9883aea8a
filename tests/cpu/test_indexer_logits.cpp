// OP-IDXLOGITS prefill (SPEC §4.2 step 7, §4.3, §4.6, §12.3) against a naive float64 oracle
// written here, against DeepGEMM's fp8_mqa_logits golden output, and on bad input.
//
// Error bound of the fp32 reference vs the fp64 oracle (same FP8 codes and scales): every product
// of two e4m3 codes (4 significant bits each) or two bf16 values (8 bits each) is exact in fp32,
// so the only roundings are the d-term dot sum, the × w, the h-term head sum and the × σ_k. The
// standard summation bound |fl(Σx) − Σx| ≤ γ_{n−1}·Σ|x| (γ_n = n·u/(1 − n·u), u = 2⁻²⁴) composed
// over these steps gives |ref − exact| ≤ (d + h + 4)·u·A with A = σ_k·Σ_j |w_j|·Σ_d |q_jd·k_d|
// (ReLU is 1-Lipschitz, so it does not amplify the dot's error). For f32 inputs the products
// round too, which adds one u per term: still inside (d + h + 4)·u·A. The bound is per element
// and uses no tolerance beyond rounding analysis.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
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
constexpr double kU32 = 1.0 / 16777216.0;  // 2^-24
constexpr double kU64 = 1.0 / 9007199254740992.0;  // 2^-53

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// One prefill call. q/k are stored as e4m3 codes (FP8 mode), bf16 or f32 (exact mode); the
// oracle reads the same values as doubles.
struct Prefill {
  int64_t s_q, s_kv, h, d, ld, dq;  // ld: logits row stride; dq: q's innermost row length (≥ d)
  DType dt;
  std::vector<uint8_t> q8, k8;
  std::vector<bf16_t> qb, kb;
  std::vector<float> qf, kf;
  std::vector<double> qd, kd, sd;  // oracle copies; sd = σ_k (1 in exact mode)
  std::vector<float> ksc, w, logits;
  std::vector<int32_t> ks, ke;
  IndexerLogitsParams p;

  Prefill(test::Rng& rng, int64_t s_q_, int64_t s_kv_, int64_t h_, int64_t d_, DType dt_, int64_t pad = 0,
          int64_t qpad = 0)
      : s_q(s_q_), s_kv(s_kv_), h(h_), d(d_), ld(s_kv_ + pad), dq(d_ + qpad), dt(dt_) {
    const size_t nq = s_q * h * dq, nk = s_kv * d;
    qd.assign(nq, 0);
    kd.assign(nk, 0);
    sd.assign(s_kv, 1.0);
    if (dt == DType::kE4M3) {
      // DeepGEMM's recipe: q = e4m3(randn) without scale (its scale is folded into w); k per
      // token with a raw or ue8m0 scale from its amax (SPEC §4.4).
      q8.resize(nq);
      for (size_t i = 0; i < nq; ++i) {
        q8[i] = float_to_e4m3(static_cast<float>(rng.normal() * 2.0));
        qd[i] = e4m3_to_float(q8[i]);
      }
      k8.resize(nk);
      ksc.resize(s_kv);
      const bool ue8m0 = rng.integer(0, 1) == 1;
      for (int64_t s = 0; s < s_kv; ++s) {
        std::vector<float> x(d);
        float amax = 0;
        for (auto& v : x) {
          v = round_bf16(static_cast<float>(rng.normal()));
          amax = std::max(amax, std::fabs(v));
        }
        const float sc = ue8m0 ? fp8_scale_ue8m0(amax) : fp8_scale_raw(amax);
        ksc[s] = sc;
        sd[s] = sc;
        for (int64_t x_ = 0; x_ < d; ++x_) {
          k8[s * d + x_] = fp8_quantize_value(x[x_], sc);
          kd[s * d + x_] = e4m3_to_float(k8[s * d + x_]);
        }
      }
    } else if (dt == DType::kBF16) {
      qb = test::randn_bf16(rng, nq, 1.0, 0.2);
      kb = test::randn_bf16(rng, nk, 1.0, 0.2);
      qd = test::to_double(qb);
      kd = test::to_double(kb);
    } else {
      qf = test::randn_f32(rng, nq);
      kf = test::randn_f32(rng, nk);
      qd = test::to_double(qf);
      kd = test::to_double(kf);
    }
    w = test::randn_f32(rng, s_q * h);
    ks.assign(s_q, 0);
    ke.assign(s_q, static_cast<int32_t>(s_kv));
  }

  void ragged(test::Rng& rng) {
    for (int64_t t = 0; t < s_q; ++t) {
      int64_t a = rng.integer(0, s_kv), b = rng.integer(0, s_kv);
      if (a > b) std::swap(a, b);
      const int64_t kind = rng.integer(0, 5);
      if (kind == 0) b = a;                      // empty
      if (kind == 1 && a < s_kv) b = a + 1;      // one key
      if (kind == 2) { a = 0; b = s_kv; }        // full
      ks[t] = static_cast<int32_t>(a);
      ke[t] = static_cast<int32_t>(b);
    }
  }
  void causal(int64_t offset) {  // row t sees keys [0, offset + t + 1) ∩ [0, s_kv)
    for (int64_t t = 0; t < s_q; ++t) {
      ks[t] = 0;
      ke[t] = static_cast<int32_t>(std::min(s_kv, std::max<int64_t>(0, offset + t + 1)));
    }
  }

  IndexerLogitsParams& params(bool clean = true) {
    p = IndexerLogitsParams{};
    const void* qp = dt == DType::kE4M3 ? (const void*)q8.data() : dt == DType::kBF16 ? (const void*)qb.data() : qf.data();
    const void* kp = dt == DType::kE4M3 ? (const void*)k8.data() : dt == DType::kBF16 ? (const void*)kb.data() : kf.data();
    p.q = make_view(qp, dt, {s_q, h, d}, {h * dq, dq, 1});
    p.k = make_view(kp, dt, {s_kv, d});
    if (dt == DType::kE4M3) p.k_scale = make_view(ksc.data(), DType::kF32, {s_kv});
    p.weights = make_view(w.data(), DType::kF32, {s_q, h});
    p.ks = make_view(ks.data(), DType::kI32, {s_q});
    p.ke = make_view(ke.data(), DType::kI32, {s_q});
    logits.assign(s_q * ld, 0);
    test::poison_float(logits);
    p.logits = make_view(logits.data(), DType::kF32, {s_q, s_kv}, {ld, 1});
    p.clean_logits = clean;
    return p;
  }

  // The float64 oracle, straight from SPEC §4.2 step 7: value and the error scale A.
  void oracle(int64_t t, int64_t s, double* val, double* absum) const {
    double acc = 0, aacc = 0;
    for (int64_t j = 0; j < h; ++j) {
      double dot = 0, adot = 0;
      for (int64_t x = 0; x < d; ++x) {
        const double pr = qd[(t * h + j) * dq + x] * kd[s * d + x];
        dot += pr;
        adot += std::fabs(pr);
      }
      acc += w[t * h + j] * std::max(0.0, dot);
      aacc += std::fabs(w[t * h + j]) * adot;
    }
    *val = sd[s] * acc;
    *absum = sd[s] * aacc;
  }
};

// Every in-range entry within `rel_bound`·A (+ float rounding of the result when `f64`), the
// out-of-range entries −∞ (clean) or untouched (poison bits), the row padding untouched.
void check(const Prefill& c, bool clean, bool f64) {
  const double factor = f64 ? (c.d + c.h + 4) * kU64 : (c.d + c.h + 4) * kU32;
  int64_t bad = 0, bad_mask = 0, in_range = 0;
  double worst_ratio = 0;
  std::string worst;
  for (int64_t t = 0; t < c.s_q; ++t) {
    for (int64_t s = 0; s < c.ld; ++s) {
      const float got = c.logits[t * c.ld + s];
      if (s >= c.s_kv) {
        bad_mask += bits(got) != 0xFFFFFFFFu;
        continue;
      }
      if (s < c.ks[t] || s >= c.ke[t]) {
        bad_mask += clean ? !(got == -kInf) : bits(got) != 0xFFFFFFFFu;
        continue;
      }
      ++in_range;
      double val, absum;
      c.oracle(t, s, &val, &absum);
      const double bound = factor * absum + (f64 ? kU32 * std::fabs(val) : 0.0) + 1e-30;
      const double err = std::fabs(static_cast<double>(got) - val);
      if (!(err <= bound)) ++bad;
      if (err / bound > worst_ratio || std::isnan(got)) {
        worst_ratio = std::isnan(got) ? 1e300 : err / bound;
        worst = "t " + std::to_string(t) + " s " + std::to_string(s) + " got " + std::to_string(got) +
                " oracle " + std::to_string(val) + " bound " + std::to_string(bound);
      }
    }
  }
  INFO("in-range entries " << in_range << ", worst err/bound " << worst_ratio << " at " << worst);
  CHECK(bad == 0);
  CHECK(bad_mask == 0);
  if (std::getenv("DSA_TEST_VERBOSE")) std::printf("worst err/bound %.3g (%s)\n", worst_ratio, worst.c_str());
}


const char* dtname(DType d) { return d == DType::kE4M3 ? "e4m3" : d == DType::kBF16 ? "bf16" : "f32"; }

}  // namespace

TEST_CASE("indexer logits match the float64 oracle over shapes, modes and ranges", "[indexer]") {
  test::Rng rng(0x1d01);
  struct Shape { int64_t s_q, s_kv, h, d, pad, qpad; };
  const Shape shapes[] = {{1, 1, 1, 128, 0, 0},  {3, 17, 8, 128, 5, 0},  {13, 100, 64, 128, 0, 16},
                          {8, 300, 32, 64, 3, 0}, {37, 513, 64, 128, 0, 0}, {5, 40, 1, 32, 0, 8},
                          {0, 10, 64, 128, 0, 0}, {4, 0, 8, 128, 0, 0},   {21, 257, 16, 128, 1, 0}};
  for (const Shape& sh : shapes) {
    for (DType dt : {DType::kE4M3, DType::kBF16, DType::kF32}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0 full rows, 1 ragged, 2 causal
        const bool clean = rng.integer(0, 1) == 1;
        INFO("s_q " << sh.s_q << " s_kv " << sh.s_kv << " h " << sh.h << " d " << sh.d << " " << dtname(dt)
                    << " ranges " << mode << " clean " << clean);
        Prefill c(rng, sh.s_q, sh.s_kv, sh.h, sh.d, dt, sh.pad, sh.qpad);
        if (mode == 1) c.ragged(rng);
        if (mode == 2) c.causal(sh.s_kv - sh.s_q);
        Status s = run(c.params(clean));
        INFO(s.message());
        REQUIRE(s.ok());
        check(c, clean, false);
        // float64 accumulation (the oracle mode of the reference)
        s = ref::run(c.params(clean), Accum::kF64);
        REQUIRE(s.ok());
        check(c, clean, true);
      }
    }
  }
}

TEST_CASE("indexer logits: clean_logits false leaves out-of-range entries untouched", "[indexer]") {
  test::Rng rng(0x1d02);
  Prefill c(rng, 19, 333, 64, 128, DType::kE4M3, 11);
  c.ragged(rng);
  c.ks[0] = 0;
  c.ke[0] = 0;  // an empty row stays entirely poisoned
  c.ks[1] = 332;
  c.ke[1] = 333;
  REQUIRE(run(c.params(false)).ok());
  check(c, false, false);
  for (int64_t s = 0; s < c.ld; ++s) CHECK(bits(c.logits[s]) == 0xFFFFFFFFu);
  REQUIRE(run(c.params(true)).ok());
  check(c, true, false);
  for (int64_t s = 0; s < c.s_kv; ++s) CHECK(c.logits[s] == -kInf);
}

TEST_CASE("indexer logits are bitwise reproducible run to run", "[indexer]") {
  test::Rng rng(0x1d03);
  Prefill c(rng, 45, 700, 64, 128, DType::kE4M3);
  c.causal(700 - 45);
  REQUIRE(run(c.params()).ok());
  const auto first = c.logits;
  REQUIRE(run(c.params()).ok());
  CHECK(std::memcmp(first.data(), c.logits.data(), first.size() * 4) == 0);
}

TEST_CASE("indexer logits reproduce DeepGEMM fp8_mqa_logits (golden)", "[indexer][golden]") {
  auto gc = test::load_golden("deepgemm_mqa_logits");
  if (!gc) return;
  const int64_t S = 128, SKV = 2048, H = 64, D = 128;
  auto q = gc->tensor("q").bytes;
  auto kv = gc->tensor("kv").bytes;
  auto q_bf16 = gc->tensor("q_bf16").as<bf16_t>();
  auto kv_bf16 = gc->tensor("kv_bf16").as<bf16_t>();
  auto kv_scale = gc->tensor("kv_scale").as<float>();
  auto w = gc->tensor("weights").as<float>();
  auto ks = gc->tensor("ks").as<int32_t>();
  auto ke = gc->tensor("ke").as<int32_t>();
  const auto golden = gc->tensor("logits").as<float>();
  REQUIRE(golden.size() == static_cast<size_t>(S * SKV));

  std::vector<float> out(S * SKV);
  IndexerLogitsParams p;
  p.q = make_view(q.data(), DType::kE4M3, {S, H, D});
  p.k = make_view(kv.data(), DType::kE4M3, {SKV, D});
  p.k_scale = make_view(kv_scale.data(), DType::kF32, {SKV});
  p.weights = make_view(w.data(), DType::kF32, {S, H});
  p.ks = make_view(ks.data(), DType::kI32, {S});
  p.ke = make_view(ke.data(), DType::kI32, {S});
  p.logits = make_view(out.data(), DType::kF32, {S, SKV});
  p.clean_logits = true;

  auto compare = [&](double limit) {
    int64_t mask_mismatch = 0, neg_inf = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      mask_mismatch += (out[i] == -kInf) != (golden[i] == -kInf);
      neg_inf += golden[i] == -kInf;
      if (std::isnan(out[i])) ++mask_mismatch;
    }
    CHECK(neg_inf == 145789);
    CHECK(mask_mismatch == 0);
    // DeepGEMM calc_diff = SPEC cos_diff with the −∞ entries zeroed; a = golden, r = ours.
    const double diff = test::cos_diff(std::vector<double>(golden.begin(), golden.end()),
                                       std::vector<double>(out.begin(), out.end()));
    INFO("calc_diff " << diff << " (limit " << limit << ")");
    CHECK(diff < limit);
    if (std::getenv("DSA_TEST_VERBOSE")) std::printf("calc_diff %.3e (limit %.0e)\n", diff, limit);
    return diff;
  };

  SECTION("FP8 codes and scales (simulated reference): calc_diff < 5e-6") {
    test::poison_float(out);
    REQUIRE(run(p).ok());
    compare(5e-6);
  }
  SECTION("exact mode on the unquantized bf16 inputs: calc_diff < 1e-3") {
    p.q = make_view(q_bf16.data(), DType::kBF16, {S, H, D});
    p.k = make_view(kv_bf16.data(), DType::kBF16, {SKV, D});
    p.k_scale = TensorView{};
    test::poison_float(out);
    Status s = run(p);
    INFO(s.message());
    REQUIRE(s.ok());
    compare(1e-3);
  }
}

TEST_CASE("indexer logits: 4K-token causal prefill, 64 heads x 128 (timing)", "[indexer][.perf]") {
  test::Rng rng(0x1d04);
  Prefill c(rng, 4096, 4096, 64, 128, DType::kE4M3);
  c.causal(0);
  c.params();
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(run(c.p).ok());
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("4K causal prefill (h 64, d 128, FP8): %.2f s\n", sec);
  for (int64_t t : {0, 1, 2047, 4095})
    for (int64_t s : {0, 1, 2047, 4095}) {
      const float got = c.logits[t * c.ld + s];
      if (s > t) {
        CHECK(got == -kInf);
        continue;
      }
      double val, absum;
      c.oracle(t, s, &val, &absum);
      CHECK(std::fabs(got - val) <= (c.d + c.h + 4) * kU32 * absum);
    }
}

// ---- bad input ------------------------------------------------------------------------------
namespace {
void expect_failure(Prefill& c, StatusCode code, const char* needle) {
  Status s = run(c.p);
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("indexer_logits: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  bool untouched = true;
  for (float v : c.logits) untouched &= bits(v) == 0xFFFFFFFFu;
  CHECK(untouched);
}
}  // namespace

TEST_CASE("indexer logits reject bad input, naming the argument, and write nothing", "[indexer][validation]") {
  test::Rng rng(0x1d05);
  Prefill c(rng, 6, 50, 8, 128, DType::kE4M3);
  c.ragged(rng);
  c.params();
  SECTION("q") {
    SECTION("absent") { c.p.q = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "q is required"); }
    SECTION("null") { c.p.q.data = nullptr; expect_failure(c, StatusCode::kNullPointer, "q is null"); }
    SECTION("dtype") { c.p.q.dtype = DType::kI32; expect_failure(c, StatusCode::kUnsupportedDtype, "q.dtype = i32"); }
    SECTION("rank") { c.p.q.rank = 2; expect_failure(c, StatusCode::kInvalidArgument, "q has rank 2"); }
    SECTION("stride") { c.p.q.stride[2] = 2; expect_failure(c, StatusCode::kInvalidArgument, "q.stride[2] = 2"); }
    SECTION("mixed modes") { c.p.q.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "q.dtype = bf16 and k.dtype = e4m3"); }
  }
  SECTION("k") {
    SECTION("absent") { c.p.k = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "k is required"); }
    SECTION("dtype mismatch with q") { c.p.k.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "k.dtype = f32"); }
    SECTION("d mismatch") { c.p.k.shape[1] = 64; expect_failure(c, StatusCode::kInvalidArgument, "k.shape[1] = 64 does not match d_idx = 128"); }
    SECTION("dtype") { c.p.k.dtype = DType::kU8; expect_failure(c, StatusCode::kUnsupportedDtype, "k.dtype = u8"); }
  }
  SECTION("k_scale") {
    SECTION("missing in FP8 mode") { c.p.k_scale = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "k_scale is required"); }
    SECTION("shape") { c.p.k_scale.shape[0] = 49; expect_failure(c, StatusCode::kInvalidArgument, "k_scale.shape[0] = 49 does not match s_kv = 50"); }
    SECTION("dtype") { c.p.k_scale.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "k_scale.dtype = bf16"); }
    SECTION("given in exact mode") {
      Prefill e(rng, 6, 50, 8, 128, DType::kBF16);
      e.params();
      std::vector<float> sc(50, 1.0f);
      e.p.k_scale = make_view(sc.data(), DType::kF32, {50});
      expect_failure(e, StatusCode::kInvalidArgument, "k_scale is given");
    }
  }
  SECTION("weights") {
    SECTION("absent") { c.p.weights = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "weights is required"); }
    SECTION("dtype") { c.p.weights.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "weights.dtype = bf16"); }
    SECTION("heads") { c.p.weights.shape[1] = 7; expect_failure(c, StatusCode::kInvalidArgument, "weights.shape[1] = 7 does not match h_idx = 8"); }
  }
  SECTION("ks") {
    SECTION("absent") { c.p.ks = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "ks is required"); }
    SECTION("dtype") { c.p.ks.dtype = DType::kF32; expect_failure(c, StatusCode::kUnsupportedDtype, "ks.dtype = f32"); }
    SECTION("shape") { c.p.ks.shape[0] = 5; expect_failure(c, StatusCode::kInvalidArgument, "ks.shape[0] = 5 does not match s_q = 6"); }
    SECTION("negative") { c.ks[3] = -2; expect_failure(c, StatusCode::kInvalidArgument, "ks[3] = -2"); }
    SECTION("ks > ke") { c.ks[4] = 30; c.ke[4] = 29; expect_failure(c, StatusCode::kInvalidArgument, "ke[4] = 29 is less than ks[4] = 30"); }
  }
  SECTION("ke") {
    SECTION("absent") { c.p.ke = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "ke is required"); }
    SECTION("null") { c.p.ke.data = nullptr; expect_failure(c, StatusCode::kNullPointer, "ke is null"); }
    SECTION("past s_kv") { c.ke[5] = 51; expect_failure(c, StatusCode::kInvalidArgument, "ke[5] = 51 exceeds s_kv"); }
  }
  SECTION("logits") {
    SECTION("absent") { c.p.logits = TensorView{}; expect_failure(c, StatusCode::kNullPointer, "logits is required"); }
    SECTION("dtype") { c.p.logits.dtype = DType::kBF16; expect_failure(c, StatusCode::kUnsupportedDtype, "logits.dtype = bf16"); }
    SECTION("shape") { c.p.logits.shape[1] = 49; expect_failure(c, StatusCode::kInvalidArgument, "logits.shape[1] = 49 does not match s_kv = 50"); }
    SECTION("stride") { c.p.logits.stride[1] = 2; expect_failure(c, StatusCode::kInvalidArgument, "logits.stride[1] = 2"); }
  }
  SECTION("zero heads") {
    c.p.q.shape[1] = 0;
    c.p.weights.shape[1] = 0;
    expect_failure(c, StatusCode::kUnsupportedShape, "h_idx = 0");
  }
}

// Run by hand with DSA_NUM_THREADS=1 and =2 and the same --rng-seed: the hashes must agree.
TEST_CASE("indexer logits output hash for thread-count comparison", "[indexer][.threads]") {
  test::Rng rng(0x1d06);
  for (DType dt : {DType::kE4M3, DType::kBF16}) {
    Prefill c(rng, 203, 900, 64, 128, dt, 3);
    c.ragged(rng);
    REQUIRE(run(c.params()).ok());
    std::printf("indexer_logits %s hash %016llx\n", dtname(dt), (unsigned long long)test::fnv1a(c.logits.data(), c.logits.size() * 4));
  }
}

TEST_CASE("indexer logits are bitwise independent of the thread count", "[indexer]") {
  const std::vector<std::string> one = test::run_self_with_threads("[.threads]", 1, "hash").lines,
                                 three = test::run_self_with_threads("[.threads]", 3, "hash").lines;
  REQUIRE(!one.empty());
  CHECK(one == three);
}
