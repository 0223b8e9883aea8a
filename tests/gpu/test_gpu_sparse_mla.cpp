// GPU tests of OP-SMLA-FWD and OP-SMLA-DEC (SPEC §6.2–6.4, §7.1, §9.4, §9.5): the CUDA path on
// fresh random data against the CPU reference in float64 accumulation (dsa::ref::run(…, kF64), fp32
// outputs) with the SPEC §9.4 tolerances (tests/support/metrics.hpp), over many shapes: s_q from 1
// to 70000, h_q ∈ {1, 16, 32, 64, 128} and odd head counts, topk from 1 to 2048 with ragged tails,
// s_kv < topk, ~2% all-invalid rows, FlashMLA's sentinel list, topk_length, non-contiguous
// (and 16-byte-misaligned) q, attn_sink, f32 out, base-2 lse. Special values exact (empty rows:
// out 0, lse +∞, max_logits −∞). Outputs start poisoned (0xFF); every element must be written.
// Decode: FP8 and bf16 paged caches with NaN in every unreferenced slot, lse in [b, s_q, h_q] and
// FlashMLA's [b, h_q, s_q] storage. Reruns are bitwise identical, and a token's results do not
// depend on the other tokens of the call (prefill). Decode covers both the split-KV path (small
// batches: workspace_size() > 0, partials merged by a second kernel) and the unsplit path (a grid
// of at least half a wave: workspace_size() == 0), and a too-small workspace is rejected. The
// FlashMLA goldens (testdata) are checked too.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"
#include "gpu/gpu_util.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"
#include "support/testdata.hpp"

using namespace dsa;
using dsa::test::Mirror;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kSentinels[] = {INT32_MIN, -123456, -1, 0 /* s_kv */, 114514, 1919810, 2147480000, INT32_MAX};

void require_ok(const Status& s, const char* what) {
  INFO(what << ": " << status_code_name(s.code()) << ": " << s.message());
  REQUIRE(s.ok());
}

void expect_close(const test::Report& rep) {
  INFO(rep.describe());
  CHECK(rep.ok);
}

std::vector<double> bf16_bytes_to_double(const std::vector<uint8_t>& b) {
  std::vector<double> out(b.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    uint16_t u;
    std::memcpy(&u, b.data() + 2 * i, 2);
    out[i] = bf16_to_float(bf16_t{u});
  }
  return out;
}
std::vector<double> f32_bytes_to_double(const uint8_t* b, size_t n) {
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    float f;
    std::memcpy(&f, b + 4 * i, 4);
    out[i] = f;
  }
  return out;
}

void fill_bf16(Mirror& m, const std::vector<bf16_t>& v) { std::memcpy(m.host(), v.data(), v.size() * 2); }

int32_t random_sentinel(test::Rng& rng, int64_t s_kv) {
  const int32_t s = kSentinels[rng.integer(0, 7)];
  return s == 0 ? static_cast<int32_t>(s_kv) : s;
}

// ---- prefill --------------------------------------------------------------------------------------

struct FwdCase {
  int64_t s_q = 1, h = 16, s_kv = 64, topk = 64;
  bool topk_len = false, sink = false, max_logits = true, f32_out = false, base2 = false;
  int64_t q_head_pad = 0;   // extra elements between heads (non-contiguous q)
  int64_t q_offset = 0;     // elements before q[0] (8: 16-byte aligned; 1: misaligned)
  int64_t out_head_pad = 0; // extra elements between out heads (odd: no paired stores)
  double invalid = 0.1;     // fraction of sentinel slots
  double empty_rows = 0.02; // fraction of all-invalid rows
  bool check_determinism = true;
};

struct FwdResult {
  std::vector<uint8_t> out, lse, ml;
};

void run_fwd_case(const FwdCase& c, uint64_t salt) {
  test::Rng rng(salt);
  const int64_t s_q = c.s_q, h = c.h, s_kv = c.s_kv, topk = c.topk;
  CAPTURE(s_q, h, s_kv, topk, c.topk_len, c.sink, c.f32_out, c.base2, c.q_head_pad, c.q_offset, c.out_head_pad,
          c.invalid);
  const int64_t oh = 512 + c.out_head_pad;
  const int64_t qh = 576 + c.q_head_pad, qt = h * qh;
  Mirror q((c.q_offset + s_q * qt) * 2), kv(s_kv * 576 * 2), ind(s_q * topk * 4), len(s_q * 4), sink(h * 4);
  {
    auto qv = test::randn_bf16(rng, static_cast<size_t>(c.q_offset + s_q * qt));
    fill_bf16(q, qv);
    fill_bf16(kv, test::randn_bf16(rng, static_cast<size_t>(s_kv * 576)));
  }
  int32_t* iv = ind.host_as<int32_t>();
  for (int64_t t = 0; t < s_q; ++t) {
    const bool empty = rng.uniform() < c.empty_rows;
    for (int64_t i = 0; i < topk; ++i)
      iv[t * topk + i] = (empty || rng.uniform() < c.invalid) ? random_sentinel(rng, s_kv)
                                                               : static_cast<int32_t>(rng.integer(0, s_kv - 1));
    len.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(0, topk));
  }
  for (int64_t i = 0; i < h; ++i) sink.host_as<float>()[i] = static_cast<float>(rng.normal() * 2.0);
  q.upload(), kv.upload(), ind.upload(), len.upload(), sink.upload();

  const DType ot = c.f32_out ? DType::kF32 : DType::kBF16;
  Mirror out(s_q * h * oh * dtype_size(ot)), lse(s_q * h * 4), ml(s_q * h * 4);
  auto make = [&](bool dev, Mirror& o, Mirror& l, Mirror& m, DType out_type) {
    SparseMlaFwdParams p;
    p.q = make_view(static_cast<uint8_t*>(dev ? q.dev() : q.host()) + c.q_offset * 2, DType::kBF16, {s_q, h, 576},
                    {qt, qh, 1});
    p.kv = kv.view(dev, DType::kBF16, {s_kv, 576});
    p.indices = ind.view(dev, DType::kI32, {s_q, topk});
    if (c.topk_len) p.topk_length = len.view(dev, DType::kI32, {s_q});
    if (c.sink) p.attn_sink = sink.view(dev, DType::kF32, {h});
    if (&o == &out)
      p.out = o.view(dev, out_type, {s_q, h, 512}, {h * oh, oh, 1});
    else
      p.out = o.view(dev, out_type, {s_q, h, 512});
    p.lse = l.view(dev, DType::kF32, {s_q, h});
    if (c.max_logits) p.max_logits = m.view(dev, DType::kF32, {s_q, h});
    p.sm_scale = kSoftmaxScaleV32;
    p.lse_base = c.base2 ? LseBase::kBase2 : LseBase::kNatural;
    return p;
  };
  auto gpu_run = [&]() {
    out.poison(0xFF), lse.poison(0xFF), ml.poison(0xFF);
    require_ok(run(make(true, out, lse, ml, ot)), "cuda");
    test::sync_ok();
    return FwdResult{out.download(), lse.download(), c.max_logits ? ml.download() : std::vector<uint8_t>()};
  };
  const FwdResult a = gpu_run();

  // The CPU reference, float64 accumulation, fp32 outputs.
  Mirror rout(s_q * h * 512 * 4), rlse(s_q * h * 4), rml(s_q * h * 4);
  rout.poison(0xFF), rlse.poison(0xFF), rml.poison(0xFF);
  require_ok(ref::run(make(false, rout, rlse, rml, DType::kF32), Accum::kF64), "reference");
  const size_t n_out = static_cast<size_t>(s_q * h * 512), n_row = static_cast<size_t>(s_q * h);
  const auto ro = f32_bytes_to_double(rout.host(), n_out);
  std::vector<double> ao;
  {
    const auto padded = c.f32_out ? f32_bytes_to_double(a.out.data(), static_cast<size_t>(s_q * h * oh))
                                  : bf16_bytes_to_double(a.out);
    for (int64_t r = 0; r < s_q * h; ++r)
      ao.insert(ao.end(), padded.begin() + r * oh, padded.begin() + r * oh + 512);
  }
  expect_close(test::compare("out", ao, ro, test::kPrefillOut));
  const auto rl = f32_bytes_to_double(rlse.host(), n_row);
  const auto al = f32_bytes_to_double(a.lse.data(), n_row);
  expect_close(test::compare("lse", al, rl, test::kPrefillLse));
  if (c.max_logits)
    expect_close(test::compare("max_logits", f32_bytes_to_double(a.ml.data(), n_row),
                               f32_bytes_to_double(rml.host(), n_row), test::kPrefillLse));
  // Empty rows: exactly out +0, lse +∞, max_logits −∞; no NaN anywhere.
  int64_t empty = 0, nan = 0, bad_empty = 0;
  for (size_t r = 0; r < n_row; ++r) {
    if (std::isnan(al[r])) ++nan;
    if (rl[r] != kInf) continue;
    ++empty;
    if (al[r] != kInf) ++bad_empty;
    if (c.max_logits && f32_bytes_to_double(a.ml.data() + 4 * r, 1)[0] != -kInf) ++bad_empty;
    for (size_t d = 0; d < 512; ++d)
      if (ao[r * 512 + d] != 0.0 || std::signbit(ao[r * 512 + d])) {
        ++bad_empty;
        break;
      }
  }
  for (double v : ao) nan += std::isnan(v) ? 1 : 0;
  CAPTURE(empty);
  CHECK(nan == 0);
  CHECK(bad_empty == 0);
  if (c.check_determinism) {
    const FwdResult b = gpu_run();
    CHECK(a.out == b.out);
    CHECK(a.lse == b.lse);
    CHECK(a.ml == b.ml);
  }
}

}  // namespace

