// OP-SMLA-DEC (SPEC §6.4, §7.1): the CPU reference against a naive float64 oracle on the
// dequantized cache (dequantized here, in the test), with NaN in every unreferenced cache slot,
// permuted page tables, FlashMLA's transposed lse layout, the FlashMLA golden case, equality with
// sparse prefill on the same rows, determinism, and bad input for every argument.
#include <catch2/catch.hpp>

#include <algorithm>
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

constexpr int64_t kDqk = 576, kDv = 512, kTok = 656;

// e4m3 · scale rounded to bf16 (SPEC §6.4), written out here independently of the library.
double dequant(uint8_t code, float scale) {
  const int sign = code & 0x80 ? -1 : 1, e = (code >> 3) & 0xF, m = code & 7;
  const double mag = e == 0 ? m / 512.0 : std::ldexp(1.0 + m / 8.0, e - 7);
  const float v = static_cast<float>(sign * mag) * scale;
  return bf16_to_float(float_to_bf16(v));
}

struct Config {
  int64_t b = 2, s_q = 2, h = 16, topk = 128, page = 64, num_blocks = 12;
  bool fp8 = true;
  bool lengths = false;
  bool sink = false;
  bool base2 = false;
  bool flashmla_lse = false;  // lse storage [b, h_q, s_q]
  DType out = DType::kBF16;
};

struct Case {
  Config c;
  int64_t slots = 0;
  std::vector<bf16_t> q, outb, cache_bf16;
  std::vector<uint8_t> cache_u8;
  std::vector<double> latent;  // [slots, 576] dequantized (NaN where unreferenced)
  std::vector<float> outf, lse, sink;
  std::vector<int32_t> idx, len;
  SparseMlaDecodeParams p;

