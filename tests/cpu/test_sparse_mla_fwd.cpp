// OP-SMLA-FWD (SPEC §6.2–6.3): the CPU reference against a naive float64 oracle on fresh random
// data (SPEC §9.5 recipes) over many shapes and features, against FlashMLA's golden outputs, plus
// determinism, batch invariance, and bad input for every argument.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstring>
#include <numeric>

#include "cpu/mla_oracle.hpp"
#include "dsa/dsa.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;
using mla_test::as_double;
using mla_test::expect_close;

namespace {

struct Config {
  int64_t s_q = 4, h = 16, d_qk = 576, d_v = 512, s_kv = 1521, topk = 200;
  DType in = DType::kBF16, out = DType::kBF16;
  bool sentinels = false;     // FlashMLA's invalid list mixed in at random positions
  bool lengths = false;       // topk_length given
  bool sink = false;          // attn_sink given
  bool base2 = false;         // lse in base 2
  bool pad_heads = false;     // q head stride d_qk + 40 (non-contiguous q)
  bool invalid_rows = false;  // ~2% of rows (and row 1) fully invalid
  bool dups = false;          // valid indices drawn with replacement
  bool max_logits = true;
};

struct Case {
  Config c;
  int64_t q_head_stride = 0;
  std::vector<bf16_t> qb, kvb, outb;
  std::vector<float> qf, kvf, outf, lse, ml, sink;
  std::vector<int32_t> idx, len;
  SparseMlaFwdParams p;

  Case(const Config& cfg, test::Rng& rng) : c(cfg) {
    q_head_stride = c.pad_heads ? c.d_qk + 40 : c.d_qk;
    const int64_t nq = c.s_q * c.h * q_head_stride, nkv = c.s_kv * c.d_qk;
    if (c.in == DType::kBF16) {
      qb = test::randn_bf16(rng, nq);
      kvb = test::randn_bf16(rng, nkv);
    } else {
      qf = test::randn_f32(rng, nq, 0.1);
      kvf = test::randn_f32(rng, nkv, 0.1);
      const double oq = rng.uniform(-0.05, 0.05), okv = rng.uniform(-0.05, 0.05);
      for (auto& x : qf) x += static_cast<float>(oq);
      for (auto& x : kvf) x += static_cast<float>(okv);
    }
    const auto bad = mla_test::sentinels(c.s_kv);
    idx.resize(c.s_q * c.topk);
    std::vector<int32_t> perm(c.s_kv);
    std::iota(perm.begin(), perm.end(), 0);
    for (int64_t t = 0; t < c.s_q; ++t) {
      int32_t* row = &idx[t * c.topk];
      const bool empty = c.invalid_rows && (t == 1 || rng.uniform() < 0.02);
      const int64_t max_valid = c.dups ? c.topk : std::min(c.topk, c.s_kv);
      const int64_t nv = empty || max_valid == 0 ? 0 : (rng.uniform() < 0.5 ? max_valid : rng.integer(1, max_valid));
      for (int64_t i = 0; i < nv; ++i) {
        if (c.dups) {
          row[i] = static_cast<int32_t>(rng.integer(0, c.s_kv - 1));
        } else {
          std::swap(perm[i], perm[rng.integer(i, c.s_kv - 1)]);
          row[i] = perm[i];
        }
      }
      for (int64_t i = nv; i < c.topk; ++i) row[i] = c.sentinels ? bad[rng.integer(0, 7)] : -1;
      if (c.sentinels) std::shuffle(row, row + c.topk, rng.engine());
    }
    if (c.lengths) {
      len.resize(c.s_q);
      for (auto& l : len) {
        const double u = rng.uniform();
        l = static_cast<int32_t>(u < 0.1 ? 0 : u < 0.3 ? c.topk : rng.integer(0, c.topk));
      }
    }
    if (c.sink) {
      sink.resize(c.h);
      for (auto& s : sink) s = static_cast<float>(rng.normal() * 2.0 + 5.0);  // near lse, so it matters
    }
    const int64_t no = c.s_q * c.h * c.d_v;
    if (c.out == DType::kBF16) outb.resize(no); else outf.resize(no);
    lse.resize(c.s_q * c.h);
    if (c.max_logits) ml.resize(c.s_q * c.h);

    const void* qd = c.in == DType::kBF16 ? static_cast<const void*>(qb.data()) : qf.data();
    const void* kvd = c.in == DType::kBF16 ? static_cast<const void*>(kvb.data()) : kvf.data();
    p.q = make_view(qd, c.in, {c.s_q, c.h, c.d_qk}, {c.h * q_head_stride, q_head_stride, 1});
    p.kv = make_view(kvd, c.in, {c.s_kv, c.d_qk});
    p.indices = make_view(idx.data(), DType::kI32, {c.s_q, c.topk});
    if (c.lengths) p.topk_length = make_view(len.data(), DType::kI32, {c.s_q});
    if (c.sink) p.attn_sink = make_view(sink.data(), DType::kF32, {c.h});
    p.out = make_view(c.out == DType::kBF16 ? static_cast<void*>(outb.data()) : outf.data(), c.out,
                      {c.s_q, c.h, c.d_v});
    p.lse = make_view(lse.data(), DType::kF32, {c.s_q, c.h});
    if (c.max_logits) p.max_logits = make_view(ml.data(), DType::kF32, {c.s_q, c.h});
    p.sm_scale = kSoftmaxScaleV32;
    p.lse_base = c.base2 ? LseBase::kBase2 : LseBase::kNatural;
  }

