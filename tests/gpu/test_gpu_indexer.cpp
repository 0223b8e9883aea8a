// GPU tests of OP-IDXLOGITS (SPEC §4.2 steps 7–8, §4.6, §7.2, §9.4, §12.3–12.4): the CUDA path
// (tensor cores for h_idx = 64, d_idx = 128; the general path otherwise) against the CPU reference
// (fp32 accumulation, the same e4m3 codes and scales, or the same bf16/f32 inputs) on fresh
// random data: ragged, causal, empty and 40K-long key ranges, heavy exact-zero ReLU plateaus,
// padded row strides, clean_logits off, every page size path, 1-D and 2-D context_lens.
//
// Per element: |cuda − ref| ≤ δ·max|ref row| with δ = 2e-3 (FP8 tensor cores; SPEC §9.4) or 1e-5
// (exact mode); cos_diff ≤ 5e-6 (FP8); the ±∞/NaN positions and bits equal exactly (the −∞ mask,
// and untouched entries with clean_logits off still hold the 0xFF poison on both sides). Outputs
// start poisoned (0xFF); reruns are bitwise identical, as is a run over a subset of the rows.
// DeepGEMM goldens: calc_diff < 5e-6 at the valid positions, −∞ elsewhere (prefill).
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

namespace dsa {
// Test hooks of cuda/indexer/indexer_logits_wgmma.cu: −1 follows DSA_INDEXER_WGMMA, 0 forces the
// mma.sync prefill kernel, 1 allows the sm_90a wgmma kernel; whether it is taken now.
void indexer_logits_wgmma_for_testing(int mode);
bool indexer_logits_wgmma_active();
// The same for the paged decode kernel of cuda/indexer/indexer_paged_wgmma.cu
// (DSA_INDEXER_PAGED_WGMMA; P a multiple of 64, next_n ≤ 4).
void indexer_paged_wgmma_for_testing(int mode);
bool indexer_paged_wgmma_active();
}  // namespace dsa

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<float> as_floats(const std::vector<uint8_t>& b) {
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

// Compares CUDA output `a` against the reference `r` (both rows × stride; columns [0, cols)).
// Non-finite reference entries (−∞ mask, poison) must match bitwise; finite ones within
// delta·max|ref row|. Returns the cos_diff over the finite entries.
double compare_rows(const std::vector<float>& a, const std::vector<float>& r, int64_t rows, int64_t cols,
                    int64_t stride, double delta, double* worst_out = nullptr) {
  int64_t special_bad = 0, bad = 0, first = -1;
  double worst_ratio = 0;
  std::vector<double> fa, fr;
  for (int64_t i = 0; i < rows; ++i) {
    double mx = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = r[i * stride + c];
      if (std::isfinite(v)) mx = std::max(mx, std::fabs(static_cast<double>(v)));
    }
    for (int64_t c = 0; c < cols; ++c) {
      const float rv = r[i * stride + c], av = a[i * stride + c];
      if (!std::isfinite(rv)) {
        if (bits_of(rv) != bits_of(av) && special_bad++ == 0 && first < 0) first = i * stride + c;
        continue;
      }
      const double err = std::isfinite(av) ? std::fabs(static_cast<double>(av) - rv) : INFINITY;
      if (!(err <= delta * mx)) {
        if (bad++ == 0 && first < 0) first = i * stride + c;
      }
      if (mx > 0) worst_ratio = std::max(worst_ratio, err / mx);
      fa.push_back(av);
      fr.push_back(rv);
    }
  }
  INFO("special mismatches " << special_bad << ", out-of-tolerance " << bad << ", worst |a-r|/max|row| "
                             << worst_ratio << " (limit " << delta << ")"
                             << (first >= 0 ? ", first at row " + std::to_string(first / stride) + " col " +
                                                  std::to_string(first % stride) + ": cuda " +
                                                  std::to_string(a[first]) + " ref " + std::to_string(r[first])
                                            : std::string()));
  CHECK(special_bad == 0);
  CHECK(bad == 0);
  if (worst_out) *worst_out = worst_ratio;
  return test::cos_diff(fa, fr);
}

uint8_t e4m3_of(double x) { return float_to_e4m3(static_cast<float>(x)); }

// Head weights. The tolerance scale is max|row|; with signed weights a row of a few keys can
// cancel to a value far below its terms' magnitudes (any fp32 evaluation order then differs by
// more than δ·max|row|), so signed weights are used only where every row spans many keys.
float head_weight(test::Rng& rng, bool signed_w) {
  const double v = rng.normal() * 0.05;
  return static_cast<float>(signed_w ? v : std::fabs(v) + 1e-3);
}

// ---- prefill --------------------------------------------------------------------------------

struct Prefill {
  const char* name = "";
  int64_t s_q = 0, s_kv = 0, h = 64, d = 128;
  DType dt = DType::kE4M3;  // q and k
  int64_t q_pad = 0, out_pad = 0;  // extra elements per q row (token) and per logits row
  bool clean = true;
  std::vector<int32_t> ks, ke;
  int zero_heads = 0;  // heads [0, zero_heads) get q·k < 0 for every key (exact ReLU zeros)
  bool signed_w = false;  // signed head weights (cancellation): only with long rows, see below
};

void fill_ranges_random(Prefill& c, test::Rng& rng) {
  c.ks.resize(c.s_q);
  c.ke.resize(c.s_q);
  for (int64_t t = 0; t < c.s_q; ++t) {
    int64_t a = rng.integer(0, c.s_kv), b = rng.integer(0, c.s_kv);
    if (a > b) std::swap(a, b);
    if (rng.uniform() < 0.1) b = a;  // empty
    if (rng.uniform() < 0.1) a = 0, b = c.s_kv;  // full
    c.ks[t] = static_cast<int32_t>(a);
    c.ke[t] = static_cast<int32_t>(b);
  }
}

void fill_ranges_causal(Prefill& c, int64_t start) {
  c.ks.assign(c.s_q, 0);
  c.ke.resize(c.s_q);
  for (int64_t t = 0; t < c.s_q; ++t) c.ke[t] = static_cast<int32_t>(std::min<int64_t>(c.s_kv, start + t + 1));
}