TEST_CASE("gpu sparse_mla_fwd matches the CPU reference over shapes", "[gpu][sparse_mla]") {
  uint64_t salt = 0x5A11;
  for (int64_t h : {1, 16, 32, 64, 128})
    for (int64_t topk : {1, 7, 64, 100, 512}) {
      FwdCase c;
      c.h = h, c.topk = topk, c.s_q = topk >= 512 ? 5 : 13, c.s_kv = 700;
      c.invalid = topk == 1 ? 0.3 : 0.15;
      c.empty_rows = 0.05;
      run_fwd_case(c, ++salt);
    }
}

TEST_CASE("gpu sparse_mla_fwd: odd head counts, s_kv < topk, topk_length, sink, f32 out, base 2", "[gpu][sparse_mla]") {
  uint64_t salt = 0x5B22;
  for (int64_t h : {3, 17, 33, 65, 100}) {
    FwdCase c;
    c.h = h, c.topk = 96, c.s_q = 9, c.s_kv = 50, c.invalid = 0.05;  // s_kv < topk: duplicates
    c.topk_len = true;
    run_fwd_case(c, ++salt);
  }
  {
    FwdCase c;
    c.h = 64, c.topk = 130, c.s_q = 11, c.s_kv = 300, c.sink = true;
    run_fwd_case(c, ++salt);
  }
  {
    FwdCase c;
    c.h = 16, c.topk = 200, c.s_q = 11, c.s_kv = 300, c.sink = true, c.f32_out = true, c.base2 = true;
    c.max_logits = false;
    run_fwd_case(c, ++salt);
  }
  {
    FwdCase c;  // all rows invalid
    c.h = 128, c.topk = 64, c.s_q = 4, c.s_kv = 100, c.empty_rows = 1.0;
    run_fwd_case(c, ++salt);
  }
  {
    FwdCase c;  // topk_length 0 … topk with long lists
    c.h = 128, c.topk = 2048, c.s_q = 3, c.s_kv = 4096, c.topk_len = true, c.invalid = 0.02;
    run_fwd_case(c, ++salt);
  }
}

TEST_CASE("gpu sparse_mla_fwd: non-contiguous and misaligned q and out", "[gpu][sparse_mla]") {
  uint64_t salt = 0x5C33;
  for (int64_t pad : {8, 64, 3})
    for (int64_t off : {0, 8, 1}) {
      FwdCase c;
      c.h = pad == 3 ? 16 : 64, c.topk = 77, c.s_q = 6, c.s_kv = 200, c.q_head_pad = pad, c.q_offset = off;
      c.out_head_pad = off == 1 ? 1 : pad;
      c.f32_out = pad == 64;
      run_fwd_case(c, ++salt);
    }
}

TEST_CASE("gpu sparse_mla_fwd: s_q = 70000 (grid and int64 offsets)", "[gpu][sparse_mla]") {
  FwdCase c;
  c.s_q = 70000, c.h = 2, c.topk = 40, c.s_kv = 4096, c.check_determinism = false;
  run_fwd_case(c, 0x5D44);
}

TEST_CASE("gpu sparse_mla_fwd: a token's results do not depend on the other tokens", "[gpu][sparse_mla]") {
  // Run 8 tokens together, then token 5 alone (its own views): bitwise equal.
  test::Rng rng(0x5E55);
  const int64_t s_q = 8, h = 128, s_kv = 500, topk = 300;
  Mirror q(s_q * h * 576 * 2), kv(s_kv * 576 * 2), ind(s_q * topk * 4);
  fill_bf16(q, test::randn_bf16(rng, static_cast<size_t>(s_q * h * 576)));
  fill_bf16(kv, test::randn_bf16(rng, static_cast<size_t>(s_kv * 576)));
  for (int64_t i = 0; i < s_q * topk; ++i)
    ind.host_as<int32_t>()[i] = rng.uniform() < 0.1 ? -1 : static_cast<int32_t>(rng.integer(0, s_kv - 1));
  q.upload(), kv.upload(), ind.upload();
  Mirror out(s_q * h * 512 * 2), lse(s_q * h * 4);
  auto call = [&](int64_t t0, int64_t n) {
    SparseMlaFwdParams p;
    p.q = make_view(static_cast<uint8_t*>(q.dev()) + t0 * h * 576 * 2, DType::kBF16, {n, h, 576});
    p.kv = kv.view(true, DType::kBF16, {s_kv, 576});
    p.indices = make_view(static_cast<uint8_t*>(ind.dev()) + t0 * topk * 4, DType::kI32, {n, topk});
    p.out = make_view(static_cast<uint8_t*>(out.dev()) + t0 * h * 512 * 2, DType::kBF16, {n, h, 512});
    p.lse = make_view(static_cast<uint8_t*>(lse.dev()) + t0 * h * 4, DType::kF32, {n, h});
    p.sm_scale = kSoftmaxScaleV32;
    require_ok(run(p), "cuda");
    test::sync_ok();
  };
  out.poison(0xFF), lse.poison(0xFF);
  call(0, s_q);
  const auto all_out = out.download(), all_lse = lse.download();
  out.poison(0xFF), lse.poison(0xFF);
  call(5, 1);
  const auto one_out = out.download(), one_lse = lse.download();
  const size_t ob = 5 * h * 512 * 2, lb = 5 * h * 4;
  CHECK(std::equal(one_out.begin() + ob, one_out.begin() + ob + h * 512 * 2, all_out.begin() + ob));
  CHECK(std::equal(one_lse.begin() + lb, one_lse.begin() + lb + h * 4, all_lse.begin() + lb));
}

TEST_CASE("gpu sparse_mla_fwd: f32 inputs are rejected by the CUDA path with a clear message", "[gpu][sparse_mla]") {
  Mirror q(2 * 16 * 576 * 4), kv(8 * 576 * 4), ind(2 * 4 * 4), out(2 * 16 * 512 * 4), lse(2 * 16 * 4);
  out.poison(0xFF);
  SparseMlaFwdParams p;
  p.q = q.view(true, DType::kF32, {2, 16, 576});
  p.kv = kv.view(true, DType::kF32, {8, 576});
  p.indices = ind.view(true, DType::kI32, {2, 4});
  p.out = out.view(true, DType::kF32, {2, 16, 512});
  p.lse = lse.view(true, DType::kF32, {2, 16});
  p.sm_scale = kSoftmaxScaleV32;
  const Status s = run(p);
  INFO(s.message());
  CHECK(s.code() == StatusCode::kUnsupportedDtype);
  CHECK(s.message().find("q.dtype") != std::string::npos);
  test::sync_ok();
  const auto o = out.download();
  CHECK(std::all_of(o.begin(), o.end(), [](uint8_t b) { return b == 0xFF; }));
}