  void poison() {
    test::poison_float(outb);
    test::poison_float(outf);
    test::poison_float(lse);
    test::poison_float(ml);
  }
  std::vector<double> out_d() const { return c.out == DType::kBF16 ? as_double(outb) : as_double(outf); }
  std::vector<double> q_d() const {  // compact [s_q, h, d_qk]
    std::vector<double> all = c.in == DType::kBF16 ? as_double(qb) : as_double(qf), q(c.s_q * c.h * c.d_qk);
    for (int64_t r = 0; r < c.s_q * c.h; ++r)
      std::copy_n(&all[r * q_head_stride], c.d_qk, &q[r * c.d_qk]);
    return q;
  }
  std::vector<double> kv_d() const { return c.in == DType::kBF16 ? as_double(kvb) : as_double(kvf); }

  mla_test::Oracle oracle() const {
    const std::vector<double> q = q_d(), kv = kv_d();
    std::vector<double> sink_d(sink.begin(), sink.end());
    return mla_test::attention64(
        c.s_q, c.h, c.d_qk, c.d_v, q,
        [&](int64_t t) {
          std::vector<const double*> keys;
          const int64_t n = c.lengths ? len[t] : c.topk;
          for (int64_t i = 0; i < n; ++i) {
            const int32_t v = idx[t * c.topk + i];
            if (v >= 0 && v < c.s_kv) keys.push_back(&kv[v * c.d_qk]);
          }
          return keys;
        },
        static_cast<double>(p.sm_scale), c.sink ? &sink_d : nullptr, c.base2);
  }
};

// Runs the case with both accumulators and compares every output with the oracle.
void check_case(Case& k) {
  const mla_test::Oracle o = k.oracle();
  for (Accum acc : {Accum::kF32, Accum::kF64}) {
    INFO("accum " << (acc == Accum::kF64 ? "f64" : "f32"));
    k.poison();
    const Status s = acc == Accum::kF32 ? run(k.p) : ref::run(k.p, acc);
    INFO(s.message());
    REQUIRE(s.ok());
    expect_close("out", k.out_d(), o.out, test::kPrefillOut);
    expect_close("lse", as_double(k.lse), o.lse, test::kPrefillLse);
    if (k.c.max_logits) expect_close("max_logits", as_double(k.ml), o.max_logits, test::kPrefillLse);
    // Empty rows: exactly out 0, lse +∞, max_logits −∞ (SPEC D6, §11.6).
    const auto out = k.out_d();
    int64_t empty = 0;
    for (int64_t r = 0; r < k.c.s_q * k.c.h; ++r) {
      if (!std::isinf(o.lse[r])) continue;
      ++empty;
      CHECK(k.lse[r] == std::numeric_limits<float>::infinity());
      if (k.c.max_logits) CHECK(k.ml[r] == -std::numeric_limits<float>::infinity());
      for (int64_t d = 0; d < k.c.d_v; ++d) REQUIRE(out[r * k.c.d_v + d] == 0.0);
    }
    if (k.c.invalid_rows) CHECK(empty > 0);
  }
}

}  // namespace