// Runs the case on the GPU and the CPU; returns the cos_diff. Checks poison coverage, the
// tolerance, rerun determinism and batch invariance.
double check_prefill(const Prefill& c, test::Rng& rng) {
  CAPTURE(c.name, c.s_q, c.s_kv, c.h, c.d, dtype_name(c.dt), c.q_pad, c.out_pad, c.clean, c.zero_heads);
  const bool fp8 = c.dt == DType::kE4M3;
  const int64_t es = fp8 ? 1 : (c.dt == DType::kBF16 ? 2 : 4);
  const int64_t q_s0 = c.h * c.d + c.q_pad, ld = c.s_kv + c.out_pad;
  Mirror q(std::max<int64_t>(1, c.s_q) * q_s0 * es), k(c.s_kv * c.d * es), sc(c.s_kv * 4 + 4),
      w(c.s_q * c.h * 4 + 4), ks(c.s_q * 4 + 4), ke(c.s_q * 4 + 4), out(c.s_q * ld * 4);
  auto put = [&](Mirror& m, int64_t i, double x) {
    if (fp8)
      m.host()[i] = e4m3_of(x);
    else if (c.dt == DType::kBF16)
      m.host_as<bf16_t>()[i] = float_to_bf16(static_cast<float>(x));
    else
      m.host_as<float>()[i] = static_cast<float>(x);
  };
  const double amp = fp8 ? 2.0 : 0.5;
  for (int64_t s = 0; s < c.s_kv; ++s)
    for (int64_t x = 0; x < c.d; ++x) {
      const double v = rng.normal() * amp;
      put(k, s * c.d + x, c.zero_heads ? std::fabs(v) + 0.25 : v);
    }
  for (int64_t t = 0; t < c.s_q; ++t) {
    for (int64_t j = 0; j < c.h; ++j)
      for (int64_t x = 0; x < c.d; ++x) {
        const double v = rng.normal() * amp;
        put(q, t * q_s0 + j * c.d + x, j < c.zero_heads ? -std::fabs(v) - 0.25 : v);
      }
    for (int64_t x = c.h * c.d; x < q_s0; ++x) put(q, t * q_s0 + x, NAN);  // padding is never read
  }
  for (int64_t s = 0; s < c.s_kv; ++s) sc.host_as<float>()[s] = static_cast<float>(rng.uniform(1e-3, 2e-2));
  for (int64_t i = 0; i < c.s_q * c.h; ++i) w.host_as<float>()[i] = head_weight(rng, c.signed_w);
  std::memcpy(ks.host(), c.ks.data(), c.s_q * 4);
  std::memcpy(ke.host(), c.ke.data(), c.s_q * 4);
  for (Mirror* m : {&q, &k, &sc, &w, &ks, &ke}) m->upload();
  out.poison(0xFF);

  auto make = [&](bool dev, int64_t r0, int64_t nr) {
    IndexerLogitsParams p;
    auto shift = [](TensorView v, int64_t bytes) {
      v.data = static_cast<char*>(v.data) + bytes;
      return v;
    };
    p.q = shift(q.view(dev, c.dt, {nr, c.h, c.d}, {q_s0, c.d, 1}), r0 * q_s0 * es);
    p.k = k.view(dev, c.dt, {c.s_kv, c.d});
    if (fp8) p.k_scale = sc.view(dev, DType::kF32, {c.s_kv});
    p.weights = shift(w.view(dev, DType::kF32, {nr, c.h}), r0 * c.h * 4);
    p.ks = shift(ks.view(dev, DType::kI32, {nr}), r0 * 4);
    p.ke = shift(ke.view(dev, DType::kI32, {nr}), r0 * 4);
    p.logits = shift(out.view(dev, DType::kF32, {nr, c.s_kv}, {ld, 1}), r0 * ld * 4);
    p.clean_logits = c.clean;
    return p;
  };
  {
    const Status s = run(make(true, 0, c.s_q));
    INFO("cuda: " << s.message());
    REQUIRE(s.ok());
  }
  test::sync_ok();
  const std::vector<uint8_t> first = out.download();
  {
    const Status s = run(make(false, 0, c.s_q));
    INFO("cpu: " << s.message());
    REQUIRE(s.ok());
  }
  double worst = 0;
  const double cd =
      compare_rows(as_floats(first), as_floats(out.host_bytes()), c.s_q, c.s_kv, ld, fp8 ? 2e-3 : 1e-5, &worst);
  std::printf("prefill %-22s s_q %5lld s_kv %6lld h %2lld d %3lld %-4s: max|a-r|/max|row| %.2e, cos_diff %.2e\n",
              c.name, (long long)c.s_q, (long long)c.s_kv, (long long)c.h, (long long)c.d, dtype_name(c.dt), worst,
              cd);
  INFO("cos_diff " << cd);
  if (fp8) CHECK(cd <= 5e-6);
  // Rerun (poisoned again): bitwise identical.
  GPU_REQUIRE(cudaMemset(out.dev(), 0xFF, out.bytes()));
  REQUIRE(run(make(true, 0, c.s_q)).ok());
  test::sync_ok();
  CHECK(out.download() == first);
  // Batch invariance: the rows [s_q/2, s_q) alone give the same bytes.
  if (c.s_q >= 2) {
    const int64_t r0 = c.s_q / 2;
    GPU_REQUIRE(cudaMemset(out.dev(), 0xFF, out.bytes()));
    REQUIRE(run(make(true, r0, c.s_q - r0)).ok());
    test::sync_ok();
    const auto sub = out.download();
    CHECK(std::equal(sub.begin() + r0 * ld * 4, sub.end(), first.begin() + r0 * ld * 4));
  }
  return cd;
}

}  // namespace

TEST_CASE("gpu indexer prefill: FP8 tensor cores vs CPU reference on ragged/causal/tiny/empty shapes",
          "[gpu][indexer]") {
  test::Rng rng(0x1D01);
  struct Shape {
    int64_t s_q, s_kv;
    int kind;  // 0 random ranges, 1 causal from 0, 2 causal chunk (start = s_kv − s_q)
  };
  for (const Shape& sh : {Shape{1, 1, 0}, Shape{3, 37, 0}, Shape{17, 300, 0}, Shape{64, 64, 1},
                          Shape{130, 2050, 0}, Shape{200, 1000, 2}, Shape{5, 33, 1}, Shape{96, 4099, 2}}) {
    Prefill c;
    c.name = "fp8";
    c.s_q = sh.s_q;
    c.s_kv = sh.s_kv;
    if (sh.kind == 0)
      fill_ranges_random(c, rng);
    else
      fill_ranges_causal(c, sh.kind == 1 ? 0 : sh.s_kv - sh.s_q);
    check_prefill(c, rng);
  }
  // Every row empty; padded strides; clean_logits off (untouched entries keep the poison).
  {
    Prefill c;
    c.name = "all-empty";
    c.s_q = 9;
    c.s_kv = 100;
    c.ks.assign(9, 40);
    c.ke.assign(9, 40);
    check_prefill(c, rng);
  }
  {
    Prefill c;
    c.name = "padded, no clean";
    c.s_q = 33;
    c.s_kv = 777;
    c.q_pad = 32;
    c.out_pad = 29;
    c.clean = false;
    fill_ranges_random(c, rng);
    check_prefill(c, rng);
  }
}

TEST_CASE("gpu indexer prefill: long rows (40K keys) and a causal 1K x 8K chunk", "[gpu][indexer]") {
  test::Rng rng(0x1D02);
  {
    Prefill c;
    c.name = "long";
    c.s_q = 6;
    c.s_kv = 40000;
    fill_ranges_random(c, rng);
    c.ks[0] = 0;
    c.ke[0] = 40000;
    c.ks[1] = 7;
    c.ke[1] = 39993;
    check_prefill(c, rng);
    c.name = "long, signed weights";
    for (int64_t t = 0; t < c.s_q; ++t) {
      c.ks[t] = static_cast<int32_t>(rng.integer(0, 2000));
      c.ke[t] = static_cast<int32_t>(rng.integer(38000, 40000));
    }
    c.signed_w = true;
    check_prefill(c, rng);
  }
  {
    Prefill c;
    c.name = "causal-chunk";
    c.s_q = 1024;
    c.s_kv = 8192;
    c.signed_w = true;  // every row spans at least 7169 keys
    fill_ranges_causal(c, 8192 - 1024);
    check_prefill(c, rng);
  }
}

TEST_CASE("gpu indexer prefill: heavy exact zeros after ReLU", "[gpu][indexer]") {
  test::Rng rng(0x1D03);
  for (int zh : {48, 64}) {
    Prefill c;
    c.name = "zeros";
    c.s_q = 70;
    c.s_kv = 1500;
    c.zero_heads = zh;  // 64: every logit in range is exactly 0 on both sides
    fill_ranges_random(c, rng);
    check_prefill(c, rng);
  }
}