namespace {

void check_fwd_golden(const char* name) {
  auto g = test::load_golden(name);
  if (!g) return;
  const auto& gq = g->tensor("q");
  const auto& gkv = g->tensor("kv");
  const auto& gi = g->tensor("indices");
  const int64_t s_q = gq.shape[0], h = gq.shape[1], s_kv = gkv.shape[0], topk = gi.shape[1];
  Mirror q(gq.bytes.size()), kv(gkv.bytes.size()), ind(gi.bytes.size()), out(s_q * h * 512 * 2), lse(s_q * h * 4),
      ml(s_q * h * 4);
  std::memcpy(q.host(), gq.bytes.data(), gq.bytes.size());
  std::memcpy(kv.host(), gkv.bytes.data(), gkv.bytes.size());
  std::memcpy(ind.host(), gi.bytes.data(), gi.bytes.size());
  q.upload(), kv.upload(), ind.upload();
  out.poison(0xFF), lse.poison(0xFF), ml.poison(0xFF);
  SparseMlaFwdParams p;
  p.q = q.view(true, DType::kBF16, {s_q, h, 576});
  p.kv = kv.view(true, DType::kBF16, {s_kv, 576});
  p.indices = ind.view(true, DType::kI32, {s_q, topk});
  p.out = out.view(true, DType::kBF16, {s_q, h, 512});
  p.lse = lse.view(true, DType::kF32, {s_q, h});
  p.max_logits = ml.view(true, DType::kF32, {s_q, h});
  p.sm_scale = static_cast<float>(g->param("sm_scale"));
  require_ok(run(p), name);
  test::sync_ok();
  const size_t n_row = static_cast<size_t>(s_q * h);
  expect_close(test::compare(std::string(name) + " out", bf16_bytes_to_double(out.download()),
                             bf16_bytes_to_double(g->tensor("out").bytes), test::kPrefillOut));
  expect_close(test::compare(std::string(name) + " lse", f32_bytes_to_double(lse.download().data(), n_row),
                             f32_bytes_to_double(g->tensor("lse").bytes.data(), n_row), test::kPrefillLse));
  expect_close(test::compare(std::string(name) + " max_logits", f32_bytes_to_double(ml.download().data(), n_row),
                             f32_bytes_to_double(g->tensor("max_logits").bytes.data(), n_row), test::kPrefillLse));
}

}  // namespace

TEST_CASE("gpu sparse_mla_fwd matches the FlashMLA goldens", "[gpu][sparse_mla][golden]") {
  check_fwd_golden("flashmla_sparse_prefill_a");
  check_fwd_golden("flashmla_sparse_prefill_b");
}

// ---- decode ---------------------------------------------------------------------------------------