  Case(const Config& cfg, test::Rng& rng) : c(cfg) {
    slots = c.num_blocks * c.page;
    // q: randn clamped to ±1 (FlashMLA decode recipe, SPEC §9.5).
    q.resize(c.b * c.s_q * c.h * kDqk);
    for (auto& v : q) v = float_to_bf16(static_cast<float>(std::clamp(rng.normal(), -1.0, 1.0)));
    // Each request owns a random set of pages (a permuted page table); indices are physical slots.
    std::vector<int32_t> pages(c.num_blocks);
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng.engine());
    const int64_t per_req = c.num_blocks / c.b;
    idx.assign(c.b * c.s_q * c.topk, -1);
    std::vector<char> used(slots, 0);
    for (int64_t bi = 0; bi < c.b; ++bi) {
      const int64_t ctx = rng.integer(1, per_req * c.page);
      for (int64_t si = 0; si < c.s_q; ++si) {
        int32_t* row = &idx[(bi * c.s_q + si) * c.topk];
        const bool empty = bi == c.b - 1 && si == c.s_q - 1;  // one all-invalid row
        const int64_t nv = empty ? 0 : rng.integer(1, std::min(c.topk, ctx));
        std::vector<int64_t> logical(ctx);
        std::iota(logical.begin(), logical.end(), 0);
        for (int64_t i = 0; i < nv; ++i) {
          std::swap(logical[i], logical[rng.integer(i, ctx - 1)]);
          const int64_t a = logical[i];
          row[i] = static_cast<int32_t>(pages[bi * per_req + a / c.page] * c.page + a % c.page);
        }
        std::shuffle(row, row + c.topk, rng.engine());  // −1 scattered among the valid slots
      }
    }
    if (c.lengths) {
      len.resize(c.b);
      for (auto& l : len) l = static_cast<int32_t>(rng.integer(0, c.topk));
    }
    // Referenced slots: only those that the oracle will read (respecting topk_length).
    for (int64_t r = 0; r < c.b * c.s_q; ++r) {
      const int64_t n = c.lengths ? len[r / c.s_q] : c.topk;
      for (int64_t i = 0; i < n; ++i)
        if (idx[r * c.topk + i] >= 0) used[idx[r * c.topk + i]] = 1;
    }
    // Cache: latent randn/10 clamped to ±1; every unreferenced slot is NaN (any stray read fails).
    const double nan = std::numeric_limits<double>::quiet_NaN();
    latent.assign(slots * kDqk, nan);
    if (c.fp8) cache_u8.assign(slots * kTok, 0xFF); else cache_bf16.assign(slots * kDqk, bf16_t{0x7FC0});
    for (int64_t s = 0; s < slots; ++s) {
      float x[kDqk];
      for (auto& v : x) v = round_bf16(static_cast<float>(std::clamp(rng.normal() / 10, -1.0, 1.0)));
      if (!used[s]) continue;
      if (!c.fp8) {
        for (int64_t i = 0; i < kDqk; ++i) {
          cache_bf16[s * kDqk + i] = float_to_bf16(x[i]);
          latent[s * kDqk + i] = x[i];
        }
        continue;
      }
      uint8_t* tok = &cache_u8[s * kTok];
      for (int tile = 0; tile < 4; ++tile) {  // ue8m0 tile scales (SPEC §4.4)
        float amax = 0;
        for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(x[tile * 128 + i]));
        const float scale = fp8_scale_ue8m0(amax);
        std::memcpy(tok + 512 + 4 * tile, &scale, 4);
        for (int i = 0; i < 128; ++i) {
          tok[tile * 128 + i] = float_to_e4m3(x[tile * 128 + i] / scale);
          latent[s * kDqk + tile * 128 + i] = dequant(tok[tile * 128 + i], scale);
        }
      }
      for (int i = 0; i < 64; ++i) {
        const bf16_t pe = float_to_bf16(x[512 + i]);
        std::memcpy(tok + 528 + 2 * i, &pe, 2);
        latent[s * kDqk + 512 + i] = x[512 + i];
      }
    }
    if (c.sink) {
      sink.resize(c.h);
      for (auto& s : sink) s = static_cast<float>(rng.normal() * 2.0 + 3.0);
    }
    const int64_t no = c.b * c.s_q * c.h * kDv;
    if (c.out == DType::kBF16) outb.resize(no); else outf.resize(no);
    lse.resize(c.b * c.s_q * c.h);

    p.q = make_view(q.data(), DType::kBF16, {c.b, c.s_q, c.h, kDqk});
    p.cache = c.fp8 ? make_view(cache_u8.data(), DType::kU8, {c.num_blocks, c.page, kTok})
                    : make_view(cache_bf16.data(), DType::kBF16, {c.num_blocks, c.page, kDqk});
    p.indices = make_view(idx.data(), DType::kI32, {c.b, c.s_q, c.topk});
    if (c.lengths) p.topk_length = make_view(len.data(), DType::kI32, {c.b});
    if (c.sink) p.attn_sink = make_view(sink.data(), DType::kF32, {c.h});
    p.out = make_view(c.out == DType::kBF16 ? static_cast<void*>(outb.data()) : outf.data(), c.out,
                      {c.b, c.s_q, c.h, kDv});
    p.lse = c.flashmla_lse ? make_view(lse.data(), DType::kF32, {c.b, c.s_q, c.h}, {c.h * c.s_q, 1, c.s_q})
                           : make_view(lse.data(), DType::kF32, {c.b, c.s_q, c.h});
    p.sm_scale = static_cast<float>(std::pow(576.0, -0.55));  // FlashMLA decode tests
    p.lse_base = c.base2 ? LseBase::kBase2 : LseBase::kNatural;
  }

  void poison() {
    test::poison_float(outb);
    test::poison_float(outf);
    test::poison_float(lse);
  }
  std::vector<double> out_d() const { return c.out == DType::kBF16 ? as_double(outb) : as_double(outf); }
  // lse in logical [b, s_q, h_q] order.
  std::vector<double> lse_logical() const {
    std::vector<double> v(lse.size());
    for (int64_t bi = 0; bi < c.b; ++bi)
      for (int64_t si = 0; si < c.s_q; ++si)
        for (int64_t hh = 0; hh < c.h; ++hh)
          v[(bi * c.s_q + si) * c.h + hh] =
              lse[bi * p.lse.stride[0] + si * p.lse.stride[1] + hh * p.lse.stride[2]];
    return v;
  }

  mla_test::Oracle oracle() const {
    const std::vector<double> qd = as_double(q);
    std::vector<double> sink_d(sink.begin(), sink.end());
    return mla_test::attention64(
        c.b * c.s_q, c.h, kDqk, kDv, qd,
        [&](int64_t r) {
          std::vector<const double*> keys;
          const int64_t n = c.lengths ? len[r / c.s_q] : c.topk;
          for (int64_t i = 0; i < n; ++i) {
            const int32_t v = idx[r * c.topk + i];
            if (v >= 0 && v < slots) keys.push_back(&latent[v * kDqk]);
          }
          return keys;
        },
        static_cast<double>(p.sm_scale), c.sink ? &sink_d : nullptr, c.base2);
  }
};