namespace {

// Sets the wgmma override for one scope; restores "follow the environment" on exit.
struct WgmmaMode {
  explicit WgmmaMode(int mode) { indexer_logits_wgmma_for_testing(mode); }
  ~WgmmaMode() { indexer_logits_wgmma_for_testing(-1); }
};

// Layout self-check with exact arithmetic: token t has a single nonzero q entry, 1.0 at head
// j_t = t % 64 and dim x_t; key s holds small integers k[s, x]; w = 0.5 everywhere, σ_k a power of
// two. Then logits[t, s] = σ_s · 0.5 · ReLU(k[s, x_t]) exactly, whatever the summation order, so
// a wrong operand layout (rows, heads, k dims or tokens swapped) shows up as a plain mismatch.
void check_one_hot(int64_t s_q, int64_t s_kv) {
  CAPTURE(s_q, s_kv, indexer_logits_wgmma_active());
  const int64_t H = 64, D = 128;
  Mirror q(s_q * H * D), k(s_kv * D), sc(s_kv * 4), w(s_q * H * 4), ks(s_q * 4), ke(s_q * 4), out(s_q * s_kv * 4);
  std::memset(q.host(), 0, q.bytes());
  std::vector<int64_t> xt(s_q);
  for (int64_t t = 0; t < s_q; ++t) {
    xt[t] = (t * 37 + t / 64 * 11) % D;
    q.host()[t * H * D + (t % H) * D + xt[t]] = float_to_e4m3(1.0f);
  }
  auto kval = [](int64_t s, int64_t x) { return static_cast<float>((s * 7 + x * 3) % 13 - 6); };
  for (int64_t s = 0; s < s_kv; ++s) {
    for (int64_t x = 0; x < D; ++x) k.host()[s * D + x] = float_to_e4m3(kval(s, x));
    sc.host_as<float>()[s] = (s % 3 == 0) ? 0.25f : 1.0f;
  }
  for (int64_t i = 0; i < s_q * H; ++i) w.host_as<float>()[i] = 0.5f;
  for (int64_t t = 0; t < s_q; ++t) {
    ks.host_as<int32_t>()[t] = static_cast<int32_t>(t % 3 == 1 ? std::min<int64_t>(t, s_kv) : 0);
    ke.host_as<int32_t>()[t] = static_cast<int32_t>(t % 3 == 2 ? std::min<int64_t>(t + 1, s_kv) : s_kv);
  }
  for (Mirror* m : {&q, &k, &sc, &w, &ks, &ke}) m->upload();
  out.poison(0xFF);
  IndexerLogitsParams p;
  p.q = q.view(true, DType::kE4M3, {s_q, H, D});
  p.k = k.view(true, DType::kE4M3, {s_kv, D});
  p.k_scale = sc.view(true, DType::kF32, {s_kv});
  p.weights = w.view(true, DType::kF32, {s_q, H});
  p.ks = ks.view(true, DType::kI32, {s_q});
  p.ke = ke.view(true, DType::kI32, {s_q});
  p.logits = out.view(true, DType::kF32, {s_q, s_kv});
  REQUIRE(run(p).ok());
  test::sync_ok();
  const std::vector<float> got = as_floats(out.download());
  int64_t bad = 0, first = -1;
  for (int64_t t = 0; t < s_q; ++t) {
    const int64_t lo = ks.host_as<int32_t>()[t], hi = ke.host_as<int32_t>()[t];
    for (int64_t s = 0; s < s_kv; ++s) {
      const float want = (s < lo || s >= hi) ? -kInf : sc.host_as<float>()[s] * 0.5f * std::max(0.0f, kval(s, xt[t]));
      if (bits_of(got[t * s_kv + s]) != bits_of(want) && bad++ == 0) first = t * s_kv + s;
    }
  }
  INFO("mismatches " << bad << (first >= 0 ? ", first at token " + std::to_string(first / s_kv) + " key " +
                                                 std::to_string(first % s_kv) + ": got " +
                                                 std::to_string(got[first])
                                           : std::string()));
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("gpu indexer prefill: one-hot layout self-check (wgmma and mma.sync kernels)", "[gpu][indexer]") {
  std::printf("indexer prefill: wgmma kernel %s on this device/build\n",
              indexer_logits_wgmma_active() ? "available" : "NOT available");
  for (int mode : {1, 0}) {
    WgmmaMode m(mode);
    CAPTURE(mode);
    check_one_hot(1, 1);
    check_one_hot(5, 130);
    check_one_hot(64, 64);
    check_one_hot(130, 333);
  }
}

// The same inputs through the wgmma kernel and the mma.sync kernel: each within tolerance of the
// CPU reference, bitwise reproducible and batch invariant (check_prefill).
TEST_CASE("gpu indexer prefill: wgmma kernel and mma.sync kernel on the same inputs", "[gpu][indexer]") {
  struct Shape {
    int64_t s_q, s_kv;
    int kind;  // 0 random ranges, 1 causal from 0, 2 causal chunk, 3 heavy zeros
  };
  for (const Shape& sh : {Shape{1, 40000, 0}, Shape{7, 4097, 0}, Shape{300, 2000, 1}, Shape{257, 3000, 2},
                          Shape{70, 1500, 3}}) {
    for (int mode : {1, 0}) {
      WgmmaMode m(mode);
      CAPTURE(mode, indexer_logits_wgmma_active());
      test::Rng rng(0x1D0A + sh.s_q);  // same salt for both modes: the same inputs
      Prefill c;
      c.name = mode ? "wgmma" : "mma.sync";
      c.s_q = sh.s_q;
      c.s_kv = sh.s_kv;
      if (sh.kind == 0 || sh.kind == 3)
        fill_ranges_random(c, rng);
      else
        fill_ranges_causal(c, sh.kind == 1 ? 0 : sh.s_kv - sh.s_q);
      if (sh.kind == 3) c.zero_heads = 48;
      check_prefill(c, rng);
    }
  }
}

TEST_CASE("gpu indexer prefill: exact mode (bf16 tensor cores and the f32 general path)", "[gpu][indexer]") {
  test::Rng rng(0x1D04);
  for (DType dt : {DType::kBF16, DType::kF32})
    for (int64_t s_kv : {1, 300, 3000}) {
      Prefill c;
      c.name = "exact";
      c.dt = dt;
      c.s_q = 45;
      c.s_kv = s_kv;
      c.out_pad = 3;
      fill_ranges_random(c, rng);
      check_prefill(c, rng);
    }
  Prefill c;
  c.name = "exact-causal";
  c.dt = DType::kBF16;
  c.s_q = 256;
  c.s_kv = 2048;
  fill_ranges_causal(c, 2048 - 256);
  check_prefill(c, rng);
}

TEST_CASE("gpu indexer prefill: general path (h_idx other than 64 or d_idx other than 128 or unaligned rows)", "[gpu][indexer]") {
  test::Rng rng(0x1D05);
  struct G {
    int64_t h, d, q_pad;
    DType dt;
  };
  for (const G& g : {G{32, 128, 0, DType::kE4M3}, G{64, 64, 0, DType::kE4M3}, G{5, 24, 0, DType::kBF16},
                     G{64, 128, 8, DType::kE4M3}, G{64, 128, 4, DType::kBF16}}) {
    Prefill c;
    c.name = "general";
    c.h = g.h;
    c.d = g.d;
    c.q_pad = g.q_pad;
    c.dt = g.dt;
    c.s_q = 21;
    c.s_kv = 500;
    fill_ranges_random(c, rng);
    check_prefill(c, rng);
  }
}

TEST_CASE("gpu indexer prefill reproduces DeepGEMM fp8_mqa_logits (golden)", "[gpu][indexer][golden]") {
  auto gc = test::load_golden("deepgemm_mqa_logits");
  if (!gc) return;
  const int64_t S = 128, SKV = 2048, H = 64, D = 128;
  Mirror q(S * H * D), kv(SKV * D), sc(SKV * 4), w(S * H * 4), ks(S * 4), ke(S * 4), out(S * SKV * 4);
  auto load = [](Mirror& m, const test::GoldenTensor& t) {
    REQUIRE(t.bytes.size() == m.bytes());
    std::memcpy(m.host(), t.bytes.data(), m.bytes());
    m.upload();
  };
  load(q, gc->tensor("q"));
  load(kv, gc->tensor("kv"));
  load(sc, gc->tensor("kv_scale"));
  load(w, gc->tensor("weights"));
  load(ks, gc->tensor("ks"));
  load(ke, gc->tensor("ke"));
  out.poison(0xFF);
  auto make = [&](bool dev) {
    IndexerLogitsParams p;
    p.q = q.view(dev, DType::kE4M3, {S, H, D});
    p.k = kv.view(dev, DType::kE4M3, {SKV, D});
    p.k_scale = sc.view(dev, DType::kF32, {SKV});
    p.weights = w.view(dev, DType::kF32, {S, H});
    p.ks = ks.view(dev, DType::kI32, {S});
    p.ke = ke.view(dev, DType::kI32, {S});
    p.logits = out.view(dev, DType::kF32, {S, SKV});
    return p;
  };
  REQUIRE(run(make(true)).ok());
  test::sync_ok();
  const auto ours = as_floats(out.download());
  const auto golden = gc->tensor("logits").as<float>();
  const auto kss = gc->tensor("ks").as<int32_t>(), kee = gc->tensor("ke").as<int32_t>();
  std::vector<double> a, r;
  int64_t mask_bad = 0;
  for (int64_t t = 0; t < S; ++t)
    for (int64_t s = 0; s < SKV; ++s) {
      const float o = ours[t * SKV + s];
      if (s >= kss[t] && s < kee[t]) {
        a.push_back(golden[t * SKV + s]);
        r.push_back(o);
      } else {
        mask_bad += !(o == -kInf) + !(golden[t * SKV + s] == -kInf);
      }
    }
  CHECK(mask_bad == 0);
  const double diff = test::cos_diff(a, r);
  INFO("calc_diff vs DeepGEMM " << diff);
  std::printf("gpu prefill golden calc_diff %.3e (limit 5e-6)\n", diff);
  CHECK(diff < 5e-6);
  // And against the CPU reference on the same codes.
  REQUIRE(run(make(false)).ok());
  double worst = 0;
  const double cd = compare_rows(ours, as_floats(out.host_bytes()), S, SKV, SKV, 2e-3, &worst);
  std::printf("prefill golden vs CPU reference: max|a-r|/max|row| %.2e, cos_diff %.2e\n", worst, cd);
}

// ---- decode ---------------------------------------------------------------------------------

namespace {

struct Paged {
  const char* name = "";
  int64_t b = 0, next_n = 1, h = 64, d = 128, P = 64, max_ctx = 0, page_pad = 0, ld_pad = 0;
  bool two_d = false;
  bool signed_w = false;
  std::vector<int32_t> lens;  // [b] or [b·next_n]
};

// Whether the sm_90a wgmma decode kernel takes this shape now (the dispatch conditions of
// indexer_logits.cu for the layouts check_paged builds).
bool paged_wgmma_taken(const Paged& c) {
  return c.h == 64 && c.d == 128 && c.P % 64 == 0 && c.next_n <= 4 && c.page_pad % 16 == 0 &&
         indexer_paged_wgmma_active();
}

void check_paged(const Paged& c, test::Rng& rng) {
  CAPTURE(c.name, c.b, c.next_n, c.h, c.d, c.P, c.max_ctx, c.page_pad, c.ld_pad, c.two_d, paged_wgmma_taken(c));
  const int64_t rows = c.b * c.next_n, ld = c.max_ctx + c.ld_pad;
  const int64_t max_blocks = (c.max_ctx + c.P - 1) / c.P + 1;
  const int64_t page_bytes = (c.d + 4) * c.P + c.page_pad;
  // Pages used per request, from a shuffled pool with spare pages holding NaN codes and scales.
  std::vector<int64_t> need(c.b);
  int64_t total = 0;
  for (int64_t i = 0; i < c.b; ++i) {
    int64_t lmax = 0;
    for (int64_t j = 0; j < c.next_n; ++j) {
      const int64_t L = c.two_d ? c.lens[i * c.next_n + j] : std::max<int64_t>(0, c.lens[i] - c.next_n + 1 + j);
      lmax = std::max(lmax, L);
    }
    need[i] = (lmax + c.P - 1) / c.P;
    total += need[i];
  }
  const int64_t num_blocks = total + 3;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  Mirror q(rows * c.h * c.d), cache(num_blocks * page_bytes), w(rows * c.h * 4), lens(c.lens.size() * 4 + 4),
      bt(c.b * max_blocks * 4), out(rows * ld * 4);
  std::memset(cache.host(), 0x7F, cache.bytes());  // NaN codes and NaN scales where nothing is written
  for (int64_t i = 0; i < rows * c.h * c.d; ++i) q.host()[i] = e4m3_of(rng.normal() * 2.0);
  for (int64_t i = 0; i < rows * c.h; ++i) w.host_as<float>()[i] = head_weight(rng, c.signed_w);
  std::memcpy(lens.host(), c.lens.data(), c.lens.size() * 4);
  int64_t next = 0;
  for (int64_t i = 0; i < c.b; ++i)
    for (int64_t pg = 0; pg < max_blocks; ++pg) {
      int32_t id = pg < need[i] ? pool[next++] : static_cast<int32_t>(rng.integer(-5, 1 << 30));  // unused: garbage
      bt.host_as<int32_t>()[i * max_blocks + pg] = id;
      if (pg < need[i]) {
        uint8_t* page = cache.host() + int64_t{id} * page_bytes;
        for (int64_t s = 0; s < c.P; ++s) {
          for (int64_t x = 0; x < c.d; ++x) page[s * c.d + x] = e4m3_of(rng.normal() * 2.0);
          const float scale = static_cast<float>(rng.uniform(1e-3, 2e-2));
          std::memcpy(page + c.d * c.P + 4 * s, &scale, 4);
        }
      }
    }
  for (Mirror* m : {&q, &cache, &w, &lens, &bt}) m->upload();
  out.poison(0xFF);
  auto make = [&](bool dev) {
    IndexerPagedLogitsParams p;
    p.q = q.view(dev, DType::kE4M3, {c.b, c.next_n, c.h, c.d});
    p.k_cache = cache.view(dev, DType::kU8, {num_blocks, page_bytes});
    p.weights = w.view(dev, DType::kF32, {rows, c.h});
    if (c.two_d)
      p.context_lens = lens.view(dev, DType::kI32, {c.b, c.next_n});
    else
      p.context_lens = lens.view(dev, DType::kI32, {c.b});
    p.block_table = bt.view(dev, DType::kI32, {c.b, max_blocks});
    p.logits = out.view(dev, DType::kF32, {rows, c.max_ctx}, {ld, 1});
    p.page_block_size = static_cast<int32_t>(c.P);
    return p;
  };
  {
    const Status s = run(make(true));
    INFO("cuda: " << s.message());
    REQUIRE(s.ok());
  }
  test::sync_ok();
  const auto first = out.download();
  {
    const Status s = run(make(false));
    INFO("cpu: " << s.message());
    REQUIRE(s.ok());
  }
  double worst = 0;
  const double cd = compare_rows(as_floats(first), as_floats(out.host_bytes()), rows, c.max_ctx, ld, 2e-3, &worst);
  std::printf("decode  %-22s b %3lld next_n %lld P %3lld ctx %6lld h %2lld %-8s: max|a-r|/max|row| %.2e, cos_diff %.2e\n",
              c.name, (long long)c.b, (long long)c.next_n, (long long)c.P, (long long)c.max_ctx, (long long)c.h,
              paged_wgmma_taken(c) ? "wgmma" : "mma.sync", worst, cd);
  INFO("cos_diff " << cd);
  CHECK(cd <= 5e-6);
  GPU_REQUIRE(cudaMemset(out.dev(), 0xFF, out.bytes()));
  REQUIRE(run(make(true)).ok());
  test::sync_ok();
  CHECK(out.download() == first);
}

std::vector<int32_t> random_lens(test::Rng& rng, int64_t n, int64_t max_ctx) {
  std::vector<int32_t> v(n);
  for (auto& x : v) {
    const double u = rng.uniform();
    x = static_cast<int32_t>(u < 0.1 ? 0 : (u < 0.2 ? max_ctx : rng.integer(1, max_ctx)));
  }
  return v;
}

}  // namespace

TEST_CASE("gpu indexer decode: paged FP8 vs CPU reference over page sizes and next_n and 1-D/2-D lengths",
          "[gpu][indexer][decode]") {
  test::Rng rng(0x1D11);
  struct S {
    int64_t b, next_n, P, max_ctx, page_pad, ld_pad;
    bool two_d;
  };
  for (const S& s : {S{1, 1, 64, 1, 0, 0, false}, S{4, 1, 64, 1000, 0, 0, false}, S{3, 2, 64, 2048, 0, 5, true},
                     S{5, 2, 16, 700, 0, 0, false}, S{2, 3, 32, 1500, 16, 0, true}, S{6, 1, 128, 3000, 0, 0, false},
                     S{3, 4, 48, 999, 0, 1, false}, S{2, 2, 64, 500, 4, 0, true} /* page stride % 16 != 0 */,
                     S{3, 1, 24, 300, 0, 0, false} /* P not a multiple of 16 */}) {
    Paged c;
    c.name = "paged";
    c.b = s.b;
    c.next_n = s.next_n;
    c.P = s.P;
    c.max_ctx = s.max_ctx;
    c.page_pad = s.page_pad;
    c.ld_pad = s.ld_pad;
    c.two_d = s.two_d;
    c.lens = random_lens(rng, s.two_d ? s.b * s.next_n : s.b, s.max_ctx);
    check_paged(c, rng);
  }
  {
    Paged c;  // general path: h_idx = 32
    c.name = "general-h32";
    c.b = 3;
    c.h = 32;
    c.max_ctx = 400;
    c.lens = random_lens(rng, 3, 400);
    check_paged(c, rng);
  }
}

TEST_CASE("gpu indexer decode: long contexts (40K) and uneven lengths", "[gpu][indexer][decode]") {
  test::Rng rng(0x1D12);
  Paged c;
  c.name = "long";
  c.b = 5;
  c.next_n = 2;
  c.max_ctx = 40000;
  c.lens = {40000, 1, 17000, 0, 39999};
  check_paged(c, rng);
  c.name = "long, signed weights";
  c.lens = {40000, 3000, 17000, 0, 39999};  // every non-empty row spans many keys
  c.signed_w = true;
  check_paged(c, rng);
}

namespace {

// Sets the paged wgmma override for one scope; restores "follow the environment" on exit.
struct PagedWgmmaMode {
  explicit PagedWgmmaMode(int mode) { indexer_paged_wgmma_for_testing(mode); }
  ~PagedWgmmaMode() { indexer_paged_wgmma_for_testing(-1); }
};

// Paged layout self-check with exact arithmetic (as check_one_hot for prefill): row rr = i·n + t
// has a single nonzero q entry, 1.0 at head rr % 64 and dim x_rr; key s of request i holds small
// integers; w = 0.5, σ a power of two. Then logits[rr, s] = σ · 0.5 · ReLU(k[s, x_rr]) exactly,
// so a wrong operand layout (keys, pages, heads, k dims or tokens swapped) is a plain mismatch.
void check_paged_one_hot(int64_t b, int64_t next_n, int64_t P, int64_t max_ctx, bool two_d,
                         const std::vector<int32_t>& lens_in) {
  CAPTURE(b, next_n, P, max_ctx, two_d, indexer_paged_wgmma_active());
  const int64_t H = 64, D = 128, rows = b * next_n;
  const int64_t max_blocks = (max_ctx + P - 1) / P;
  const int64_t page_bytes = (D + 4) * P, num_blocks = b * max_blocks;
  std::vector<int64_t> L(rows);
  for (int64_t i = 0; i < b; ++i)
    for (int64_t t = 0; t < next_n; ++t)
      L[i * next_n + t] = two_d ? lens_in[i * next_n + t] : std::max<int64_t>(0, lens_in[i] - next_n + 1 + t);
  Mirror q(rows * H * D), cache(num_blocks * page_bytes), w(rows * H * 4), lens(lens_in.size() * 4),
      bt(b * max_blocks * 4), out(rows * max_ctx * 4);
  std::memset(q.host(), 0, q.bytes());
  std::vector<int64_t> xr(rows);
  for (int64_t r = 0; r < rows; ++r) {
    xr[r] = (r * 37 + r / 64 * 11) % D;
    q.host()[r * H * D + (r % H) * D + xr[r]] = float_to_e4m3(1.0f);
  }
  auto kval = [](int64_t i, int64_t s, int64_t x) { return static_cast<float>((s * 7 + x * 3 + i * 5) % 13 - 6); };
  auto kscale = [](int64_t i, int64_t s) { return (s + i) % 3 == 0 ? 0.25f : 1.0f; };
  // Request i's page g is physical page (g·b + i) reversed: pages interleave and run backwards.
  for (int64_t i = 0; i < b; ++i)
    for (int64_t g = 0; g < max_blocks; ++g) {
      const int64_t id = num_blocks - 1 - (g * b + i);
      bt.host_as<int32_t>()[i * max_blocks + g] = static_cast<int32_t>(id);
      uint8_t* page = cache.host() + id * page_bytes;
      for (int64_t o = 0; o < P; ++o) {
        const int64_t s = g * P + o;
        for (int64_t x = 0; x < D; ++x) page[o * D + x] = float_to_e4m3(kval(i, s, x));
        const float sc = kscale(i, s);
        std::memcpy(page + D * P + 4 * o, &sc, 4);
      }
    }
  for (int64_t r = 0; r < rows * H; ++r) w.host_as<float>()[r] = 0.5f;
  std::memcpy(lens.host(), lens_in.data(), lens.bytes());
  for (Mirror* m : {&q, &cache, &w, &lens, &bt}) m->upload();
  out.poison(0xFF);
  IndexerPagedLogitsParams p;
  p.q = q.view(true, DType::kE4M3, {b, next_n, H, D});
  p.k_cache = cache.view(true, DType::kU8, {num_blocks, page_bytes});
  p.weights = w.view(true, DType::kF32, {rows, H});
  p.context_lens = two_d ? lens.view(true, DType::kI32, {b, next_n}) : lens.view(true, DType::kI32, {b});
  p.block_table = bt.view(true, DType::kI32, {b, max_blocks});
  p.logits = out.view(true, DType::kF32, {rows, max_ctx});
  p.page_block_size = static_cast<int32_t>(P);
  {
    const Status st = run(p);
    INFO(st.message());
    REQUIRE(st.ok());
  }
  test::sync_ok();
  const std::vector<float> got = as_floats(out.download());
  int64_t bad = 0, first = -1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < max_ctx; ++s) {
      const int64_t i = r / next_n;
      const float want = s >= L[r] ? -kInf : kscale(i, s) * 0.5f * std::max(0.0f, kval(i, s, xr[r]));
      if (bits_of(got[r * max_ctx + s]) != bits_of(want) && bad++ == 0) first = r * max_ctx + s;
    }
  INFO("mismatches " << bad << (first >= 0 ? ", first at row " + std::to_string(first / max_ctx) + " key " +
                                                 std::to_string(first % max_ctx) + ": got " +
                                                 std::to_string(got[first])
                                           : std::string()));
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("gpu indexer decode: one-hot layout self-check (wgmma and mma.sync kernels)", "[gpu][indexer][decode]") {
  std::printf("indexer decode: paged wgmma kernel %s on this device/build\n",
              indexer_paged_wgmma_active() ? "available" : "NOT available");
  for (int mode : {1, 0}) {
    PagedWgmmaMode m(mode);
    CAPTURE(mode);
    check_paged_one_hot(1, 1, 64, 1, false, {1});
    check_paged_one_hot(3, 1, 64, 300, false, {300, 65, 128});
    check_paged_one_hot(2, 2, 64, 513, true, {513, 200, 0, 64});
    check_paged_one_hot(3, 3, 128, 700, false, {700, 2, 450});
    check_paged_one_hot(2, 4, 64, 640, true, {640, 639, 638, 1, 300, 301, 0, 77});
    check_paged_one_hot(2, 4, 192, 1000, false, {1000, 4});
  }
}

// The same inputs through the wgmma kernel and the mma.sync kernel: each within tolerance of the
// CPU reference and bitwise reproducible (check_paged). Covers next_n 1…4, P 64/128/256, 1-D and
// 2-D lengths, very uneven lengths (one long request among short and empty ones: the even tile
// split crosses requests) and more than 256 requests (the multi-step length scan).
TEST_CASE("gpu indexer decode: paged wgmma kernel and mma.sync kernel on the same inputs", "[gpu][indexer][decode]") {
  struct S {
    int64_t b, next_n, P, max_ctx, ld_pad;
    bool two_d;
    int lens_kind;  // 0 random, 1 one long request among short ones
  };
  for (const S& s : {S{4, 1, 64, 1000, 0, false, 0}, S{3, 2, 64, 2048, 3, true, 0}, S{5, 3, 64, 1500, 0, false, 0},
                     S{4, 4, 64, 777, 0, true, 0}, S{3, 2, 128, 3000, 0, false, 0}, S{2, 4, 256, 1300, 1, false, 0},
                     S{9, 1, 64, 40000, 0, false, 1}, S{6, 3, 64, 20000, 0, true, 1}, S{300, 1, 64, 200, 0, false, 0},
                     S{270, 2, 64, 130, 0, true, 0}}) {
    for (int mode : {1, 0}) {
      PagedWgmmaMode m(mode);
      CAPTURE(mode, indexer_paged_wgmma_active());
      test::Rng rng(0x1D40 + s.b * 8 + s.next_n);  // same salt for both modes: the same inputs
      Paged c;
      c.name = mode ? "A/B wgmma" : "A/B mma.sync";
      c.b = s.b;
      c.next_n = s.next_n;
      c.P = s.P;
      c.max_ctx = s.max_ctx;
      c.ld_pad = s.ld_pad;
      c.two_d = s.two_d;
      const int64_t n_lens = s.two_d ? s.b * s.next_n : s.b;
      if (s.lens_kind == 0) {
        c.lens = random_lens(rng, n_lens, s.max_ctx);
      } else {
        c.lens.assign(n_lens, 0);
        for (int64_t i = 0; i < n_lens; ++i) c.lens[i] = static_cast<int32_t>(i % 3 == 2 ? 0 : 1 + (i * 37) % 200);
        c.lens[n_lens / 2] = static_cast<int32_t>(s.max_ctx);  // the long one
        if (n_lens > 2) c.lens[1] = static_cast<int32_t>(s.max_ctx - 1);
      }
      check_paged(c, rng);
    }
  }
}

TEST_CASE("gpu indexer decode reproduces DeepGEMM fp8_paged_mqa_logits (golden)", "[gpu][indexer][golden]") {
  auto gc = test::load_golden("deepgemm_paged_mqa_logits");
  if (!gc) return;
  const int64_t B = 4, N = 2, H = 64, D = 128, P = 64, max_ctx = 2048;
  const auto& tc = gc->tensor("kv_cache");
  const int64_t num_blocks = tc.shape[0], page_bytes = tc.shape[1];
  const int64_t max_blocks = gc->tensor("block_table").shape[1];
  Mirror q(B * N * H * D), cache(num_blocks * page_bytes), w(B * N * H * 4), lens(B * N * 4),
      bt(B * max_blocks * 4), out(B * N * max_ctx * 4);
  auto load = [](Mirror& m, const test::GoldenTensor& t) {
    REQUIRE(t.bytes.size() == m.bytes());
    std::memcpy(m.host(), t.bytes.data(), m.bytes());
    m.upload();
  };
  load(q, gc->tensor("q"));
  load(cache, tc);
  load(w, gc->tensor("weights"));
  load(lens, gc->tensor("context_lens"));
  load(bt, gc->tensor("block_table"));
  out.poison(0xFF);
  auto make = [&](bool dev) {
    IndexerPagedLogitsParams p;
    p.q = q.view(dev, DType::kE4M3, {B, N, H, D});
    p.k_cache = cache.view(dev, DType::kU8, {num_blocks, page_bytes});
    p.weights = w.view(dev, DType::kF32, {B * N, H});
    p.context_lens = lens.view(dev, DType::kI32, {B, N});
    p.block_table = bt.view(dev, DType::kI32, {B, max_blocks});
    p.logits = out.view(dev, DType::kF32, {B * N, max_ctx});
    p.page_block_size = static_cast<int32_t>(P);
    return p;
  };
  REQUIRE(run(make(true)).ok());
  test::sync_ok();
  const auto ours = as_floats(out.download());
  const auto golden = gc->tensor("logits").as<float>();
  const auto L = gc->tensor("context_lens").as<int32_t>();
  std::vector<double> a, r;
  int64_t past_bad = 0;
  for (int64_t row = 0; row < B * N; ++row)
    for (int64_t pos = 0; pos < max_ctx; ++pos) {
      const float o = ours[row * max_ctx + pos];
      if (pos < L[row]) {
        a.push_back(golden[row * max_ctx + pos]);
        r.push_back(o);
      } else {
        past_bad += !(o == -kInf);  // the golden's entries here are unspecified
      }
    }
  CHECK(a.size() == 7570);
  CHECK(past_bad == 0);
  const double diff = test::cos_diff(a, r);
  INFO("calc_diff vs DeepGEMM " << diff);
  std::printf("gpu paged golden calc_diff %.3e (limit 5e-6)\n", diff);
  CHECK(diff < 5e-6);
  REQUIRE(run(make(false)).ok());
  double worst = 0;
  const double cd = compare_rows(ours, as_floats(out.host_bytes()), B * N, max_ctx, max_ctx, 2e-3, &worst);
  std::printf("paged golden vs CPU reference: max|a-r|/max|row| %.2e, cos_diff %.2e\n", worst, cd);
}

// ---- CUDA graph capture -----------------------------------------------------------------------

namespace {

// Eager run, then the same call captured on a user stream: the replay gives the same bytes.
template <typename P>
void graph_replay_matches(const P& p, Mirror& out) {
  out.poison(0xFF);
  {
    const Status s = run(p);
    INFO(s.message());
    REQUIRE(s.ok());
  }
  test::sync_ok();
  const auto eager = out.download();
  GPU_REQUIRE(cudaMemset(out.dev(), 0xFF, out.bytes()));
  test::sync_ok();
  cudaStream_t stream;
  GPU_REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  GPU_REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const Status s = run(p, nullptr, 0, stream);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream, &graph);
  INFO(s.message());
  REQUIRE(s.ok());
  GPU_REQUIRE(end);
  cudaGraphExec_t exec;
  GPU_REQUIRE(cudaGraphInstantiate(&exec, graph, 0));
  GPU_REQUIRE(cudaGraphLaunch(exec, stream));
  GPU_REQUIRE(cudaStreamSynchronize(stream));
  CHECK(out.download() == eager);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

}  // namespace

TEST_CASE("gpu indexer: prefill and decode captured in a CUDA graph replay bitwise", "[gpu][indexer][graph]") {
  test::Rng rng(0x1D21);
  {
    const int64_t S = 40, SKV = 900, H = 64, D = 128;
    Mirror q(S * H * D), k(SKV * D), sc(SKV * 4), w(S * H * 4), ks(S * 4), ke(S * 4), out(S * SKV * 4);
    for (int64_t i = 0; i < S * H * D; ++i) q.host()[i] = e4m3_of(rng.normal() * 2.0);
    for (int64_t i = 0; i < SKV * D; ++i) k.host()[i] = e4m3_of(rng.normal() * 2.0);
    for (int64_t i = 0; i < SKV; ++i) sc.host_as<float>()[i] = static_cast<float>(rng.uniform(1e-3, 2e-2));
    for (int64_t i = 0; i < S * H; ++i) w.host_as<float>()[i] = head_weight(rng, false);
    for (int64_t t = 0; t < S; ++t) {
      ks.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(0, 300));
      ke.host_as<int32_t>()[t] = static_cast<int32_t>(rng.integer(300, SKV));
    }
    for (Mirror* m : {&q, &k, &sc, &w, &ks, &ke}) m->upload();
    IndexerLogitsParams p;
    p.q = q.view(true, DType::kE4M3, {S, H, D});
    p.k = k.view(true, DType::kE4M3, {SKV, D});
    p.k_scale = sc.view(true, DType::kF32, {SKV});
    p.weights = w.view(true, DType::kF32, {S, H});
    p.ks = ks.view(true, DType::kI32, {S});
    p.ke = ke.view(true, DType::kI32, {S});
    p.logits = out.view(true, DType::kF32, {S, SKV});
    graph_replay_matches(p, out);
  }
  {
    const int64_t B = 3, N = 2, H = 64, D = 128, P = 64, max_blocks = 10, num_blocks = 30, ctx = 640;
    Mirror q(B * N * H * D), cache(num_blocks * 132 * P), w(B * N * H * 4), lens(B * 4), bt(B * max_blocks * 4),
        out(B * N * ctx * 4);
    for (int64_t i = 0; i < B * N * H * D; ++i) q.host()[i] = e4m3_of(rng.normal() * 2.0);
    for (int64_t pg = 0; pg < num_blocks; ++pg) {
      uint8_t* page = cache.host() + pg * 132 * P;
      for (int64_t i = 0; i < 128 * P; ++i) page[i] = e4m3_of(rng.normal() * 2.0);
      for (int64_t s = 0; s < P; ++s) {
        const float v = static_cast<float>(rng.uniform(1e-3, 2e-2));
        std::memcpy(page + 128 * P + 4 * s, &v, 4);
      }
    }
    for (int64_t i = 0; i < B * N * H; ++i) w.host_as<float>()[i] = head_weight(rng, false);
    for (int64_t i = 0; i < B; ++i) lens.host_as<int32_t>()[i] = static_cast<int32_t>(rng.integer(1, ctx));
    for (int64_t i = 0; i < B * max_blocks; ++i) bt.host_as<int32_t>()[i] = static_cast<int32_t>(i % num_blocks);
    for (Mirror* m : {&q, &cache, &w, &lens, &bt}) m->upload();
    IndexerPagedLogitsParams p;
    p.q = q.view(true, DType::kE4M3, {B, N, H, D});
    p.k_cache = cache.view(true, DType::kU8, {num_blocks, 132 * P});
    p.weights = w.view(true, DType::kF32, {B * N, H});
    p.context_lens = lens.view(true, DType::kI32, {B});
    p.block_table = bt.view(true, DType::kI32, {B, max_blocks});
    p.logits = out.view(true, DType::kF32, {B * N, ctx});
    p.page_block_size = static_cast<int32_t>(P);
    graph_replay_matches(p, out);
  }
}

// ---- prefill wgmma kernel versions (cuda/indexer/indexer_logits_wgmma.cu) -------------------
// Test hook modes 2 and 3 force kernel version 1 (the original epilogue) and version 2 (weights
// in registers, transpose-reduce, unbranched stores). Version 2 keeps every output's arithmetic
// (same FMA chain, same reduction tree, same scale multiply), so the two agree bit for bit.

TEST_CASE("gpu indexer prefill: wgmma kernel versions 1 and 2, one-hot self-check", "[gpu][indexer]") {
  for (int mode : {2, 3}) {
    WgmmaMode m(mode);
    CAPTURE(mode);
    check_one_hot(1, 1);
    check_one_hot(5, 130);
    check_one_hot(130, 333);
    check_one_hot(67, 1000);
  }
}

TEST_CASE("gpu indexer prefill: wgmma kernel versions 1 and 2 agree bitwise", "[gpu][indexer]") {
  struct Shape {
    int64_t s_q, s_kv;
    bool causal, signed_w;
  };
  for (const Shape& sh : {Shape{1, 40000, false, true}, Shape{7, 4097, false, false}, Shape{301, 2000, true, false},
                          Shape{129, 9000, false, true}}) {
    CAPTURE(sh.s_q, sh.s_kv, sh.causal, sh.signed_w);
    const int64_t H = 64, D = 128, s_q = sh.s_q, s_kv = sh.s_kv;
    test::Rng rng(0x1D0B + s_q);
    Mirror q(s_q * H * D), k(s_kv * D), sc(s_kv * 4), w(s_q * H * 4), ks(s_q * 4), ke(s_q * 4), out(s_q * s_kv * 4);
    for (int64_t i = 0; i < s_q * H * D; ++i) q.host()[i] = e4m3_of(rng.normal() * 2.0);
    for (int64_t i = 0; i < s_kv * D; ++i) k.host()[i] = e4m3_of(rng.normal() * 2.0);
    for (int64_t s = 0; s < s_kv; ++s) sc.host_as<float>()[s] = static_cast<float>(rng.uniform(1e-3, 2e-2));
    for (int64_t i = 0; i < s_q * H; ++i) w.host_as<float>()[i] = head_weight(rng, sh.signed_w);
    for (int64_t t = 0; t < s_q; ++t) {
      int64_t lo = 0, hi = s_kv;
      if (sh.causal) {
        hi = s_kv - s_q + t + 1;
      } else if (t % 4 != 0) {
        lo = rng.integer(0, s_kv);
        hi = rng.integer(lo, s_kv);
      }
      ks.host_as<int32_t>()[t] = static_cast<int32_t>(lo);
      ke.host_as<int32_t>()[t] = static_cast<int32_t>(hi);
    }
    for (Mirror* m : {&q, &k, &sc, &w, &ks, &ke}) m->upload();
    IndexerLogitsParams p;
    p.q = q.view(true, DType::kE4M3, {s_q, H, D});
    p.k = k.view(true, DType::kE4M3, {s_kv, D});
    p.k_scale = sc.view(true, DType::kF32, {s_kv});
    p.weights = w.view(true, DType::kF32, {s_q, H});
    p.ks = ks.view(true, DType::kI32, {s_q});
    p.ke = ke.view(true, DType::kI32, {s_q});
    p.logits = out.view(true, DType::kF32, {s_q, s_kv});
    std::vector<uint8_t> got[2];
    for (int v = 0; v < 2; ++v) {
      WgmmaMode m(2 + v);
      if (!indexer_logits_wgmma_active()) {
        WARN("wgmma kernel not available on this device/build");
        return;
      }
      out.poison(0xFF);
      REQUIRE(run(p).ok());
      test::sync_ok();
      got[v] = out.download();
    }
    int64_t bad = 0;
    for (size_t i = 0; i < got[0].size(); i += 4)
      if (std::memcmp(&got[0][i], &got[1][i], 4) != 0) ++bad;
    CHECK(bad == 0);
  }
}

// ---- paged decode wgmma v1 vs v2 ------------------------------------------------------------

namespace {

// Random paged inputs (as check_paged: shuffled pages, garbage past the used ones) through the
// decode kernel under test-hook mode `mode`; returns the output bytes (poisoned first).
std::vector<uint8_t> paged_run_bytes(const Paged& c, uint64_t seed, int mode) {
  PagedWgmmaMode m(mode);
  test::Rng rng(seed);
  const int64_t rows = c.b * c.next_n, max_blocks = (c.max_ctx + c.P - 1) / c.P + 1;
  const int64_t page_bytes = (c.d + 4) * c.P, num_blocks = c.b * max_blocks + 1;
  std::vector<int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng.engine());
  Mirror q(rows * c.h * c.d), cache(num_blocks * page_bytes), w(rows * c.h * 4), lens(c.lens.size() * 4),
      bt(c.b * max_blocks * 4), out(rows * c.max_ctx * 4);
  for (int64_t i = 0; i < rows * c.h * c.d; ++i) q.host()[i] = e4m3_of(rng.normal() * 2.0);
  for (int64_t i = 0; i < num_blocks * page_bytes; i += 4) {
    const float v = static_cast<float>(rng.uniform(1e-3, 2e-2));
    std::memcpy(cache.host() + i, &v, 4);  // scales where they land; codes: the same bytes
  }
  for (int64_t i = 0; i < num_blocks * page_bytes; ++i)
    if ((i % page_bytes) < c.d * c.P) cache.host()[i] = e4m3_of(rng.normal() * 2.0);
  for (int64_t i = 0; i < rows * c.h; ++i) w.host_as<float>()[i] = head_weight(rng, c.signed_w);
  std::memcpy(lens.host(), c.lens.data(), lens.bytes());
  for (int64_t i = 0; i < c.b * max_blocks; ++i)
    bt.host_as<int32_t>()[i] = i % 17 == 16 ? -1 : pool[i];  // a few unmappable pages: NaN keys
  for (Mirror* mm : {&q, &cache, &w, &lens, &bt}) mm->upload();
  out.poison(0xFF);
  IndexerPagedLogitsParams p;
  p.q = q.view(true, DType::kE4M3, {c.b, c.next_n, c.h, c.d});
  p.k_cache = cache.view(true, DType::kU8, {num_blocks, page_bytes});
  p.weights = w.view(true, DType::kF32, {rows, c.h});
  p.context_lens = c.two_d ? lens.view(true, DType::kI32, {c.b, c.next_n}) : lens.view(true, DType::kI32, {c.b});
  p.block_table = bt.view(true, DType::kI32, {c.b, max_blocks});
  p.logits = out.view(true, DType::kF32, {rows, c.max_ctx});
  p.page_block_size = static_cast<int32_t>(c.P);
  const Status st = run(p);
  INFO(st.message());
  REQUIRE(st.ok());
  test::sync_ok();
  return out.download();
}

}  // namespace

// v2 of the paged wgmma kernel (128-byte-swizzled tiles, coalesced copies, deeper rings) against
// v1 (test-hook modes 3 and 2): the one-hot layout self-check on each, and bitwise equal outputs
// on random inputs (the same products in the same order; only the shared-memory layout and the
// copies differ). Uneven lengths so the tile split crosses requests; P 64/128/192/256 (the page
// counter); next_n 1…4.
TEST_CASE("gpu indexer decode: paged wgmma v2 vs v1 (one-hot, bitwise equal)", "[gpu][indexer][decode]") {
  {
    PagedWgmmaMode m(3);
    if (!indexer_paged_wgmma_active()) {
      WARN("paged wgmma kernel not available on this device/build");
      return;
    }
  }
  for (int mode : {3, 2}) {
    PagedWgmmaMode m(mode);
    CAPTURE(mode);
    check_paged_one_hot(1, 1, 64, 1, false, {1});
    check_paged_one_hot(3, 1, 64, 300, false, {300, 65, 128});
    check_paged_one_hot(2, 1, 192, 2000, false, {2000, 1999});
    check_paged_one_hot(2, 2, 64, 513, true, {513, 200, 0, 64});
    check_paged_one_hot(3, 3, 128, 700, false, {700, 2, 450});
    check_paged_one_hot(2, 4, 64, 640, true, {640, 639, 638, 1, 300, 301, 0, 77});
    check_paged_one_hot(2, 4, 192, 1000, false, {1000, 4});
  }
  struct S {
    int64_t b, next_n, P, max_ctx;
  };
  for (const S& s : {S{7, 1, 64, 9000}, S{5, 1, 128, 5000}, S{4, 1, 192, 4100}, S{3, 2, 64, 3000},
                     S{3, 3, 256, 2600}, S{4, 4, 64, 1800}, S{600, 1, 64, 150}}) {
    CAPTURE(s.b, s.next_n, s.P, s.max_ctx);
    Paged c;
    c.b = s.b;
    c.next_n = s.next_n;
    c.P = s.P;
    c.max_ctx = s.max_ctx;
    c.two_d = s.next_n == 2;
    const int64_t n_lens = c.two_d ? s.b * s.next_n : s.b;
    test::Rng lr(0x2E00 + s.b * 8 + s.next_n);
    c.lens = random_lens(lr, n_lens, s.max_ctx);
    c.lens[0] = static_cast<int32_t>(s.max_ctx);
    const auto v1 = paged_run_bytes(c, 0x2E80 + s.b, 2);
    const auto v2 = paged_run_bytes(c, 0x2E80 + s.b, 3);
    REQUIRE(v1.size() == v2.size());
    int64_t bad = 0;
    for (size_t i = 0; i < v1.size(); i += 4)
      if (std::memcmp(&v1[i], &v2[i], 4) != 0) ++bad;
    CHECK(bad == 0);
  }
}

// v3 of the paged wgmma kernel (tensor-map copies completing on mbarriers; opt-in,
// DSA_INDEXER_PAGED_WGMMA=3 or test-hook mode 4) against v1 (mode 2): one-hot self-check and
// bitwise equal outputs (the same layout as v2, only the copy engine differs).
TEST_CASE("gpu indexer decode: paged wgmma v3 (TMA) vs v1 (one-hot, bitwise equal)", "[gpu][indexer][decode]") {
  {
    PagedWgmmaMode m(4);
    if (!indexer_paged_wgmma_active()) {
      WARN("paged wgmma kernel not available on this device/build");
      return;
    }
  }
  {
    PagedWgmmaMode m(4);
    check_paged_one_hot(1, 1, 64, 1, false, {1});
    check_paged_one_hot(3, 1, 64, 300, false, {300, 65, 128});
    check_paged_one_hot(2, 1, 192, 2000, false, {2000, 1999});
    check_paged_one_hot(2, 2, 64, 513, true, {513, 200, 0, 64});
    check_paged_one_hot(3, 3, 128, 700, false, {700, 2, 450});
    check_paged_one_hot(2, 4, 64, 640, true, {640, 639, 638, 1, 300, 301, 0, 77});
    check_paged_one_hot(2, 4, 192, 1000, false, {1000, 4});
  }
  struct S {
    int64_t b, next_n, P, max_ctx;
  };
  for (const S& s : {S{7, 1, 64, 9000}, S{5, 1, 128, 5000}, S{4, 1, 192, 4100}, S{3, 2, 64, 3000},
                     S{3, 3, 256, 2600}, S{4, 4, 64, 1800}, S{600, 1, 64, 150}, S{2, 1, 64, 60000}}) {
    CAPTURE(s.b, s.next_n, s.P, s.max_ctx);
    Paged c;
    c.b = s.b;
    c.next_n = s.next_n;
    c.P = s.P;
    c.max_ctx = s.max_ctx;
    c.two_d = s.next_n == 2;
    const int64_t n_lens = c.two_d ? s.b * s.next_n : s.b;
    test::Rng lr(0x3E00 + s.b * 8 + s.next_n);
    c.lens = random_lens(lr, n_lens, s.max_ctx);
    c.lens[0] = static_cast<int32_t>(s.max_ctx);
    const auto v1 = paged_run_bytes(c, 0x3E80 + s.b, 2);
    const auto v3 = paged_run_bytes(c, 0x3E80 + s.b, 4);
    REQUIRE(v1.size() == v3.size());
    int64_t bad = 0;
    for (size_t i = 0; i < v1.size(); i += 4)
      if (std::memcmp(&v1[i], &v3[i], 4) != 0) ++bad;
    CHECK(bad == 0);
  }
}