TEST_CASE("sparse_mla_fwd matches the float64 oracle over shapes and features", "[sparse_mla_fwd]") {
  test::Rng rng(0x5f01);
  std::vector<Config> configs;
  auto add = [&](Config c) { configs.push_back(c); };
  {
    Config c; c.s_q = 1; c.h = 1; c.topk = 100; add(c);                                     // tiny
  }
  {
    Config c; c.s_q = 62; c.h = 16; c.topk = 200; c.sentinels = true; c.lengths = true; add(c);
  }
  {
    Config c; c.s_q = 213; c.h = 1; c.topk = 333; c.sentinels = true; c.invalid_rows = true; c.base2 = true; add(c);
  }
  {
    Config c; c.s_q = 5; c.h = 64; c.s_kv = 300; c.topk = 500; c.sentinels = true; add(c);   // s_kv < topk
  }
  {
    Config c; c.s_q = 3; c.h = 128; c.topk = 257; c.sink = true; c.pad_heads = true; add(c);
  }
  {
    Config c; c.s_q = 62; c.h = 16; c.d_qk = 72; c.d_v = 48; c.s_kv = 1521; c.topk = 130;   // f32, small dims
    c.in = DType::kF32; c.out = DType::kF32; c.sentinels = true; c.invalid_rows = true; c.max_logits = false; add(c);
  }
  {
    Config c; c.s_q = 7; c.h = 4; c.s_kv = 50; c.topk = 300; c.dups = true; c.lengths = true; add(c);  // duplicates
  }
  {
    Config c; c.s_q = 9; c.h = 3; c.d_qk = 576; c.d_v = 576; c.topk = 2500; c.s_kv = 3000;    // > one key chunk
    c.sentinels = true; c.base2 = true; c.sink = true; c.invalid_rows = true; add(c);
  }
  {
    Config c; c.s_q = 2; c.h = 16; c.in = DType::kF32; c.out = DType::kBF16; c.pad_heads = true; c.topk = 64; add(c);
  }
  for (size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    INFO("config " << i << ": s_q " << c.s_q << " h_q " << c.h << " d_qk " << c.d_qk << " d_v " << c.d_v
                   << " s_kv " << c.s_kv << " topk " << c.topk);
    Case k(c, rng);
    check_case(k);
  }
}

TEST_CASE("sparse_mla_fwd: h_q 128 with the V3.2 shape, sentinels and topk_length", "[sparse_mla_fwd]") {
  test::Rng rng(0x5f02);
  Config c;
  c.s_q = 4; c.h = 128; c.topk = 448; c.sentinels = true; c.lengths = true; c.invalid_rows = true;
  Case k(c, rng);
  check_case(k);
}