void check_case(Case& k) {
  const mla_test::Oracle o = k.oracle();
  for (Accum acc : {Accum::kF32, Accum::kF64}) {
    INFO("accum " << (acc == Accum::kF64 ? "f64" : "f32"));
    k.poison();
    const Status s = acc == Accum::kF32 ? run(k.p) : ref::run(k.p, acc);
    INFO(s.message());
    REQUIRE(s.ok());
    expect_close("out", k.out_d(), o.out, test::kDecodeOut);
    const auto lse = k.lse_logical();
    expect_close("lse", lse, o.lse, test::kDecodeLse);
    const auto out = k.out_d();
    int64_t empty = 0;
    for (int64_t r = 0; r < k.c.b * k.c.s_q * k.c.h; ++r) {
      if (!std::isinf(o.lse[r])) continue;
      ++empty;
      CHECK(lse[r] == std::numeric_limits<double>::infinity());
      for (int64_t d = 0; d < kDv; ++d) REQUIRE(out[r * kDv + d] == 0.0);
    }
    CHECK(empty >= k.c.h);
  }
}

}  // namespace

TEST_CASE("sparse_mla_decode matches the float64 oracle on the dequantized cache", "[sparse_mla_decode]") {
  test::Rng rng(0xdec1);
  std::vector<Config> configs;
  { Config c; configs.push_back(c); }
  { Config c; c.b = 3; c.s_q = 1; c.h = 64; c.topk = 100; c.page = 16; c.num_blocks = 30; c.lengths = true; configs.push_back(c); }
  { Config c; c.b = 2; c.s_q = 2; c.h = 128; c.topk = 64; c.flashmla_lse = true; c.sink = true; configs.push_back(c); }
  { Config c; c.b = 4; c.s_q = 3; c.h = 1; c.topk = 333; c.page = 1; c.num_blocks = 2000; c.base2 = true; configs.push_back(c); }
  { Config c; c.fp8 = false; c.b = 2; c.s_q = 2; c.h = 16; c.topk = 200; c.page = 32; c.num_blocks = 20; c.out = DType::kF32;
    c.flashmla_lse = true; c.lengths = true; configs.push_back(c); }
  { Config c; c.b = 1; c.s_q = 2; c.h = 2; c.topk = 2100; c.page = 64; c.num_blocks = 40; configs.push_back(c); }  // > one key chunk
  // MTP with 4 tokens (s_q = 4): FP8 cache with lengths and FlashMLA lse layout, bf16 cache with sink.
  { Config c; c.b = 2; c.s_q = 4; c.h = 16; c.topk = 96; c.page = 16; c.num_blocks = 24; c.lengths = true;
    c.flashmla_lse = true; configs.push_back(c); }
  { Config c; c.fp8 = false; c.b = 3; c.s_q = 4; c.h = 8; c.topk = 70; c.page = 8; c.num_blocks = 40; c.sink = true;
    c.out = DType::kF32; configs.push_back(c); }
  for (size_t i = 0; i < configs.size(); ++i) {
    const Config& c = configs[i];
    INFO("config " << i << ": b " << c.b << " s_q " << c.s_q << " h_q " << c.h << " topk " << c.topk << " P " << c.page
                   << (c.fp8 ? " fp8" : " bf16") << " cache");
    Case k(c, rng);
    check_case(k);
  }
}