namespace {

struct DecCase {
  int64_t b = 2, s_q = 1, h = 128, topk = 64, P = 64, num_blocks = 8;
  bool fp8 = true, topk_len = false, flashmla_lse = false, sink = false, f32_out = false, base2 = false;
  double invalid = 0.1;
  int expect_split = -1;  // 1: workspace_size() > 0 (split-KV path), 0: == 0 (unsplit), −1: either
  int reruns = 1;         // extra runs that must reproduce the first bitwise
  int32_t num_splits = 1;  // SparseMlaDecodeParams::num_splits (0 automatic, 1 never, n ≥ 2)
};

int device_sm_count() {
  int dev = 0, sms = 0;
  GPU_REQUIRE(cudaGetDevice(&dev));
  GPU_REQUIRE(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

void run_dec_case(const DecCase& c, uint64_t salt) {
  test::Rng rng(salt);
  const int64_t b = c.b, s_q = c.s_q, h = c.h, topk = c.topk, P = c.P, nb = c.num_blocks, slots = nb * P;
  CAPTURE(b, s_q, h, topk, P, nb, c.fp8, c.topk_len, c.flashmla_lse, c.sink, c.f32_out, c.base2, c.expect_split);
  const int64_t row_bytes = c.fp8 ? 656 : 576 * 2;
  Mirror q(b * s_q * h * 576 * 2), cache(slots * row_bytes), ind(b * s_q * topk * 4), len(b * 4), sink(h * 4);
  {  // q: randn clamped to ±1 (SPEC §9.5 decode recipe)
    auto qv = test::randn_bf16(rng, static_cast<size_t>(b * s_q * h * 576), 1.0, 0.0, 1.0);
    fill_bf16(q, qv);
  }
  // The cache: every slot written from randn/10 (clamped ±1) through the library's cache writer.
  {
    auto lat = test::randn_bf16(rng, static_cast<size_t>(slots * 576), 0.1, 0.0, 1.0);
    std::vector<int32_t> map(static_cast<size_t>(slots));
    std::iota(map.begin(), map.end(), 0);
    MlaCacheWriteParams w;
    w.kv = make_view(lat.data(), DType::kBF16, {slots, 576});
    w.slot_mapping = make_view(map.data(), DType::kI32, {slots});
    w.cache = c.fp8 ? cache.view(false, DType::kU8, {nb, P, 656}) : cache.view(false, DType::kBF16, {nb, P, 576});
    require_ok(run(w), "cache write");
  }
  std::vector<char> used(static_cast<size_t>(slots), 0);
  int32_t* iv = ind.host_as<int32_t>();
  for (int64_t bi = 0; bi < b; ++bi) len.host_as<int32_t>()[bi] = static_cast<int32_t>(rng.integer(0, topk));
  for (int64_t r = 0; r < b * s_q; ++r) {
    const bool empty = rng.uniform() < 0.05;
    const int64_t n = c.topk_len ? len.host_as<int32_t>()[r / s_q] : topk;
    for (int64_t i = 0; i < topk; ++i) {
      int32_t v;
      if (empty || rng.uniform() < c.invalid)
        v = rng.uniform() < 0.5 ? -1 : random_sentinel(rng, slots);
      else
        v = static_cast<int32_t>(rng.integer(0, slots - 1));
      iv[r * topk + i] = v;
      if (i < n && v >= 0 && v < slots) used[static_cast<size_t>(v)] = 1;
    }
  }
  // NaN in every unreferenced slot (0xFF: NaN codes, NaN scales, NaN k^R / bf16).
  for (int64_t s = 0; s < slots; ++s)
    if (!used[static_cast<size_t>(s)]) std::memset(cache.host() + s * row_bytes, 0xFF, static_cast<size_t>(row_bytes));
  for (int64_t i = 0; i < h; ++i) sink.host_as<float>()[i] = static_cast<float>(rng.normal());
  q.upload(), cache.upload(), ind.upload(), len.upload(), sink.upload();

  const DType ot = c.f32_out ? DType::kF32 : DType::kBF16;
  Mirror out(b * s_q * h * 512 * dtype_size(ot)), lse(b * s_q * h * 4);
  // lse storage: [b, s_q, h] or FlashMLA's [b, h, s_q].
  const int64_t ls0 = c.flashmla_lse ? h * s_q : s_q * h, ls1 = c.flashmla_lse ? 1 : h, ls2 = c.flashmla_lse ? s_q : 1;
  auto make = [&](bool dev, Mirror& o, Mirror& l, DType out_type) {
    SparseMlaDecodeParams p;
    p.q = q.view(dev, DType::kBF16, {b, s_q, h, 576});
    p.cache = c.fp8 ? cache.view(dev, DType::kU8, {nb, P, 656}) : cache.view(dev, DType::kBF16, {nb, P, 576});
    p.indices = ind.view(dev, DType::kI32, {b, s_q, topk});
    if (c.topk_len) p.topk_length = len.view(dev, DType::kI32, {b});
    if (c.sink) p.attn_sink = sink.view(dev, DType::kF32, {h});
    p.out = o.view(dev, out_type, {b, s_q, h, 512});
    p.lse = l.view(dev, DType::kF32, {b, s_q, h}, {ls0, ls1, ls2});
    p.sm_scale = std::pow(576.0f, -0.55f);
    p.lse_base = c.base2 ? LseBase::kBase2 : LseBase::kNatural;
    p.num_splits = c.num_splits;
    return p;
  };
  const size_t ws_bytes = workspace_size(make(true, out, lse, ot));
  CAPTURE(ws_bytes);
  if (c.expect_split == 1) REQUIRE(ws_bytes > 0);
  if (c.expect_split == 0) REQUIRE(ws_bytes == 0);
  Mirror ws(ws_bytes);
  auto gpu_run = [&]() {
    out.poison(0xFF), lse.poison(0xFF);
    ws.poison(0xFF);  // partials must be fully rewritten by every run
    require_ok(run(make(true, out, lse, ot), ws.dev(), ws_bytes), "cuda");
    test::sync_ok();
    return std::make_pair(out.download(), lse.download());
  };
  const auto a = gpu_run();
  Mirror rout(b * s_q * h * 512 * 4), rlse(b * s_q * h * 4);
  rout.poison(0xFF), rlse.poison(0xFF);
  require_ok(ref::run(make(false, rout, rlse, DType::kF32), Accum::kF64), "reference");
  const size_t n_out = static_cast<size_t>(b * s_q * h * 512), n_row = static_cast<size_t>(b * s_q * h);
  const auto ro = f32_bytes_to_double(rout.host(), n_out);
  const auto ao = c.f32_out ? f32_bytes_to_double(a.first.data(), n_out) : bf16_bytes_to_double(a.first);
  expect_close(test::compare("decode out", ao, ro, test::kDecodeOut));
  expect_close(test::compare("decode lse", f32_bytes_to_double(a.second.data(), n_row),
                             f32_bytes_to_double(rlse.host(), n_row), test::kDecodeLse));
  int64_t nan = 0;
  for (double v : ao) nan += std::isnan(v) ? 1 : 0;
  CHECK(nan == 0);
  for (int k = 0; k < c.reruns; ++k) {
    const auto again = gpu_run();
    CHECK(again.first == a.first);
    CHECK(again.second == a.second);
  }
}

}  // namespace

TEST_CASE("gpu sparse_mla_decode matches the CPU reference (FP8 and bf16 caches, NaN in unused slots)",
          "[gpu][sparse_mla]") {
  uint64_t salt = 0xDEC0;
  for (bool fp8 : {true, false})
    for (int64_t h : {1, 16, 64, 128}) {
      DecCase c;
      c.fp8 = fp8, c.h = h, c.b = 3, c.s_q = 2, c.topk = h == 128 ? 512 : 70, c.P = 64, c.num_blocks = 12;
      run_dec_case(c, ++salt);
    }
  {
    DecCase c;  // FlashMLA lse layout, topk_length, P = 1 and odd pages
    c.flashmla_lse = true, c.topk_len = true, c.b = 4, c.s_q = 3, c.h = 32, c.topk = 100, c.P = 1, c.num_blocks = 300;
    run_dec_case(c, ++salt);
  }
  {
    DecCase c;
    c.flashmla_lse = true, c.sink = true, c.f32_out = true, c.b = 2, c.s_q = 1, c.h = 100, c.topk = 33, c.P = 7,
    c.num_blocks = 9;
    run_dec_case(c, ++salt);
  }
  {
    DecCase c;  // bf16 cache, many tokens, long lists
    c.fp8 = false, c.b = 16, c.s_q = 2, c.h = 64, c.topk = 2048, c.P = 64, c.num_blocks = 40, c.topk_len = true;
    run_dec_case(c, ++salt);
  }
}

TEST_CASE("gpu sparse_mla_decode split-KV (automatic, small batches) matches the CPU reference", "[gpu][sparse_mla]") {
  uint64_t salt = 0x5B17;
  struct S {
    bool fp8;
    int64_t b, s_q, h, topk;
    bool topk_len, sink, f32_out, flashmla_lse, base2;
  };
  const S shapes[] = {
      {true, 1, 1, 128, 2048, true, false, false, false, false},
      {true, 2, 2, 64, 2048, false, false, false, true, false},
      {false, 2, 4, 16, 2048, true, false, false, false, true},
      {false, 1, 3, 128, 2048, false, false, false, false, false},
      {true, 2, 1, 16, 2048, true, true, true, true, false},
      {true, 1, 2, 100, 2000, true, true, false, false, true},
      {false, 2, 2, 128, 1000, false, false, true, false, false},
  };
  for (const S& x : shapes) {
    DecCase c;
    c.fp8 = x.fp8, c.b = x.b, c.s_q = x.s_q, c.h = x.h, c.topk = x.topk, c.topk_len = x.topk_len, c.sink = x.sink;
    c.f32_out = x.f32_out, c.flashmla_lse = x.flashmla_lse, c.base2 = x.base2, c.P = 64, c.num_blocks = 80, c.expect_split = 1;
    c.num_splits = 0;
    run_dec_case(c, ++salt);
  }
}

TEST_CASE("gpu sparse_mla_decode explicit num_splits matches the CPU reference", "[gpu][sparse_mla]") {
  uint64_t salt = 0x5B27;
  struct S {
    bool fp8;
    int64_t b, h, topk;
    int32_t n;
    int expect_split;
  };
  // topk 2000 = 63 chunks: n 4 → 16-chunk splits (the last 15), n 64 → 63 one-chunk splits; topk 33
  // = 2 chunks: n 7 → 2 splits; topk 20 = 1 chunk: n 5 stays unsplit; b 40, h 64 (80 blocks, where
  // automatic would not split), topk 192 = 6 chunks: n 3 → 3 two-chunk splits.
  const S shapes[] = {
      {true, 1, 128, 2000, 4, 1}, {false, 2, 16, 2000, 64, 1}, {true, 2, 64, 33, 7, 1},
      {false, 1, 100, 20, 5, 0},  {true, 40, 64, 192, 3, 1},
  };
  for (const S& x : shapes) {
    DecCase c;
    c.fp8 = x.fp8, c.b = x.b, c.s_q = 2, c.h = x.h, c.topk = x.topk, c.topk_len = true, c.sink = x.fp8;
    c.base2 = !x.fp8, c.P = 64, c.num_blocks = 80, c.num_splits = x.n, c.expect_split = x.expect_split, c.reruns = 1;
    CAPTURE(x.n, x.topk, x.b);
    run_dec_case(c, ++salt);
  }
}

TEST_CASE("gpu sparse_mla_decode split-KV is bitwise reproducible", "[gpu][sparse_mla]") {
  for (bool fp8 : {true, false}) {
    DecCase c;
    c.fp8 = fp8, c.b = 1, c.s_q = 2, c.h = 128, c.topk = 2048, c.P = 64, c.num_blocks = 64, c.topk_len = true;
    c.expect_split = 1, c.reruns = 4, c.num_splits = 0;
    run_dec_case(c, fp8 ? 0xD371 : 0xD372);
  }
}

// SPEC D11: with a fixed num_splits (1, the default, or n ≥ 2) a request's out and lse bits do not
// depend on the batch it runs in (b 1, b 8 at an offset, b 64); automatic splitting (0) is only
// checked against the CPU reference (its split count, hence its last bits, follows the batch).
TEST_CASE("gpu sparse_mla_decode is batch-invariant for num_splits 1 and 4, automatic matches the reference",
          "[gpu][sparse_mla]") {
  struct Cfg {
    bool fp8;
    int64_t h, topk;
  };
  for (const Cfg& cfg : {Cfg{true, 128, 2048}, Cfg{false, 16, 1000}}) {
    CAPTURE(cfg.fp8, cfg.h, cfg.topk);
    test::Rng rng(cfg.fp8 ? 0xB1A5 : 0xB1A6);
    const int64_t B = 64, s_q = 2, h = cfg.h, topk = cfg.topk, P = 64, nb = 96, slots = nb * P;
    const int64_t row_bytes = cfg.fp8 ? 656 : 1152;
    Mirror q(B * s_q * h * 576 * 2), cache(slots * row_bytes), ind(B * s_q * topk * 4), len(B * 4), sink(h * 4);
    fill_bf16(q, test::randn_bf16(rng, static_cast<size_t>(B * s_q * h * 576), 1.0, 0.0, 1.0));
    {
      auto lat = test::randn_bf16(rng, static_cast<size_t>(slots * 576), 0.1, 0.0, 1.0);
      std::vector<int32_t> map(static_cast<size_t>(slots));
      std::iota(map.begin(), map.end(), 0);
      MlaCacheWriteParams w;
      w.kv = make_view(lat.data(), DType::kBF16, {slots, 576});
      w.slot_mapping = make_view(map.data(), DType::kI32, {slots});
      w.cache = cfg.fp8 ? cache.view(false, DType::kU8, {nb, P, 656}) : cache.view(false, DType::kBF16, {nb, P, 576});
      require_ok(run(w), "cache write");
    }
    for (int64_t i = 0; i < B * s_q * topk; ++i)
      ind.host_as<int32_t>()[i] = rng.uniform() < 0.05 ? -1 : static_cast<int32_t>(rng.integer(0, slots - 1));
    // Mostly full lists; some short ones leave their last splits empty.
    for (int64_t r = 0; r < B; ++r)
      len.host_as<int32_t>()[r] = static_cast<int32_t>(rng.uniform() < 0.7 ? topk : rng.integer(0, topk));
    len.host_as<int32_t>()[45] = static_cast<int32_t>(topk);
    len.host_as<int32_t>()[46] = static_cast<int32_t>(topk / 3);
    for (int64_t i = 0; i < h; ++i) sink.host_as<float>()[i] = static_cast<float>(rng.normal());
    q.upload(), cache.upload(), ind.upload(), len.upload(), sink.upload();

    // Requests [r0, r0 + n) as a batch of n (views at an offset into the shared inputs).
    const int64_t q_per = s_q * h * 576 * 2, i_per = s_q * topk * 4, o_per = s_q * h * 512 * 2, l_per = s_q * h * 4;
    auto params = [&](bool dev, int64_t r0, int64_t n, void* out, void* lse, DType ot) {
      auto at = [&](Mirror& m, int64_t off) { return (dev ? static_cast<uint8_t*>(m.dev()) : m.host()) + off; };
      SparseMlaDecodeParams p;
      p.q = make_view(at(q, r0 * q_per), DType::kBF16, {n, s_q, h, 576});
      p.cache = cfg.fp8 ? cache.view(dev, DType::kU8, {nb, P, 656}) : cache.view(dev, DType::kBF16, {nb, P, 576});
      p.indices = make_view(at(ind, r0 * i_per), DType::kI32, {n, s_q, topk});
      p.topk_length = make_view(at(len, r0 * 4), DType::kI32, {n});
      p.attn_sink = sink.view(dev, DType::kF32, {h});
      p.out = make_view(out, ot, {n, s_q, h, 512});
      p.lse = make_view(lse, DType::kF32, {n, s_q, h});
      p.sm_scale = kSoftmaxScaleV32;
      return p;
    };
    auto gpu = [&](int64_t r0, int64_t n, int32_t splits, size_t* ws_bytes) {
      Mirror out(n * o_per), lse(n * l_per);
      SparseMlaDecodeParams p = params(true, r0, n, out.dev(), lse.dev(), DType::kBF16);
      p.num_splits = splits;
      *ws_bytes = workspace_size(p);
      Mirror ws(*ws_bytes);
      out.poison(0xFF), lse.poison(0xFF), ws.poison(0xFF);
      require_ok(run(p, ws.dev(), *ws_bytes), "cuda");
      test::sync_ok();
      return std::make_pair(out.download(), lse.download());
    };
    auto slice = [](const std::vector<uint8_t>& v, int64_t first, int64_t count, int64_t per) {
      return std::vector<uint8_t>(v.begin() + first * per, v.begin() + (first + count) * per);
    };
    // The CPU reference (float64) of request 45, against which its b 1 split runs are checked.
    const size_t n_out = static_cast<size_t>(s_q * h * 512), n_row = static_cast<size_t>(s_q * h);
    std::vector<float> rout(n_out), rlse(n_row);
    std::memset(rout.data(), 0xFF, n_out * 4), std::memset(rlse.data(), 0xFF, n_row * 4);
    require_ok(ref::run(params(false, 45, 1, rout.data(), rlse.data(), DType::kF32), Accum::kF64), "reference");
    auto expect_matches_reference = [&](const std::pair<std::vector<uint8_t>, std::vector<uint8_t>>& got) {
      expect_close(test::compare("decode out", bf16_bytes_to_double(got.first),
                                 f32_bytes_to_double(reinterpret_cast<const uint8_t*>(rout.data()), n_out),
                                 test::kDecodeOut));
      expect_close(test::compare("decode lse", f32_bytes_to_double(got.second.data(), n_row),
                                 f32_bytes_to_double(reinterpret_cast<const uint8_t*>(rlse.data()), n_row),
                                 test::kDecodeLse));
    };
    for (int32_t splits : {1, 4}) {
      CAPTURE(splits);
      size_t ws64 = 0, ws8 = 0, ws1 = 0, ws1b = 0;
      const auto all = gpu(0, B, splits, &ws64);
      const auto eight = gpu(40, 8, splits, &ws8);  // requests 40..47
      const auto one = gpu(45, 1, splits, &ws1);    // full topk_length
      const auto short_one = gpu(46, 1, splits, &ws1b);  // topk / 3: empty trailing splits
      CHECK((ws64 > 0) == (splits > 1));
      CHECK((ws8 > 0) == (splits > 1));
      CHECK((ws1 > 0) == (splits > 1));
      CHECK(eight.first == slice(all.first, 40, 8, o_per));
      CHECK(eight.second == slice(all.second, 40, 8, l_per));
      CHECK(one.first == slice(all.first, 45, 1, o_per));
      CHECK(one.second == slice(all.second, 45, 1, l_per));
      CHECK(one.first == slice(eight.first, 5, 1, o_per));
      CHECK(one.second == slice(eight.second, 5, 1, l_per));
      CHECK(short_one.first == slice(all.first, 46, 1, o_per));
      CHECK(short_one.second == slice(all.second, 46, 1, l_per));
      if (splits == 4) expect_matches_reference(one);
    }
    {
      // Automatic: b 1 splits (a few blocks), b 64 does not (≥ half a wave on an H200).
      size_t ws1 = 0, ws64 = 0;
      const auto one = gpu(45, 1, 0, &ws1);
      const auto all = gpu(0, B, 0, &ws64);
      CHECK(ws1 > 0);
      if (B * s_q * ((h + 63) / 64) > device_sm_count() / 2) CHECK(ws64 == 0);
      expect_matches_reference(one);
      (void)all;
    }
  }
}

TEST_CASE("gpu sparse_mla_decode unsplit path (num_splits 1, or automatic at grids of at least half a wave)",
          "[gpu][sparse_mla]") {
  const int sms = device_sm_count();
  {
    DecCase c;  // h 16: one group per token; b·s_q > sm_count / 2 keeps the unsplit kernel
    c.fp8 = true, c.s_q = 2, c.h = 16, c.b = sms / 4 + 1, c.topk = 256, c.P = 64, c.num_blocks = 40;
    c.topk_len = true, c.expect_split = 0, c.num_splits = 0;
    run_dec_case(c, 0x0A51);
  }
  {
    DecCase c;  // h 128: two groups per token
    c.fp8 = false, c.s_q = 1, c.h = 128, c.b = sms / 4 + 1, c.topk = 128, c.P = 64, c.num_blocks = 40;
    c.sink = true, c.base2 = true, c.expect_split = 0, c.num_splits = 0;
    run_dec_case(c, 0x0A52);
  }
  {
    DecCase c;  // the default num_splits = 1 never splits, even a one-token batch
    c.fp8 = true, c.b = 1, c.s_q = 1, c.h = 128, c.topk = 2048, c.P = 64, c.num_blocks = 40, c.topk_len = true;
    c.expect_split = 0;
    run_dec_case(c, 0x0A53);
  }
}

TEST_CASE("gpu sparse_mla_decode rejects a too-small workspace", "[gpu][sparse_mla]") {
  const int64_t b = 1, s_q = 1, h = 128, topk = 2048, P = 64, nb = 64;
  Mirror q(b * s_q * h * 576 * 2), cache(nb * P * 656), ind(b * s_q * topk * 4), out(b * s_q * h * 512 * 2),
      lse(b * s_q * h * 4);
  std::memset(q.host(), 0, q.bytes());
  std::memset(cache.host(), 0, cache.bytes());
  for (int64_t i = 0; i < topk; ++i) ind.host_as<int32_t>()[i] = static_cast<int32_t>(i);
  q.upload(), cache.upload(), ind.upload();
  SparseMlaDecodeParams p;
  p.q = q.view(true, DType::kBF16, {b, s_q, h, 576});
  p.cache = cache.view(true, DType::kU8, {nb, P, 656});
  p.indices = ind.view(true, DType::kI32, {b, s_q, topk});
  p.out = out.view(true, DType::kBF16, {b, s_q, h, 512});
  p.lse = lse.view(true, DType::kF32, {b, s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
  p.num_splits = 0;  // automatic: b 1 splits
  const size_t need = workspace_size(p);
  REQUIRE(need > 0);
  CHECK(need % 256 == 0);
  Mirror ws(need);
  for (size_t have : {size_t{0}, need - 1}) {
    const Status s = run(p, have ? ws.dev() : nullptr, have);
    INFO(s.message());
    CHECK(s.code() == StatusCode::kWorkspaceTooSmall);
    CHECK(s.message().find("workspace") != std::string::npos);
  }
  require_ok(run(p, ws.dev(), need), "exact workspace");
  test::sync_ok();
}

TEST_CASE("gpu sparse_mla_decode matches the FlashMLA FP8 golden", "[gpu][sparse_mla][golden]") {
  auto g = test::load_golden("flashmla_sparse_decode_fp8");
  if (!g) return;
  const auto& gq = g->tensor("q");
  const auto& gc = g->tensor("k_cache");
  const auto& gi = g->tensor("indices");
  const int64_t b = gq.shape[0], s_q = gq.shape[1], h = gq.shape[2], topk = gi.shape[2];
  const int64_t nb = gc.shape[0], P = gc.shape[1];
  Mirror q(gq.bytes.size()), cache(gc.bytes.size()), ind(gi.bytes.size()), out(b * s_q * h * 512 * 2),
      lse(b * s_q * h * 4);
  std::memcpy(q.host(), gq.bytes.data(), gq.bytes.size());
  std::memcpy(cache.host(), gc.bytes.data(), gc.bytes.size());
  std::memcpy(ind.host(), gi.bytes.data(), gi.bytes.size());
  q.upload(), cache.upload(), ind.upload();
  out.poison(0xFF), lse.poison(0xFF);
  SparseMlaDecodeParams p;
  p.q = q.view(true, DType::kBF16, {b, s_q, h, 576});
  p.cache = cache.view(true, DType::kU8, {nb, P, 656});
  p.indices = ind.view(true, DType::kI32, {b, s_q, topk});
  p.out = out.view(true, DType::kBF16, {b, s_q, h, 512});
  // The golden lse is stored [b, h_q, s_q]: logical [b, s_q, h_q] with strides (h·s_q, 1, s_q).
  p.lse = lse.view(true, DType::kF32, {b, s_q, h}, {h * s_q, 1, s_q});
  p.sm_scale = static_cast<float>(g->param("sm_scale"));
  for (int32_t splits : {1, 0}) {  // never split (default) and automatic
    CAPTURE(splits);
    p.num_splits = splits;
    out.poison(0xFF), lse.poison(0xFF);
    const size_t ws_bytes = workspace_size(p);
    Mirror ws(ws_bytes);
    require_ok(run(p, ws.dev(), ws_bytes), "cuda");
    test::sync_ok();
    const size_t n_row = static_cast<size_t>(b * s_q * h);
    expect_close(test::compare("decode golden out", bf16_bytes_to_double(out.download()),
                               bf16_bytes_to_double(g->tensor("out").bytes), test::kDecodeOut));
    expect_close(test::compare("decode golden lse", f32_bytes_to_double(lse.download().data(), n_row),
                               f32_bytes_to_double(g->tensor("lse").bytes.data(), n_row), test::kDecodeLse));
  }
}

// ---- dense MLA forward (the same kernel over the implicit index list [ks, ke)) ------------------

namespace {

void run_dense_case(int64_t s_q, int64_t h, int64_t s_kv, bool causal, uint64_t salt) {
  test::Rng rng(salt);
  CAPTURE(s_q, h, s_kv, causal);
  Mirror q(s_q * h * 576 * 2), kv(s_kv * 576 * 2), ks(s_q * 4), ke(s_q * 4);
  fill_bf16(q, test::randn_bf16(rng, static_cast<size_t>(s_q * h * 576)));
  fill_bf16(kv, test::randn_bf16(rng, static_cast<size_t>(s_kv * 576)));
  for (int64_t t = 0; t < s_q; ++t) {
    int32_t lo, hi;
    if (causal) {  // a ragged batch packed at the end of the keys: sequences of 1–40 query tokens
      const int64_t pos = s_kv - s_q + t;
      lo = static_cast<int32_t>(std::max<int64_t>(0, pos - rng.integer(0, 2 * s_kv)));
      hi = static_cast<int32_t>(pos + 1);
    } else {
      lo = static_cast<int32_t>(rng.integer(0, s_kv));
      hi = rng.uniform() < 0.1 ? lo : static_cast<int32_t>(rng.integer(lo, s_kv));  // ~10% empty
    }
    ks.host_as<int32_t>()[t] = lo;
    ke.host_as<int32_t>()[t] = hi;
  }
  q.upload(), kv.upload(), ks.upload(), ke.upload();
  Mirror out(s_q * h * 512 * 2), lse(s_q * h * 4), ml(s_q * h * 4);
  auto make = [&](bool dev, Mirror& o, Mirror& l, Mirror& m, DType ot) {
    DenseMlaFwdParams p;
    p.q = q.view(dev, DType::kBF16, {s_q, h, 576});
    p.kv = kv.view(dev, DType::kBF16, {s_kv, 576});
    p.ks = ks.view(dev, DType::kI32, {s_q});
    p.ke = ke.view(dev, DType::kI32, {s_q});
    p.out = o.view(dev, ot, {s_q, h, 512});
    p.lse = l.view(dev, DType::kF32, {s_q, h});
    p.max_logits = m.view(dev, DType::kF32, {s_q, h});
    p.sm_scale = kSoftmaxScaleV32;
    return p;
  };
  out.poison(0xFF), lse.poison(0xFF), ml.poison(0xFF);
  require_ok(run(make(true, out, lse, ml, DType::kBF16)), "cuda");
  test::sync_ok();
  Mirror rout(s_q * h * 512 * 4), rlse(s_q * h * 4), rml(s_q * h * 4);
  require_ok(ref::run(make(false, rout, rlse, rml, DType::kF32), Accum::kF64), "reference");
  const size_t n_out = static_cast<size_t>(s_q * h * 512), n_row = static_cast<size_t>(s_q * h);
  expect_close(test::compare("dense out", bf16_bytes_to_double(out.download()), f32_bytes_to_double(rout.host(), n_out),
                             test::kPrefillOut));
  expect_close(test::compare("dense lse", f32_bytes_to_double(lse.download().data(), n_row),
                             f32_bytes_to_double(rlse.host(), n_row), test::kPrefillLse));
  expect_close(test::compare("dense max_logits", f32_bytes_to_double(ml.download().data(), n_row),
                             f32_bytes_to_double(rml.host(), n_row), test::kPrefillLse));
}

}  // namespace

TEST_CASE("gpu dense_mla_fwd matches the CPU reference (causal and random ranges, empty ranges)",
          "[gpu][sparse_mla][dense_mla]") {
  uint64_t salt = 0xDE45;
  run_dense_case(9, 128, 1500, true, ++salt);
  run_dense_case(13, 16, 700, false, ++salt);
  run_dense_case(7, 64, 3000, false, ++salt);
  run_dense_case(5, 5, 90, true, ++salt);
}

TEST_CASE("gpu sparse_mla_decode: CUDA-graph capture gives the direct run's bits", "[gpu][sparse_mla][graph]") {
  test::Rng rng(0x6A77);
  const int64_t b = 3, s_q = 2, h = 64, topk = 256, P = 16, nb = 20, slots = nb * P;
  Mirror q(b * s_q * h * 576 * 2), cache(slots * 656), ind(b * s_q * topk * 4), out(b * s_q * h * 512 * 2),
      lse(b * s_q * h * 4);
  fill_bf16(q, test::randn_bf16(rng, static_cast<size_t>(b * s_q * h * 576), 1.0, 0.0, 1.0));
  {
    auto lat = test::randn_bf16(rng, static_cast<size_t>(slots * 576), 0.1, 0.0, 1.0);
    std::vector<int32_t> map(static_cast<size_t>(slots));
    std::iota(map.begin(), map.end(), 0);
    MlaCacheWriteParams w;
    w.kv = make_view(lat.data(), DType::kBF16, {slots, 576});
    w.slot_mapping = make_view(map.data(), DType::kI32, {slots});
    w.cache = cache.view(false, DType::kU8, {nb, P, 656});
    require_ok(run(w), "cache write");
  }
  for (int64_t i = 0; i < b * s_q * topk; ++i)
    ind.host_as<int32_t>()[i] = rng.uniform() < 0.1 ? -1 : static_cast<int32_t>(rng.integer(0, slots - 1));
  q.upload(), cache.upload(), ind.upload();
  SparseMlaDecodeParams p;
  p.q = q.view(true, DType::kBF16, {b, s_q, h, 576});
  p.cache = cache.view(true, DType::kU8, {nb, P, 656});
  p.indices = ind.view(true, DType::kI32, {b, s_q, topk});
  p.out = out.view(true, DType::kBF16, {b, s_q, h, 512});
  p.lse = lse.view(true, DType::kF32, {b, s_q, h});
  p.sm_scale = kSoftmaxScaleV32;
  p.num_splits = 0;                           // automatic:
  const size_t ws_bytes = workspace_size(p);  // 6 blocks × 8 key chunks: the split-KV path (2 splits)
  REQUIRE(ws_bytes > 0);
  Mirror ws(ws_bytes);
  out.poison(0xFF), lse.poison(0xFF);
  require_ok(run(p, ws.dev(), ws_bytes), "direct");
  test::sync_ok();
  const auto direct_out = out.download(), direct_lse = lse.download();
  out.poison(0xFF), lse.poison(0xFF);
  cudaStream_t stream = nullptr;
  GPU_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  GPU_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status s = run(p, ws.dev(), ws_bytes, stream);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  require_ok(s, "captured run");
  GPU_REQUIRE(end);
  cudaGraphExec_t exec;
  GPU_REQUIRE(cudaGraphInstantiate(&exec, graph, 0));
  GPU_REQUIRE(cudaGraphLaunch(exec, stream));
  GPU_REQUIRE(cudaStreamSynchronize(stream));
  CHECK(out.download() == direct_out);
  CHECK(lse.download() == direct_lse);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// ---- sm_90a wgmma prefill kernel (cuda/attention/sparse_mla_wgmma.cu) ------------------------------

namespace dsa {
// Test hooks of cuda/attention/sparse_mla_wgmma.cu: −1 follows DSA_SPARSE_MLA_WGMMA, 0 forces the
// mma.sync prefill kernel, 1 allows the wgmma kernel; whether it is taken now (h_q % 64 == 0).
void sparse_mla_wgmma_for_testing(int mode);
bool sparse_mla_wgmma_active();
}  // namespace dsa

namespace {

// Sets the override for one scope; restores "follow the environment" on exit.
struct SmlaWgmmaMode {
  explicit SmlaWgmmaMode(int mode) { sparse_mla_wgmma_for_testing(mode); }
  ~SmlaWgmmaMode() { sparse_mla_wgmma_for_testing(-1); }
};

}  // namespace

TEST_CASE("gpu sparse_mla_fwd: one-hot layout self-check (wgmma and mma.sync kernels)", "[gpu][sparse_mla]") {
  std::printf("sparse_mla_fwd prefill: wgmma kernel %s on this device/build\n",
              sparse_mla_wgmma_active() ? "available" : "NOT available");
  // Token t has one valid slot p_t (in any tile, any position) → key j_t; head h's q is 1 at dim
  // d(h) = 7h mod 576 and 0 elsewhere. Then P = 1 for that key exactly: out[t, h, :] = kv[j_t, :512]
  // bitwise, lse = kv[j_t, d(h)]·τ, max_logits the same. A wrong Q / K / V / P layout, key column
  // or output column shows up as a wrong value here.
  test::Rng rng(0x0E01);
  for (int mode : {1, 0})
    for (int64_t h : {64, 128}) {
      SmlaWgmmaMode guard(mode);
      const int64_t s_q = 24, s_kv = 300, topk = 192;
      CAPTURE(mode, h);
      Mirror q(s_q * h * 576 * 2), kv(s_kv * 576 * 2), ind(s_q * topk * 4), out(s_q * h * 512 * 2), lse(s_q * h * 4),
          ml(s_q * h * 4);
      std::memset(q.host(), 0, s_q * h * 576 * 2);
      uint16_t* qh = reinterpret_cast<uint16_t*>(q.host());
      for (int64_t t = 0; t < s_q; ++t)
        for (int64_t j = 0; j < h; ++j) qh[(t * h + j) * 576 + (7 * j) % 576] = 0x3F80;  // bf16 1.0
      const auto kvv = test::randn_bf16(rng, static_cast<size_t>(s_kv * 576), 1.0, 0.5);
      fill_bf16(kv, kvv);
      std::vector<int64_t> key(s_q);
      int32_t* iv = ind.host_as<int32_t>();
      for (int64_t t = 0; t < s_q; ++t) {
        for (int64_t i = 0; i < topk; ++i) iv[t * topk + i] = i % 2 ? -1 : static_cast<int32_t>(s_kv + i);
        const int64_t pos = t < 8 ? t * 25 : rng.integer(0, topk - 1);  // 0, 25, …, 175: all tiles
        key[t] = rng.integer(0, s_kv - 1);
        iv[t * topk + pos] = static_cast<int32_t>(key[t]);
      }
      q.upload(), kv.upload(), ind.upload();
      out.poison(0xFF), lse.poison(0xFF), ml.poison(0xFF);
      SparseMlaFwdParams p;
      p.q = q.view(true, DType::kBF16, {s_q, h, 576});
      p.kv = kv.view(true, DType::kBF16, {s_kv, 576});
      p.indices = ind.view(true, DType::kI32, {s_q, topk});
      p.out = out.view(true, DType::kBF16, {s_q, h, 512});
      p.lse = lse.view(true, DType::kF32, {s_q, h});
      p.max_logits = ml.view(true, DType::kF32, {s_q, h});
      p.sm_scale = kSoftmaxScaleV32;
      require_ok(run(p), "cuda");
      test::sync_ok();
      const auto ob = out.download(), lb = lse.download(), mb = ml.download();
      int64_t bad_out = 0, bad_lse = 0;
      for (int64_t t = 0; t < s_q; ++t)
        for (int64_t j = 0; j < h; ++j) {
          if (std::memcmp(ob.data() + (t * h + j) * 1024, kv.host() + key[t] * 1152, 1024) != 0) ++bad_out;
          const double want = bf16_to_float(kvv[key[t] * 576 + (7 * j) % 576]) * static_cast<double>(kSoftmaxScaleV32);
          float l, m;
          std::memcpy(&l, lb.data() + (t * h + j) * 4, 4);
          std::memcpy(&m, mb.data() + (t * h + j) * 4, 4);
          if (!(std::fabs(l - want) <= 1e-6 + 1e-6 * std::fabs(want)) ||
              !(std::fabs(m - want) <= 1e-6 + 1e-6 * std::fabs(want)))
            ++bad_lse;
        }
      CHECK(bad_out == 0);
      CHECK(bad_lse == 0);
    }
}

TEST_CASE("gpu sparse_mla_fwd: wgmma and mma.sync kernels both match the CPU reference (h 64, 128)",
          "[gpu][sparse_mla]") {
  CAPTURE(sparse_mla_wgmma_active());
  for (int mode : {1, 0}) {
    SmlaWgmmaMode guard(mode);
    CAPTURE(mode);
    uint64_t salt = 0x5F66;
    for (int64_t h : {64, 128}) {
      for (int64_t topk : {64, 2048}) {
        FwdCase c;  // −1 and other sentinels, empty rows, bitwise reruns
        c.h = h, c.topk = topk, c.s_q = topk == 64 ? 9 : 2, c.s_kv = topk == 64 ? 700 : 8192, c.invalid = 0.15;
        c.empty_rows = 0.1;
        run_fwd_case(c, ++salt);
      }
      {
        FwdCase c;  // topk_length, sink, s_kv < topk (duplicate keys)
        c.h = h, c.topk = 200, c.s_q = 7, c.s_kv = 90, c.topk_len = true, c.sink = true, c.invalid = 0.05;
        run_fwd_case(c, ++salt);
      }
      {
        FwdCase c;  // f32 out, base-2 lse, no max_logits, strided q, odd out head stride (no paired stores)
        c.h = h, c.topk = 130, c.s_q = 5, c.s_kv = 400, c.f32_out = true, c.base2 = true, c.max_logits = false;
        c.q_head_pad = 8, c.q_offset = 8, c.out_head_pad = 1;
        run_fwd_case(c, ++salt);
      }
      {
        FwdCase c;  // every row empty
        c.h = h, c.topk = 100, c.s_q = 3, c.s_kv = 100, c.empty_rows = 1.0;
        run_fwd_case(c, ++salt);
      }
    }
  }
}

// ---- sm_90a wgmma decode (the same kernel over the paged FP8 / bf16 caches) -------------------------

TEST_CASE("gpu sparse_mla_decode: one-hot layout self-check (wgmma and mma.sync kernels, FP8 and bf16 caches)",
          "[gpu][sparse_mla]") {
  std::printf("sparse_mla_decode: wgmma kernel %s on this device/build\n",
              sparse_mla_wgmma_active() ? "available" : "NOT available");
  // Token t has one valid slot (any tile, any position) → cache slot k_t; head j's q is 1 at dim
  // d(j) = 7j mod 576. Then out[t, j, :] = the dequantized latent of k_t (bf16(e4m3 · scale) for
  // FP8, the stored bf16 otherwise) bitwise, lse = that row's value at d(j) · τ. Every other slot
  // holds NaN: a wrong gather, dequantization, scale index or layout shows up here.
  test::Rng rng(0x0E02);
  for (int mode : {1, 0})
    for (bool fp8 : {true, false})
      for (int64_t h : {64, 128}) {
        SmlaWgmmaMode guard(mode);
        const int64_t b = 3, s_q = 4, topk = 192, P = 16, nb = 24, slots = nb * P, rows = b * s_q;
        const int64_t row_bytes = fp8 ? 656 : 1152;
        CAPTURE(mode, fp8, h);
        Mirror q(rows * h * 576 * 2), cache(slots * row_bytes), ind(rows * topk * 4), out(rows * h * 512 * 2),
            lse(rows * h * 4);
        std::memset(q.host(), 0, static_cast<size_t>(rows * h * 576 * 2));
        uint16_t* qh = reinterpret_cast<uint16_t*>(q.host());
        for (int64_t t = 0; t < rows; ++t)
          for (int64_t j = 0; j < h; ++j) qh[(t * h + j) * 576 + (7 * j) % 576] = 0x3F80;  // bf16 1.0
        {
          const auto lat = test::randn_bf16(rng, static_cast<size_t>(slots * 576), 1.0, 0.5);
          std::vector<int32_t> map(static_cast<size_t>(slots));
          std::iota(map.begin(), map.end(), 0);
          MlaCacheWriteParams w;
          w.kv = make_view(lat.data(), DType::kBF16, {slots, 576});
          w.slot_mapping = make_view(map.data(), DType::kI32, {slots});
          w.cache = fp8 ? cache.view(false, DType::kU8, {nb, P, 656}) : cache.view(false, DType::kBF16, {nb, P, 576});
          require_ok(run(w), "cache write");
        }
        // The expected decoded row of slot k (576 bf16 bit patterns), from the cache bytes.
        auto decoded = [&](int64_t k) {
          std::vector<uint16_t> r(576);
          const uint8_t* row = cache.host() + k * row_bytes;
          if (!fp8) {
            std::memcpy(r.data(), row, 1152);
            return r;
          }
          for (int d = 0; d < 512; ++d) {
            float sc;
            std::memcpy(&sc, row + 512 + (d / 128) * 4, 4);
            r[static_cast<size_t>(d)] = float_to_bf16(e4m3_to_float(row[d]) * sc).bits;
          }
          std::memcpy(r.data() + 512, row + 528, 128);
          return r;
        };
        std::vector<int64_t> key(static_cast<size_t>(rows));
        std::vector<char> used(static_cast<size_t>(slots), 0);
        int32_t* iv = ind.host_as<int32_t>();
        for (int64_t t = 0; t < rows; ++t) {
          for (int64_t i = 0; i < topk; ++i) iv[t * topk + i] = i % 2 ? -1 : static_cast<int32_t>(slots + i);
          const int64_t pos = t < 8 ? t * 25 : rng.integer(0, topk - 1);  // 0, 25, …, 175: all tiles
          key[static_cast<size_t>(t)] = rng.integer(0, slots - 1);
          iv[t * topk + pos] = static_cast<int32_t>(key[static_cast<size_t>(t)]);
          used[static_cast<size_t>(key[static_cast<size_t>(t)])] = 1;
        }
        std::vector<std::vector<uint16_t>> want(static_cast<size_t>(rows));
        for (int64_t t = 0; t < rows; ++t) want[static_cast<size_t>(t)] = decoded(key[static_cast<size_t>(t)]);
        for (int64_t s = 0; s < slots; ++s)
          if (!used[static_cast<size_t>(s)]) std::memset(cache.host() + s * row_bytes, 0xFF, static_cast<size_t>(row_bytes));
        q.upload(), cache.upload(), ind.upload();
        out.poison(0xFF), lse.poison(0xFF);
        SparseMlaDecodeParams p;
        p.q = q.view(true, DType::kBF16, {b, s_q, h, 576});
        p.cache = fp8 ? cache.view(true, DType::kU8, {nb, P, 656}) : cache.view(true, DType::kBF16, {nb, P, 576});
        p.indices = ind.view(true, DType::kI32, {b, s_q, topk});
        p.out = out.view(true, DType::kBF16, {b, s_q, h, 512});
        p.lse = lse.view(true, DType::kF32, {b, s_q, h});
        p.sm_scale = kSoftmaxScaleV32;
        REQUIRE(workspace_size(p) == 0);
        require_ok(run(p, nullptr, 0), "cuda");
        test::sync_ok();
        const auto ob = out.download(), lb = lse.download();
        int64_t bad_out = 0, bad_lse = 0;
        for (int64_t t = 0; t < rows; ++t) {
          const auto& wr = want[static_cast<size_t>(t)];
          for (int64_t j = 0; j < h; ++j) {
            if (std::memcmp(ob.data() + (t * h + j) * 1024, wr.data(), 1024) != 0) ++bad_out;
            const double want_l =
                bf16_to_float(bf16_t{wr[static_cast<size_t>((7 * j) % 576)]}) * static_cast<double>(kSoftmaxScaleV32);
            float l;
            std::memcpy(&l, lb.data() + (t * h + j) * 4, 4);
            if (!(std::fabs(l - want_l) <= 1e-6 + 1e-6 * std::fabs(want_l))) ++bad_lse;
          }
        }
        CHECK(bad_out == 0);
        CHECK(bad_lse == 0);
      }
}

TEST_CASE("gpu sparse_mla_decode: wgmma and mma.sync kernels both match the CPU reference (h 64, 128, FP8, bf16)",
          "[gpu][sparse_mla]") {
  CAPTURE(sparse_mla_wgmma_active());
  for (int mode : {1, 0}) {
    SmlaWgmmaMode guard(mode);
    CAPTURE(mode);
    uint64_t salt = 0xDEC0;
    {  // FP8, topk 2048 with −1s and sentinels, topk_length, sink, NaN in unused slots
      DecCase c;
      c.fp8 = true, c.h = 128, c.b = 1, c.s_q = 1, c.topk = 2048, c.P = 64, c.num_blocks = 80;
      c.topk_len = true, c.sink = true, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
    {  // bf16 cache, s_q 3, FlashMLA lse layout, f32 out
      DecCase c;
      c.fp8 = false, c.h = 64, c.b = 1, c.s_q = 3, c.topk = 2048, c.P = 64, c.num_blocks = 64;
      c.topk_len = true, c.flashmla_lse = true, c.f32_out = true, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
    {  // FP8, h 64, s_q 4, short topk (partial tiles), sink, base-2 lse, P = 1
      DecCase c;
      c.fp8 = true, c.h = 64, c.b = 2, c.s_q = 4, c.topk = 300, c.P = 1, c.num_blocks = 900;
      c.sink = true, c.base2 = true, c.invalid = 0.2, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
    {  // bf16 cache, h 128, s_q 2, sink, odd page size
      DecCase c;
      c.fp8 = false, c.h = 128, c.b = 1, c.s_q = 2, c.topk = 1024, c.P = 7, c.num_blocks = 400;
      c.sink = true, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
    {  // split-KV (explicit 4): partials in the combine kernel's format
      DecCase c;
      c.fp8 = true, c.h = 128, c.b = 1, c.s_q = 2, c.topk = 2048, c.P = 64, c.num_blocks = 64;
      c.topk_len = true, c.sink = true, c.num_splits = 4, c.expect_split = 1, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
    {  // split-KV (automatic, one block), bf16, topk 1000 (last chunk partial), topk_length (empty splits)
      DecCase c;
      c.fp8 = false, c.h = 64, c.b = 1, c.s_q = 1, c.topk = 1000, c.P = 64, c.num_blocks = 40;
      c.topk_len = true, c.num_splits = 0, c.expect_split = 1, c.reruns = 2;
      run_dec_case(c, ++salt);
    }
  }
}