TEST_CASE("sparse_mla_fwd is deterministic and batch invariant", "[sparse_mla_fwd]") {
  test::Rng rng(0x5f03);
  Config c;
  c.s_q = 24; c.h = 16; c.topk = 320; c.sentinels = true; c.lengths = true;
  Case k(c, rng);
  k.poison();
  REQUIRE(run(k.p).ok());
  const auto out1 = k.outb;
  const auto lse1 = k.lse, ml1 = k.ml;
  k.poison();
  REQUIRE(run(k.p).ok());
  CHECK(std::memcmp(out1.data(), k.outb.data(), out1.size() * 2) == 0);
  CHECK(std::memcmp(lse1.data(), k.lse.data(), lse1.size() * 4) == 0);
  CHECK(std::memcmp(ml1.data(), k.ml.data(), ml1.size() * 4) == 0);
  // Each token alone (one thread, no neighbours) gives the same bits as inside the batch.
  for (int64_t t = 0; t < c.s_q; t += 5) {
    SparseMlaFwdParams one = k.p;
    std::vector<bf16_t> o(c.h * c.d_v);
    std::vector<float> l(c.h), m(c.h);
    test::poison_float(o);
    one.q.data = k.qb.data() + t * c.h * c.d_qk;
    one.q.shape[0] = 1;
    one.indices.data = k.idx.data() + t * c.topk;
    one.indices.shape[0] = 1;
    one.topk_length.data = k.len.data() + t;
    one.topk_length.shape[0] = 1;
    one.out = make_view(o.data(), DType::kBF16, {1, c.h, c.d_v});
    one.lse = make_view(l.data(), DType::kF32, {1, c.h});
    one.max_logits = make_view(m.data(), DType::kF32, {1, c.h});
    REQUIRE(run(one).ok());
    CHECK(std::memcmp(o.data(), out1.data() + t * c.h * c.d_v, o.size() * 2) == 0);
    CHECK(std::memcmp(l.data(), lse1.data() + t * c.h, l.size() * 4) == 0);
    CHECK(std::memcmp(m.data(), ml1.data() + t * c.h, m.size() * 4) == 0);
  }
}

namespace {
void check_golden(const char* name) {
  auto g = test::load_golden(name);
  if (!g) return;
  const auto& q = g->tensor("q");
  const auto& kv = g->tensor("kv");
  const auto& ind = g->tensor("indices");
  const int64_t s_q = q.shape[0], h = q.shape[1], d_qk = q.shape[2], s_kv = kv.shape[0], topk = ind.shape[1];
  const int64_t d_v = static_cast<int64_t>(g->param("d_v"));
  auto qv = q.as<bf16_t>();
  auto kvv = kv.as<bf16_t>();
  auto iv = ind.as<int32_t>();
  std::vector<bf16_t> out(s_q * h * d_v);
  std::vector<float> lse(s_q * h), ml(s_q * h);
  test::poison_float(out);
  test::poison_float(lse);
  test::poison_float(ml);
  SparseMlaFwdParams p;
  p.q = make_view(qv.data(), DType::kBF16, {s_q, h, d_qk});
  p.kv = make_view(kvv.data(), DType::kBF16, {s_kv, d_qk});
  p.indices = make_view(iv.data(), DType::kI32, {s_q, topk});
  p.out = make_view(out.data(), DType::kBF16, {s_q, h, d_v});
  p.lse = make_view(lse.data(), DType::kF32, {s_q, h});
  p.max_logits = make_view(ml.data(), DType::kF32, {s_q, h});
  p.sm_scale = static_cast<float>(g->param("sm_scale"));
  const Status s = run(p);
  INFO(s.message());
  REQUIRE(s.ok());
  // a = FlashMLA, r = our reference (testdata/README.md "Suggested use").
  expect_close(std::string(name) + " out", as_double(g->tensor("out").as<bf16_t>()), as_double(out), test::kPrefillOut);
  expect_close(std::string(name) + " lse", as_double(g->tensor("lse").as<float>()), as_double(lse), test::kPrefillLse);
  expect_close(std::string(name) + " max_logits", as_double(g->tensor("max_logits").as<float>()), as_double(ml),
               test::kPrefillLse);
  if (g->params.count("all_invalid_row")) {
    const int64_t r = static_cast<int64_t>(g->param("all_invalid_row"));
    for (int64_t hh = 0; hh < h; ++hh) {
      CHECK(lse[r * h + hh] == std::numeric_limits<float>::infinity());
      CHECK(ml[r * h + hh] == -std::numeric_limits<float>::infinity());
      for (int64_t d = 0; d < d_v; ++d) REQUIRE(out[(r * h + hh) * d_v + d].bits == 0);
    }
  }
}
}  // namespace