namespace {
// The same rows through sparse_mla_fwd on a bf16 kv holding the dequantized cache: identical bits.
void check_equals_prefill(Case& k) {
  k.poison();
  REQUIRE(run(k.p).ok());
  const int64_t rows = k.c.b * k.c.s_q;
  std::vector<bf16_t> kv(k.slots * kDqk);
  for (size_t i = 0; i < kv.size(); ++i) kv[i] = float_to_bf16(static_cast<float>(k.latent[i]));
  std::vector<int32_t> len(rows);
  for (int64_t r = 0; r < rows; ++r) len[r] = k.c.lengths ? k.len[r / k.c.s_q] : static_cast<int32_t>(k.c.topk);
  std::vector<bf16_t> out(rows * k.c.h * kDv);
  std::vector<float> lse(rows * k.c.h);
  test::poison_float(out);
  test::poison_float(lse);
  SparseMlaFwdParams f;
  f.q = make_view(k.q.data(), DType::kBF16, {rows, k.c.h, kDqk});
  f.kv = make_view(kv.data(), DType::kBF16, {k.slots, kDqk});
  f.indices = make_view(k.idx.data(), DType::kI32, {rows, k.c.topk});
  f.topk_length = make_view(len.data(), DType::kI32, {rows});
  f.out = make_view(out.data(), DType::kBF16, {rows, k.c.h, kDv});
  f.lse = make_view(lse.data(), DType::kF32, {rows, k.c.h});
  f.sm_scale = k.p.sm_scale;
  REQUIRE(run(f).ok());
  CHECK(std::memcmp(out.data(), k.outb.data(), out.size() * 2) == 0);
  const auto dl = k.lse_logical();
  for (size_t i = 0; i < lse.size(); ++i) REQUIRE(static_cast<double>(lse[i]) == dl[i]);
}
}  // namespace

TEST_CASE("FP8 decode equals sparse prefill on the dequantized cache", "[sparse_mla_decode]") {
  test::Rng rng(0xdec2);
  Config c;
  c.b = 3; c.s_q = 2; c.h = 32; c.topk = 192; c.lengths = true; c.flashmla_lse = true;
  Case k(c, rng);
  check_equals_prefill(k);
  c.s_q = 4; c.h = 16; c.topk = 96;  // MTP, 4 tokens
  Case k4(c, rng);
  check_equals_prefill(k4);
}

TEST_CASE("bf16-cache decode equals sparse prefill on the same rows", "[sparse_mla_decode]") {
  test::Rng rng(0xdec3);
  Config c;
  c.fp8 = false; c.b = 2; c.s_q = 3; c.h = 16; c.topk = 150; c.page = 8; c.num_blocks = 40;
  Case k(c, rng);
  check_equals_prefill(k);
}

TEST_CASE("sparse_mla_decode is deterministic and batch invariant", "[sparse_mla_decode]") {
  test::Rng rng(0xdec4);
  Config c;
  c.b = 4; c.s_q = 2; c.h = 16; c.topk = 256;
  Case k(c, rng);
  k.poison();
  REQUIRE(run(k.p).ok());
  const auto out1 = k.outb;
  const auto lse1 = k.lse;
  k.poison();
  REQUIRE(run(k.p).ok());
  CHECK(std::memcmp(out1.data(), k.outb.data(), out1.size() * 2) == 0);
  CHECK(std::memcmp(lse1.data(), k.lse.data(), lse1.size() * 4) == 0);
  // Request 2 alone gives the same bits.
  SparseMlaDecodeParams one = k.p;
  const int64_t bi = 2, per = c.s_q * c.h;
  std::vector<bf16_t> o(per * kDv);
  std::vector<float> l(per);
  one.q.data = k.q.data() + bi * per * kDqk;
  one.q.shape[0] = 1;
  one.indices.data = k.idx.data() + bi * c.s_q * c.topk;
  one.indices.shape[0] = 1;
  one.out = make_view(o.data(), DType::kBF16, {1, c.s_q, c.h, kDv});
  one.lse = make_view(l.data(), DType::kF32, {1, c.s_q, c.h});
  REQUIRE(run(one).ok());
  CHECK(std::memcmp(o.data(), out1.data() + bi * per * kDv, o.size() * 2) == 0);
  CHECK(std::memcmp(l.data(), lse1.data() + bi * per, l.size() * 4) == 0);
  // The CPU reference ignores num_splits (a CUDA split-KV knob): 0 and 4 give the same bits.
  for (int32_t n : {0, 4}) {
    k.p.num_splits = n;
    k.poison();
    REQUIRE(run(k.p).ok());
    CHECK(std::memcmp(out1.data(), k.outb.data(), out1.size() * 2) == 0);
    CHECK(std::memcmp(lse1.data(), k.lse.data(), lse1.size() * 4) == 0);
  }
}

TEST_CASE("sparse_mla_decode matches the FlashMLA FP8 golden case", "[sparse_mla_decode][golden]") {
  auto g = test::load_golden("flashmla_sparse_decode_fp8");
  if (!g) return;
  const auto& qt = g->tensor("q");
  const auto& kc = g->tensor("k_cache");
  const auto& it = g->tensor("indices");
  const int64_t b = qt.shape[0], s_q = qt.shape[1], h = qt.shape[2];
  const int64_t nb = kc.shape[0], page = kc.shape[1], topk = it.shape[2];
  auto q = qt.as<bf16_t>();
  auto cache = kc.as<uint8_t>();
  auto idx = it.as<int32_t>();
  std::vector<bf16_t> out(b * s_q * h * kDv);
  std::vector<float> lse(b * h * s_q);
  test::poison_float(out);
  test::poison_float(lse);
  SparseMlaDecodeParams p;
  p.q = make_view(q.data(), DType::kBF16, {b, s_q, h, kDqk});
  p.cache = make_view(cache.data(), DType::kU8, {nb, page, kTok});
  p.indices = make_view(idx.data(), DType::kI32, {b, s_q, topk});
  p.out = make_view(out.data(), DType::kBF16, {b, s_q, h, kDv});
  // Golden lse is stored [b, h_q, s_q]: write that layout directly through the strides.
  p.lse = make_view(lse.data(), DType::kF32, {b, s_q, h}, {h * s_q, 1, s_q});
  p.sm_scale = static_cast<float>(g->param("sm_scale"));
  const Status s = run(p);
  INFO(s.message());
  REQUIRE(s.ok());
  expect_close("decode golden out", as_double(g->tensor("out").as<bf16_t>()), as_double(out), test::kDecodeOut);
  expect_close("decode golden lse", as_double(g->tensor("lse").as<float>()), as_double(lse), test::kDecodeLse);
  // Row (1, 1) is all −1: out 0 and lse +∞ exactly.
  for (int64_t hh = 0; hh < h; ++hh) {
    CHECK(lse[(1 * h + hh) * s_q + 1] == std::numeric_limits<float>::infinity());
    for (int64_t d = 0; d < kDv; ++d) REQUIRE(out[((1 * s_q + 1) * h + hh) * kDv + d].bits == 0);
  }
}