TEST_CASE("sparse_mla_fwd matches FlashMLA golden case a (h_q 128, mixed invalid)", "[sparse_mla_fwd][golden]") {
  check_golden("flashmla_sparse_prefill_a");
}

TEST_CASE("sparse_mla_fwd matches FlashMLA golden case b (h_q 64, topk 2048)", "[sparse_mla_fwd][golden]") {
  check_golden("flashmla_sparse_prefill_b");
}

TEST_CASE("sparse_mla_fwd rejects bad input for every argument and writes nothing", "[sparse_mla_fwd][validation]") {
  test::Rng rng(0x5f04);
  Config cfg;
  cfg.s_q = 3; cfg.h = 4; cfg.d_qk = 64; cfg.d_v = 32; cfg.s_kv = 40; cfg.topk = 16; cfg.lengths = true; cfg.sink = true;
  Case k(cfg, rng);
  k.poison();
  auto& p = k.p;
  const StatusCode kInv = StatusCode::kInvalidArgument, kNull = StatusCode::kNullPointer;
  const StatusCode kDt = StatusCode::kUnsupportedDtype, kShape = StatusCode::kUnsupportedShape;
  std::vector<float> f32buf(4096, 1.0f);
  std::vector<int32_t> bad_len(cfg.s_q, 3);
  StatusCode code = StatusCode::kOk;
  std::string needle;
  SECTION("q missing") { p.q = TensorView{}; code = kNull; needle = "q is required"; }
  SECTION("q null data") { p.q.data = nullptr; code = kNull; needle = "q is null"; }
  SECTION("q dtype") { p.q.dtype = DType::kI32; code = kDt; needle = "q.dtype = i32"; }
  SECTION("q rank") { p.q.rank = 2; code = kInv; needle = "q has rank 2"; }
  SECTION("q inner stride") { p.q.stride[2] = 2; code = kInv; needle = "q.stride[2] = 2"; }
  SECTION("kv missing") { p.kv = TensorView{}; code = kNull; needle = "kv is required"; }
  SECTION("kv d_qk mismatch") { p.kv.shape[1] = 63; code = kInv; needle = "kv.shape[1] = 63"; }
  SECTION("kv dtype differs from q") {
    p.kv = make_view(f32buf.data(), DType::kF32, {40, 64}); code = kDt; needle = "kv.dtype = f32";
  }
  SECTION("kv dtype") { p.kv.dtype = DType::kE4M3; code = kDt; needle = "kv.dtype = e4m3"; }
  SECTION("indices missing") { p.indices = TensorView{}; code = kNull; needle = "indices is required"; }
  SECTION("indices dtype") { p.indices.dtype = DType::kF32; code = kDt; needle = "indices.dtype = f32"; }
  SECTION("indices s_q mismatch") { p.indices.shape[0] = 2; code = kInv; needle = "indices.shape[0] = 2"; }
  SECTION("indices topk 0") { p.indices.shape[1] = 0; code = kShape; needle = "topk"; }
  SECTION("topk_length dtype") { p.topk_length.dtype = DType::kF32; code = kDt; needle = "topk_length.dtype"; }
  SECTION("topk_length shape") { p.topk_length.shape[0] = 5; code = kInv; needle = "topk_length.shape[0] = 5"; }
  SECTION("topk_length value too large") {
    bad_len[1] = 17; p.topk_length.data = bad_len.data(); code = kInv; needle = "topk_length[1] = 17";
  }
  SECTION("topk_length value negative") {
    bad_len[2] = -1; p.topk_length.data = bad_len.data(); code = kInv; needle = "topk_length[2] = -1";
  }
  SECTION("attn_sink shape") { p.attn_sink.shape[0] = 3; code = kInv; needle = "attn_sink.shape[0] = 3"; }
  SECTION("attn_sink dtype") { p.attn_sink.dtype = DType::kBF16; code = kDt; needle = "attn_sink.dtype"; }
  SECTION("out missing") { p.out = TensorView{}; code = kNull; needle = "out is required"; }
  SECTION("out dtype") { p.out.dtype = DType::kI32; code = kDt; needle = "out.dtype = i32"; }
  SECTION("out h_q mismatch") { p.out.shape[1] = 5; code = kInv; needle = "out.shape[1] = 5"; }
  SECTION("d_v > d_qk") {
    p.out = make_view(f32buf.data(), DType::kF32, {3, 4, 65}); code = kShape; needle = "d_v = 65";
  }
  SECTION("out inner stride") { p.out.stride[2] = 3; code = kInv; needle = "out.stride[2] = 3"; }
  SECTION("lse missing") { p.lse = TensorView{}; code = kNull; needle = "lse is required"; }
  SECTION("lse shape") { p.lse.shape[1] = 3; code = kInv; needle = "lse.shape[1] = 3"; }
  SECTION("lse dtype") { p.lse.dtype = DType::kBF16; code = kDt; needle = "lse.dtype = bf16"; }
  SECTION("max_logits shape") { p.max_logits.shape[0] = 1; code = kInv; needle = "max_logits.shape[0] = 1"; }
  SECTION("max_logits rank") { p.max_logits.rank = 1; code = kInv; needle = "max_logits has rank 1"; }
  SECTION("sm_scale 0") { p.sm_scale = 0.0f; code = kInv; needle = "sm_scale = 0"; }
  SECTION("sm_scale negative") { p.sm_scale = -0.5f; code = kInv; needle = "sm_scale = -0.5"; }
  SECTION("sm_scale NaN") { p.sm_scale = std::nanf(""); code = kInv; needle = "sm_scale = nan"; }
  SECTION("sm_scale inf") { p.sm_scale = INFINITY; code = kInv; needle = "sm_scale = inf"; }
  SECTION("lse_base") { p.lse_base = static_cast<LseBase>(7); code = kInv; needle = "lse_base = 7"; }
  const Status s = run(p);
  mla_test::expect_failure(s, code, "sparse_mla_fwd", needle);
  CHECK(std::string(last_error()) == s.message());
  CHECK(mla_test::all_bytes(k.outb, 0xFF));
  CHECK(mla_test::all_bytes(k.lse, 0xFF));
  CHECK(mla_test::all_bytes(k.ml, 0xFF));
  // The reference entry point validates the same way.
  mla_test::expect_failure(ref::run(p, Accum::kF64), code, "sparse_mla_fwd", needle);
}

TEST_CASE("sparse_mla_fwd: 4K-token V3.2 layer timing", "[sparse_mla_fwd][.slow]") {
  // s_q 4096, h_q 128, topk 2048, d_qk 576, d_v 512 (2.34 TFLOP); SPEC §3.1 shapes.
  // Measured 2026-11-28 on the 2-core AMD EPYC (Zen 4, AVX-512) dev machine: 23.0 s wall on the
  // idle machine (bench_reference_cpu Layer4K, docs/performance.md); 36.4–37.1 s of CPU time in
  // this test (Eigen's GEMM kernel ~68% of it, its packing ~13%, gather/convert/softmax ~12%).
  const int64_t s_q = 4096, h = 128, d_qk = 576, d_v = 512, s_kv = 8192, topk = 2048;
  std::vector<bf16_t> q(s_q * h * d_qk), kv(s_kv * d_qk), out(s_q * h * d_v);
  std::vector<float> lse(s_q * h), ml(s_q * h);
  std::vector<int32_t> idx(s_q * topk);
  test::Rng rng(0x5f05);
  uint64_t x = rng.engine()();
  auto next = [&] { x = x * 6364136223846793005ull + 1442695040888963407ull; return x >> 33; };
  for (auto& v : q) v = float_to_bf16(static_cast<float>((int64_t)(next() % 2001) - 1000) * 1e-4f);
  for (auto& v : kv) v = float_to_bf16(static_cast<float>((int64_t)(next() % 2001) - 1000) * 1e-4f);
  std::vector<int32_t> perm(s_kv);
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t t = 0; t < s_q; ++t)
    for (int64_t i = 0; i < topk; ++i) {
      std::swap(perm[i], perm[i + next() % (s_kv - i)]);
      idx[t * topk + i] = perm[i];
    }
  test::poison_float(out);
  SparseMlaFwdParams p;
  p.q = make_view(q.data(), DType::kBF16, {s_q, h, d_qk});
  p.kv = make_view(kv.data(), DType::kBF16, {s_kv, d_qk});
  p.indices = make_view(idx.data(), DType::kI32, {s_q, topk});
  p.out = make_view(out.data(), DType::kBF16, {s_q, h, d_v});
  p.lse = make_view(lse.data(), DType::kF32, {s_q, h});
  p.max_logits = make_view(ml.data(), DType::kF32, {s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  const Status s = run(p);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  REQUIRE(s.ok());
  const double flop = 2.0 * s_q * h * topk * (d_qk + d_v);
  // Wall time depends on what else the machine runs; CPU time / 2 is the time on 2 idle cores.
  std::printf("sparse_mla_fwd 4K layer (%.3f TFLOP): wall %.2f s (%.1f GFLOP/s), cpu %.2f s -> %.2f s on 2 idle cores\n",
              flop * 1e-12, sec, flop / sec * 1e-9, cpu, cpu / 2);
  for (float v : lse) REQUIRE(std::isfinite(v));
  for (size_t i = 0; i < out.size(); i += 4099) REQUIRE(std::isfinite(bf16_to_float(out[i])));
  CHECK(std::min(sec, cpu / 2) < 60.0);
}

TEST_CASE("sparse_mla_fwd: empty shapes and an empty kv", "[sparse_mla_fwd]") {
  test::Rng rng(0x5f06);
  SECTION("s_kv = 0: every slot invalid, every row empty") {
    Config c;
    c.s_q = 3; c.h = 2; c.s_kv = 0; c.topk = 8; c.sentinels = true;
    Case k(c, rng);
    k.p.kv.data = nullptr;  // zero elements: may be null, and is never read
    k.poison();
    REQUIRE(run(k.p).ok());
    for (float v : k.lse) CHECK(v == std::numeric_limits<float>::infinity());
    for (float v : k.ml) CHECK(v == -std::numeric_limits<float>::infinity());
    for (bf16_t v : k.outb) REQUIRE(v.bits == 0);
  }
  SECTION("s_q = 0 and h_q = 0 are no-ops") {
    for (int which = 0; which < 2; ++which) {
      Config c;
      c.s_q = which == 0 ? 0 : 2; c.h = which == 0 ? 4 : 0; c.s_kv = 10; c.topk = 4;
      Case k(c, rng);
      k.poison();
      const Status s = run(k.p);
      INFO(s.message());
      CHECK(s.ok());
    }
  }
}

// Hash of every output of one call per accumulator (run by the next test in child processes with
// different DSA_NUM_THREADS; hidden from the normal run).
TEST_CASE("sparse_mla_fwd output hash", "[.sparse_mla_fwd_hash]") {
  test::Rng rng(0x5f07);
  Config c;
  c.s_q = 37; c.h = 16; c.topk = 300; c.sentinels = true; c.lengths = true; c.invalid_rows = true; c.sink = true;
  Case k(c, rng);
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

TEST_CASE("sparse_mla_fwd results do not depend on the thread count", "[sparse_mla_fwd]") {
  mla_test::expect_thread_count_invariant("[.sparse_mla_fwd_hash]");
}