TEST_CASE("sparse_mla_decode rejects bad input for every argument and writes nothing",
          "[sparse_mla_decode][validation]") {
  test::Rng rng(0xdec5);
  Config cfg;
  cfg.b = 2; cfg.s_q = 2; cfg.h = 4; cfg.topk = 16; cfg.page = 4; cfg.num_blocks = 10; cfg.lengths = true;
  cfg.sink = true; cfg.flashmla_lse = true;
  Case k(cfg, rng);
  k.poison();
  auto& p = k.p;
  const StatusCode kInv = StatusCode::kInvalidArgument, kNull = StatusCode::kNullPointer;
  const StatusCode kDt = StatusCode::kUnsupportedDtype, kShape = StatusCode::kUnsupportedShape;
  std::vector<float> f32buf(1 << 16, 1.0f);
  std::vector<bf16_t> bfbuf(1 << 16);
  std::vector<int32_t> bad_len(cfg.b, 3);
  StatusCode code = StatusCode::kOk;
  std::string needle;
  SECTION("q missing") { p.q = TensorView{}; code = kNull; needle = "q is required"; }
  SECTION("q dtype") { p.q.dtype = DType::kF32; code = kDt; needle = "q.dtype = f32"; }
  SECTION("q head dim") { p.q.shape[3] = 512; code = kShape; needle = "q.shape[3] = 512"; }
  SECTION("q rank") { p.q.rank = 3; code = kInv; needle = "q has rank 3"; }
  SECTION("cache missing") { p.cache = TensorView{}; code = kNull; needle = "cache is required"; }
  SECTION("cache fp8 last dim") {
    p.cache = make_view(k.cache_u8.data(), DType::kU8, {cfg.num_blocks, 8, 328}); code = kShape;
    needle = "cache.shape[2] = 328";
  }
  SECTION("cache bf16 last dim") {
    p.cache = make_view(bfbuf.data(), DType::kBF16, {10, 4, 656}); code = kShape; needle = "cache.shape[2] = 656";
  }
  SECTION("cache dtype") { p.cache = make_view(f32buf.data(), DType::kF32, {10, 4, 576}); code = kDt; needle = "cache.dtype = f32"; }
  SECTION("cache e4m3 dtype") { p.cache.dtype = DType::kE4M3; code = kDt; needle = "cache.dtype = e4m3"; }
  SECTION("cache rank") { p.cache.rank = 2; code = kInv; needle = "cache has rank 2"; }
  SECTION("cache page size 0") { p.cache.shape[1] = 0; code = kShape; needle = "P = 0"; }
  SECTION("cache inner stride") { p.cache.stride[2] = 2; code = kInv; needle = "cache.stride[2] = 2"; }
  SECTION("indices missing") { p.indices = TensorView{}; code = kNull; needle = "indices is required"; }
  SECTION("indices dtype") { p.indices.dtype = DType::kU8; code = kDt; needle = "indices.dtype = u8"; }
  SECTION("indices batch") { p.indices.shape[0] = 1; code = kInv; needle = "indices.shape[0] = 1"; }
  SECTION("indices s_q") { p.indices.shape[1] = 3; code = kInv; needle = "indices.shape[1] = 3"; }
  SECTION("indices topk 0") { p.indices.shape[2] = 0; code = kShape; needle = "topk = 0"; }
  SECTION("topk_length shape") { p.topk_length.shape[0] = 4; code = kInv; needle = "topk_length.shape[0] = 4"; }
  SECTION("topk_length dtype") { p.topk_length.dtype = DType::kF32; code = kDt; needle = "topk_length.dtype"; }
  SECTION("topk_length value") { bad_len[1] = 99; p.topk_length.data = bad_len.data(); code = kInv; needle = "topk_length[1] = 99"; }
  SECTION("topk_length negative") { bad_len[0] = -5; p.topk_length.data = bad_len.data(); code = kInv; needle = "topk_length[0] = -5"; }
  SECTION("attn_sink shape") { p.attn_sink.shape[0] = 5; code = kInv; needle = "attn_sink.shape[0] = 5"; }
  SECTION("out missing") { p.out = TensorView{}; code = kNull; needle = "out is required"; }
  SECTION("out d_v") { p.out.shape[3] = 576; code = kShape; needle = "out.shape[3] = 576"; }
  SECTION("out dtype") { p.out.dtype = DType::kU8; code = kDt; needle = "out.dtype = u8"; }
  SECTION("out h_q") { p.out.shape[2] = 8; code = kInv; needle = "out.shape[2] = 8"; }
  SECTION("lse missing") { p.lse = TensorView{}; code = kNull; needle = "lse is required"; }
  SECTION("lse shape mismatch") { p.lse.shape[2] = 3; code = kInv; needle = "lse.shape[2] = 3"; }
  SECTION("lse shape mismatch (contiguous)") {
    p.lse = make_view(k.lse.data(), DType::kF32, {cfg.b, cfg.s_q, 5}); code = kInv; needle = "lse.shape[2] = 5";
  }
  SECTION("lse rank") { p.lse.rank = 2; code = kInv; needle = "lse has rank 2"; }
  SECTION("lse dtype") { p.lse.dtype = DType::kBF16; code = kDt; needle = "lse.dtype = bf16"; }
  SECTION("lse negative stride") { p.lse.stride[1] = -1; code = kInv; needle = "lse.stride[1] = -1"; }
  SECTION("lse overlapping strides") { p.lse.stride[1] = 2; code = kInv; needle = "elements of lse overlap"; }
  SECTION("lse null") { p.lse.data = nullptr; code = kNull; needle = "lse is null"; }
  SECTION("sm_scale 0") { p.sm_scale = 0.0f; code = kInv; needle = "sm_scale = 0"; }
  SECTION("sm_scale NaN") { p.sm_scale = std::nanf(""); code = kInv; needle = "sm_scale = nan"; }
  SECTION("sm_scale negative") { p.sm_scale = -1.0f; code = kInv; needle = "sm_scale = -1"; }
  SECTION("lse_base") { p.lse_base = static_cast<LseBase>(-3); code = kInv; needle = "lse_base = -3"; }
  SECTION("num_splits negative") { p.num_splits = -1; code = kInv; needle = "num_splits = -1"; }
  const Status s = run(p);
  mla_test::expect_failure(s, code, "sparse_mla_decode", needle);
  CHECK(mla_test::all_bytes(k.outb, 0xFF));
  CHECK(mla_test::all_bytes(k.lse, 0xFF));
  mla_test::expect_failure(ref::run(p, Accum::kF64), code, "sparse_mla_decode", needle);
}

// Hash of every output (run by the next test in child processes with different DSA_NUM_THREADS).
TEST_CASE("sparse_mla_decode output hash", "[.sparse_mla_decode_hash]") {
  test::Rng rng(0xdec6);
  Config c;
  c.b = 3; c.s_q = 3; c.h = 16; c.topk = 200; c.lengths = true; c.flashmla_lse = true;
  Case k(c, rng);
  uint64_t h = dsa::test::kFnvOffset;
  for (Accum acc : {Accum::kF32, Accum::kF64}) {
    k.poison();
    REQUIRE(ref::run(k.p, acc).ok());
    h = dsa::test::fnv1a(k.outb, h);
    h = dsa::test::fnv1a(k.lse, h);
  }
  std::printf("MLAHASH %016llx\n", static_cast<unsigned long long>(h));
}

TEST_CASE("sparse_mla_decode results do not depend on the thread count", "[sparse_mla_decode]") {
  mla_test::expect_thread_count_invariant("[.sparse_mla_decode_hash]");
}
