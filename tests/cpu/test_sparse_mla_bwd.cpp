// OP-SMLA-BWD (SPEC §6.5): the CPU reference against
//   - a naive float64 implementation of the §6.5 formulas written here (every shape, dtype, edge);
//   - central finite differences of a float64 forward written here (SPEC §6.2 with index-list
//     semantics, so duplicates are covered);
//   - the dense attention backward restricted by the selection mask;
// plus bitwise determinism (run-to-run and across thread counts) and bad input for every argument.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "dsa/dsa.h"
#include "dsa/dsa.hpp"
#include "support/child_process.hpp"
#include "support/metrics.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr test::Tolerance kSparseBwd{1e-3, 3.01 / 128, 1e-5};  // SPEC §9.4 "sparse bwd dq, dkv"

// A tensor's bytes plus its view; element access by logical (row-major) flat index. `pad` widens
// the outermost stride, so strided inputs are exercised.
struct Tensor {
  DType dt = DType::kInvalid;
  int rank = 0;
  int64_t shape[4] = {0, 0, 0, 0}, stride[4] = {0, 0, 0, 0};
  std::vector<unsigned char> mem;
  Tensor() = default;
  Tensor(DType d, std::vector<int64_t> shp, int64_t pad = 0) : dt(d), rank(static_cast<int>(shp.size())) {
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; --i) {
      shape[i] = shp[i];
      stride[i] = s + (i == 0 && rank > 1 ? pad : 0);
      s = stride[i] * shape[i];
    }
    int64_t extent = 1;
    for (int i = 0; i < rank; ++i) extent += (shape[i] > 0 ? shape[i] - 1 : 0) * stride[i];
    mem.assign(static_cast<size_t>(extent) * dtype_size(dt) + 16, 0);
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  int64_t off(int64_t flat) const {
    int64_t o = 0;
    for (int i = rank - 1; i >= 0; --i) {
      o += (flat % shape[i]) * stride[i];
      flat /= shape[i];
    }
    return o;
  }
  double get(int64_t flat) const {
    const int64_t o = off(flat);
    switch (dt) {
      case DType::kF32: return reinterpret_cast<const float*>(mem.data())[o];
      case DType::kBF16: return bf16_to_float(reinterpret_cast<const bf16_t*>(mem.data())[o]);
      case DType::kI32: return reinterpret_cast<const int32_t*>(mem.data())[o];
      default: return NAN;
    }
  }
  void set(int64_t flat, double v) {
    const int64_t o = off(flat);
    switch (dt) {
      case DType::kF32: reinterpret_cast<float*>(mem.data())[o] = static_cast<float>(v); break;
      case DType::kBF16: reinterpret_cast<bf16_t*>(mem.data())[o] = float_to_bf16(static_cast<float>(v)); break;
      case DType::kI32: reinterpret_cast<int32_t*>(mem.data())[o] = static_cast<int32_t>(v); break;
      default: break;
    }
  }
  std::vector<double> values() const {
    std::vector<double> v(static_cast<size_t>(numel()));
    for (int64_t i = 0; i < numel(); ++i) v[i] = get(i);
    return v;
  }
  void poison() {
    if (!mem.empty()) std::memset(mem.data(), dt == DType::kI32 ? 0x7F : 0xFF, mem.size());
  }
  TensorView view() const {
    TensorView v;
    v.data = const_cast<unsigned char*>(mem.data());
    v.dtype = dt;
    v.rank = rank;
    for (int i = 0; i < rank; ++i) v.shape[i] = shape[i], v.stride[i] = stride[i];
    return v;
  }
};

struct Shape {
  int64_t s_q, s_kv, h_q, d_qk, d_v, topk;
};

struct Options {
  DType in = DType::kBF16;    // q, kv, dout
  DType out = DType::kBF16;   // stored forward output
  DType grad = DType::kBF16;  // dq, dkv
  float sm_scale = kSoftmaxScaleV32;
  double value_scale = 0.1;   // randn·scale + offset (SPEC §9.5)
  double invalid_frac = 0.2;  // share of sentinel slots
  double dup_frac = 0.1;      // share of slots repeating an earlier valid index
  double empty_frac = 0.1;    // share of rows without a valid slot
  bool unique = false;        // valid indices unique per row (top-k output)
  bool use_length = true;
  bool nan_unreferenced = true;  // unreferenced kv rows hold NaN (never read)
  int64_t pad = 0;
};

const int32_t kSentinels[] = {std::numeric_limits<int32_t>::min(), -123456, -1, 0 /* s_kv */, 114514,
                              1919810, 2147480000, std::numeric_limits<int32_t>::max()};

struct Problem {
  Shape sh;
  Options o;
  Tensor q, kv, idx, len, out, lse, dout, dq, dkv;
  std::vector<char> row_valid;  // has ≥ 1 valid slot

  int64_t n_of(int64_t t) const { return o.use_length ? static_cast<int64_t>(len.get(t)) : sh.topk; }
  bool valid(int64_t t, int64_t i) const {
    const int64_t v = static_cast<int64_t>(idx.get(t * sh.topk + i));
    return i < n_of(t) && v >= 0 && v < sh.s_kv;
  }
  SparseMlaBwdParams params() const {
    SparseMlaBwdParams p;
    p.q = q.view();
    p.kv = kv.view();
    p.indices = idx.view();
    if (o.use_length) p.topk_length = len.view();
    p.out = out.view();
    p.lse = lse.view();
    p.dout = dout.view();
    p.dq = dq.view();
    p.dkv = dkv.view();
    p.sm_scale = o.sm_scale;
    return p;
  }
};

// SPEC §6.2 forward in float64 over the stored values, index-list semantics.
void forward_f64(const Problem& P, const std::vector<double>& q, const std::vector<double>& kv,
                 std::vector<double>* out, std::vector<double>* lse) {
  const Shape& s = P.sh;
  out->assign(s.s_q * s.h_q * s.d_v, 0.0);
  lse->assign(s.s_q * s.h_q, kInf);
  std::vector<double> z(s.topk);
  for (int64_t t = 0; t < s.s_q; ++t)
    for (int64_t h = 0; h < s.h_q; ++h) {
      double m = -kInf;
      for (int64_t i = 0; i < s.topk; ++i) {
        z[i] = -kInf;
        if (!P.valid(t, i)) continue;
        const int64_t r = static_cast<int64_t>(P.idx.get(t * s.topk + i));
        double dot = 0;
        for (int64_t d = 0; d < s.d_qk; ++d) dot += q[(t * s.h_q + h) * s.d_qk + d] * kv[r * s.d_qk + d];
        z[i] = s.d_qk ? P.o.sm_scale * dot : 0;
        m = std::max(m, z[i]);
      }
      if (m == -kInf) continue;
      double sum = 0;
      for (int64_t i = 0; i < s.topk; ++i)
        if (z[i] > -kInf) sum += std::exp(z[i] - m);
      const double l = m + std::log(sum);
      (*lse)[t * s.h_q + h] = l;
      for (int64_t i = 0; i < s.topk; ++i) {
        if (z[i] == -kInf) continue;
        const double pr = std::exp(z[i] - l);
        const int64_t r = static_cast<int64_t>(P.idx.get(t * s.topk + i));
        for (int64_t d = 0; d < s.d_v; ++d) (*out)[(t * s.h_q + h) * s.d_v + d] += pr * kv[r * s.d_qk + d];
      }
    }
}

Problem make_problem(test::Rng& rng, const Shape& sh, const Options& o) {
  Problem P;
  P.sh = sh;
  P.o = o;
  P.q = Tensor(o.in, {sh.s_q, sh.h_q, sh.d_qk}, o.pad);
  P.kv = Tensor(o.in, {sh.s_kv, sh.d_qk}, o.pad);
  P.idx = Tensor(DType::kI32, {sh.s_q, sh.topk});
  P.len = Tensor(DType::kI32, {sh.s_q});
  P.out = Tensor(o.out, {sh.s_q, sh.h_q, sh.d_v});
  P.lse = Tensor(DType::kF32, {sh.s_q, sh.h_q});
  P.dout = Tensor(o.in, {sh.s_q, sh.h_q, sh.d_v}, o.pad);
  P.dq = Tensor(o.grad, {sh.s_q, sh.h_q, sh.d_qk}, o.pad);
  P.dkv = Tensor(o.grad, {sh.s_kv, sh.d_qk});
  auto fill = [&](Tensor& x) {
    const double offset = rng.uniform(-0.05, 0.05);
    for (int64_t i = 0; i < x.numel(); ++i)
      x.set(i, std::max(-10.0, std::min(10.0, rng.normal() * o.value_scale + offset)));
  };
  fill(P.q);
  fill(P.kv);
  fill(P.dout);
  for (int64_t t = 0; t < sh.s_q; ++t) {
    const bool empty = rng.uniform() < o.empty_frac;
    P.len.set(t, o.use_length ? rng.integer(0, sh.topk) : sh.topk);
    std::vector<int32_t> used;
    for (int64_t i = 0; i < sh.topk; ++i) {
      int64_t v;
      if (empty || sh.s_kv == 0 || rng.uniform() < o.invalid_frac) {
        v = kSentinels[rng.integer(0, 7)];
        if (v == 0) v = sh.s_kv;
      } else if (!used.empty() && !o.unique && rng.uniform() < o.dup_frac) {
        v = used[rng.integer(0, static_cast<int64_t>(used.size()) - 1)];
      } else {
        do v = rng.integer(0, sh.s_kv - 1);
        while (o.unique && std::find(used.begin(), used.end(), v) != used.end() &&
               static_cast<int64_t>(used.size()) < sh.s_kv);
        if (o.unique && std::find(used.begin(), used.end(), v) != used.end()) v = -1;  // row is full
      }
      if (v >= 0 && v < sh.s_kv) used.push_back(static_cast<int32_t>(v));
      P.idx.set(t * sh.topk + i, static_cast<double>(v));
    }
  }
  P.row_valid.assign(sh.s_q, 0);
  std::vector<char> referenced(sh.s_kv, 0);
  for (int64_t t = 0; t < sh.s_q; ++t)
    for (int64_t i = 0; i < sh.topk; ++i)
      if (P.valid(t, i)) P.row_valid[t] = 1, referenced[static_cast<int64_t>(P.idx.get(t * sh.topk + i))] = 1;
  if (o.nan_unreferenced)
    for (int64_t r = 0; r < sh.s_kv; ++r)
      if (!referenced[r])
        for (int64_t d = 0; d < sh.d_qk; ++d) P.kv.set(r * sh.d_qk + d, NAN);
  std::vector<double> out, lse;
  forward_f64(P, P.q.values(), P.kv.values(), &out, &lse);
  for (size_t i = 0; i < out.size(); ++i) P.out.set(i, out[i]);
  for (size_t i = 0; i < lse.size(); ++i) P.lse.set(i, lse[i]);
  P.dq.poison();
  P.dkv.poison();
  return P;
}

// The SPEC §6.5 formulas in float64, on the stored (rounded) inputs.
void backward_f64(const Problem& P, std::vector<double>* dq, std::vector<double>* dkv) {
  const Shape& s = P.sh;
  const std::vector<double> q = P.q.values(), kv = P.kv.values(), out = P.out.values(),
                            lse = P.lse.values(), dout = P.dout.values();
  const double tau = P.o.sm_scale;
  dq->assign(s.s_q * s.h_q * s.d_qk, 0.0);
  dkv->assign(s.s_kv * s.d_qk, 0.0);
  for (int64_t t = 0; t < s.s_q; ++t)
    for (int64_t h = 0; h < s.h_q; ++h) {
      const double* qv = &q[(t * s.h_q + h) * s.d_qk];
      const double* o = &out[(t * s.h_q + h) * s.d_v];
      const double* g = &dout[(t * s.h_q + h) * s.d_v];
      double D = 0;
      for (int64_t d = 0; d < s.d_v; ++d) D += o[d] * g[d];
      for (int64_t i = 0; i < s.topk; ++i) {
        if (!P.valid(t, i)) continue;
        const int64_t r = static_cast<int64_t>(P.idx.get(t * s.topk + i));
        const double* k = &kv[r * s.d_qk];
        double dot = 0, dp = 0;
        for (int64_t d = 0; d < s.d_qk; ++d) dot += qv[d] * k[d];
        for (int64_t d = 0; d < s.d_v; ++d) dp += g[d] * k[d];
        const double pr = std::exp(tau * dot - lse[t * s.h_q + h]);
        const double dz = pr * (dp - D);
        for (int64_t d = 0; d < s.d_qk; ++d) {
          (*dq)[(t * s.h_q + h) * s.d_qk + d] += tau * dz * k[d];
          (*dkv)[r * s.d_qk + d] += tau * dz * qv[d];
        }
        for (int64_t d = 0; d < s.d_v; ++d) (*dkv)[r * s.d_qk + d] += pr * g[d];
      }
    }
}

void check_close(const char* what, const std::vector<double>& got, const std::vector<double>& want,
                 const test::Tolerance& tol, bool print = false) {
  const test::Report rep = test::compare(what, got, want, tol);
  INFO(rep.describe());
  if (print) std::printf("  [measure] %s\n", rep.describe().c_str());
  CHECK(rep.ok);
}

// ‖a − r‖∞ / ‖r‖∞
double rel_inf(const std::vector<double>& a, const std::vector<double>& r) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(a[i] - r[i])), mag = std::max(mag, std::fabs(r[i]));
  return mag == 0 ? err : err / mag;
}

void run_ok(const SparseMlaBwdParams& p, Accum accum = Accum::kF32) {
  const Status s = accum == Accum::kF32 ? run(p) : ref::run(p, accum);
  INFO(s.message());
  REQUIRE(s.ok());
}

}  // namespace

TEST_CASE("sparse_mla_bwd matches the float64 SPEC formulas", "[sparse_mla_bwd]") {
  test::Rng rng(0x5b0d);
  const Shape shapes[] = {
      {1, 1, 1, 8, 4, 1},        {3, 7, 2, 16, 8, 5},    {5, 40, 4, 64, 32, 70},  // topk > s_kv
      {9, 33, 3, 48, 48, 17},    {0, 5, 2, 8, 8, 4},     {4, 0, 2, 8, 8, 3},      // empty problems
      {6, 300, 16, 576, 512, 64}, {2, 50, 128, 576, 512, 32},                      // V3.2 dims
      {70, 20, 2, 16, 8, 6},                                      // > 1 token block (64)
      {7, 50, 2, 576, 512, 4096},  // scratch-bounded blocks (3 tokens at f64), many duplicates
  };
  const DType dts[] = {DType::kBF16, DType::kF32};
  for (const Shape& sh : shapes)
    for (DType in : dts)
      for (DType grad : dts) {
        Options o;
        o.in = in;
        o.out = in;
        o.grad = grad;
        o.use_length = rng.uniform() < 0.5;
        o.pad = rng.integer(0, 1) * 8;
        o.sm_scale = rng.uniform() < 0.5 ? kSoftmaxScaleV32 : 0.5f;  // SPEC §9.5 backward scale
        Problem P = make_problem(rng, sh, o);
        INFO("s_q=" << sh.s_q << " s_kv=" << sh.s_kv << " h_q=" << sh.h_q << " d_qk=" << sh.d_qk
                    << " d_v=" << sh.d_v << " topk=" << sh.topk << " in=" << dtype_name(in)
                    << " grad=" << dtype_name(grad) << " scale=" << o.sm_scale << " pad=" << o.pad);
        std::vector<double> dq_ref, dkv_ref;
        backward_f64(P, &dq_ref, &dkv_ref);
        run_ok(P.params());
        const bool print = sh.d_qk == 576 && in == DType::kBF16 && grad == DType::kF32;
        check_close("dq", P.dq.values(), dq_ref, kSparseBwd, print);
        check_close("dkv", P.dkv.values(), dkv_ref, kSparseBwd, print);
        // Rows without a valid slot: dq exactly 0 (no NaN).
        for (int64_t t = 0; t < sh.s_q; ++t)
          if (!P.row_valid[t])
            for (int64_t e = 0; e < sh.h_q * sh.d_qk; ++e) REQUIRE(P.dq.get(t * sh.h_q * sh.d_qk + e) == 0.0);
        // The float64 accumulator: far tighter.
        if (grad == DType::kF32) {
          P.dq.poison();
          P.dkv.poison();
          run_ok(P.params(), Accum::kF64);
          check_close("dq (f64 accum)", P.dq.values(), dq_ref, {1e-6, 1e-5, 1e-10}, print);
          check_close("dkv (f64 accum)", P.dkv.values(), dkv_ref, {1e-6, 1e-5, 1e-10}, print);
        }
      }
}

TEST_CASE("sparse_mla_bwd equals central finite differences of the forward", "[sparse_mla_bwd]") {
  test::Rng rng(0xfd);
  const Shape shapes[] = {{3, 9, 2, 24, 16, 6}, {4, 5, 3, 12, 12, 9}, {2, 11, 1, 32, 8, 4}};
  for (const Shape& sh : shapes)
    for (float scale : {kSoftmaxScaleV32, 0.5f}) {
      Options o;
      o.in = o.out = o.grad = DType::kF32;
      o.sm_scale = scale;
      o.value_scale = 1.0;
      o.dup_frac = 0.3;  // duplicates: every occurrence is a separate softmax slot
      o.nan_unreferenced = false;
      Problem P = make_problem(rng, sh, o);
      run_ok(P.params(), Accum::kF64);
      const std::vector<double> dq = P.dq.values(), dkv = P.dkv.values();
      const std::vector<double> q0 = P.q.values(), kv0 = P.kv.values(), dout = P.dout.values();
      // L = Σ dout·out(q, kv), in float64.
      auto loss = [&](const std::vector<double>& q, const std::vector<double>& kv) {
        std::vector<double> out, lse;
        forward_f64(P, q, kv, &out, &lse);
        double l = 0;
        for (size_t i = 0; i < out.size(); ++i) l += dout[i] * out[i];
        return l;
      };
      const double eps = 1e-5;
      std::vector<double> fd_q(q0.size()), fd_kv(kv0.size());
      for (size_t i = 0; i < q0.size(); ++i) {
        std::vector<double> a = q0, b = q0;
        a[i] += eps, b[i] -= eps;
        fd_q[i] = (loss(a, kv0) - loss(b, kv0)) / (2 * eps);
      }
      for (size_t i = 0; i < kv0.size(); ++i) {
        std::vector<double> a = kv0, b = kv0;
        a[i] += eps, b[i] -= eps;
        fd_kv[i] = (loss(q0, a) - loss(q0, b)) / (2 * eps);
      }
      // Relative to the whole gradient (dq and dkv together): a row with a single valid slot has
      // dq = 0 exactly, where a per-tensor relative error would only measure rounding noise.
      double mag = 0, eq = 0, ekv = 0;
      for (double v : fd_q) mag = std::max(mag, std::fabs(v));
      for (double v : fd_kv) mag = std::max(mag, std::fabs(v));
      for (size_t i = 0; i < dq.size(); ++i) eq = std::max(eq, std::fabs(dq[i] - fd_q[i]) / mag);
      for (size_t i = 0; i < dkv.size(); ++i) ekv = std::max(ekv, std::fabs(dkv[i] - fd_kv[i]) / mag);
      std::printf("  [measure] finite differences (s_q %lld, scale %.4f): dq rel %.3e, dkv rel %.3e\n",
                  (long long)sh.s_q, scale, eq, ekv);
      CHECK(eq <= 1e-6);
      CHECK(ekv <= 1e-6);
    }
}

TEST_CASE("sparse_mla_bwd equals the dense backward restricted by the selection mask", "[sparse_mla_bwd]") {
  test::Rng rng(0xde5e);
  const Shape sh{7, 23, 4, 40, 32, 12};
  Options o;
  o.in = o.out = o.grad = DType::kF32;
  o.unique = true;
  o.value_scale = 0.5;
  o.nan_unreferenced = false;
  Problem P = make_problem(rng, sh, o);
  run_ok(P.params(), Accum::kF64);
  // Dense masked attention backward, written from scratch: mask[t][s] = s is selected by t.
  const std::vector<double> q = P.q.values(), kv = P.kv.values(), dout = P.dout.values();
  std::vector<double> dq(q.size(), 0.0), dkv(kv.size(), 0.0);
  const double tau = o.sm_scale;
  for (int64_t t = 0; t < sh.s_q; ++t) {
    std::vector<char> mask(sh.s_kv, 0);
    for (int64_t i = 0; i < sh.topk; ++i)
      if (P.valid(t, i)) mask[static_cast<int64_t>(P.idx.get(t * sh.topk + i))] = 1;
    for (int64_t h = 0; h < sh.h_q; ++h) {
      const double* qv = &q[(t * sh.h_q + h) * sh.d_qk];
      const double* g = &dout[(t * sh.h_q + h) * sh.d_v];
      std::vector<double> S(sh.s_kv, -kInf), Pm(sh.s_kv, 0.0), dP(sh.s_kv, 0.0);
      double m = -kInf;
      for (int64_t s = 0; s < sh.s_kv; ++s) {
        if (!mask[s]) continue;
        double dot = 0;
        for (int64_t d = 0; d < sh.d_qk; ++d) dot += qv[d] * kv[s * sh.d_qk + d];
        S[s] = tau * dot;
        m = std::max(m, S[s]);
      }
      if (m == -kInf) continue;
      double sum = 0;
      for (int64_t s = 0; s < sh.s_kv; ++s) sum += mask[s] ? std::exp(S[s] - m) : 0.0;
      std::vector<double> o_row(sh.d_v, 0.0);
      for (int64_t s = 0; s < sh.s_kv; ++s) {
        Pm[s] = mask[s] ? std::exp(S[s] - m) / sum : 0.0;
        for (int64_t d = 0; d < sh.d_v; ++d) o_row[d] += Pm[s] * kv[s * sh.d_qk + d];
      }
      // softmax backward: dS = P ∘ (dP − Σ P·dP), with dP = dO·Vᵀ (no use of the stored out/lse).
      double pdp = 0;
      for (int64_t s = 0; s < sh.s_kv; ++s) {
        for (int64_t d = 0; d < sh.d_v; ++d) dP[s] += g[d] * kv[s * sh.d_qk + d];
        pdp += Pm[s] * dP[s];
      }
      for (int64_t s = 0; s < sh.s_kv; ++s) {
        if (!mask[s]) continue;
        const double dS = Pm[s] * (dP[s] - pdp);
        for (int64_t d = 0; d < sh.d_qk; ++d) {
          dq[(t * sh.h_q + h) * sh.d_qk + d] += tau * dS * kv[s * sh.d_qk + d];
          dkv[s * sh.d_qk + d] += tau * dS * qv[d];
        }
        for (int64_t d = 0; d < sh.d_v; ++d) dkv[s * sh.d_qk + d] += Pm[s] * g[d];
      }
    }
  }
  CHECK(rel_inf(P.dq.values(), dq) <= 1e-6);
  CHECK(rel_inf(P.dkv.values(), dkv) <= 1e-6);
}

TEST_CASE("sparse_mla_bwd: duplicates count once per occurrence, base-2 lse, all-invalid rows",
          "[sparse_mla_bwd]") {
  test::Rng rng(0xd0b);
  const Shape sh{4, 6, 2, 16, 8, 5};
  Options o;
  o.in = o.out = o.grad = DType::kF32;
  o.invalid_frac = 0;
  o.empty_frac = 0;
  o.use_length = false;
  o.nan_unreferenced = false;
  o.value_scale = 0.5;
  Problem P = make_problem(rng, sh, o);
  // Row 0: [a, a, b, −1, s_kv]; row 1: all invalid (lse = +∞ as the forward writes it).
  const int32_t row0[] = {2, 2, 4, -1, 6};
  for (int i = 0; i < 5; ++i) P.idx.set(i, row0[i]), P.idx.set(5 + i, i % 2 ? -1 : 6);
  std::vector<double> out, lse;
  forward_f64(P, P.q.values(), P.kv.values(), &out, &lse);
  for (size_t i = 0; i < out.size(); ++i) P.out.set(i, out[i]);
  for (size_t i = 0; i < lse.size(); ++i) P.lse.set(i, lse[i]);
  REQUIRE(std::isinf(P.lse.get(2)));
  run_ok(P.params(), Accum::kF64);
  std::vector<double> dq_ref, dkv_ref;
  backward_f64(P, &dq_ref, &dkv_ref);
  const std::vector<double> dq = P.dq.values(), dkv = P.dkv.values();
  CHECK(rel_inf(dq, dq_ref) <= 2e-7);  // f32 storage of the f64-accumulated result
  CHECK(rel_inf(dkv, dkv_ref) <= 2e-7);
  for (int64_t e = 0; e < sh.h_q * sh.d_qk; ++e) CHECK(dq[sh.h_q * sh.d_qk + e] == 0.0);
  // Row 0 with the duplicate collapsed: the gradients differ (the duplicate doubles a's weight).
  Problem U = P;
  U.idx.set(1, -1);
  forward_f64(U, U.q.values(), U.kv.values(), &out, &lse);
  for (size_t i = 0; i < out.size(); ++i) U.out.set(i, out[i]);
  for (size_t i = 0; i < lse.size(); ++i) U.lse.set(i, lse[i]);
  run_ok(U.params(), Accum::kF64);
  CHECK(rel_inf(U.dq.values(), dq) > 1e-3);
  // lse in base 2: same gradients.
  Problem B = P;
  for (int64_t i = 0; i < sh.s_q * sh.h_q; ++i) B.lse.set(i, P.lse.get(i) / std::log(2.0));
  SparseMlaBwdParams pb = B.params();
  pb.lse_base = LseBase::kBase2;
  B.dq.poison();
  B.dkv.poison();
  run_ok(pb, Accum::kF64);
  CHECK(rel_inf(B.dq.values(), dq) <= 1e-6);
  CHECK(rel_inf(B.dkv.values(), dkv) <= 1e-6);
}

namespace {
// The child's output line for one problem: hashes of dq and dkv.
std::string hash_line(const Problem& P) {
  return "SMLABWDHASH " + std::to_string(test::fnv1a(P.dq.mem)) + " " + std::to_string(test::fnv1a(P.dkv.mem));
}
// 0: many (t, slot) pairs per kv row, two token blocks; 1: scratch-bounded blocks (3 tokens,
// or one per thread when there are more threads), so the block size varies with the thread count.
Problem determinism_problem(int which) {
  test::Rng rng(0xde7 + which);
  Options o;
  o.grad = DType::kF32;
  o.dup_frac = 0.3;
  return which == 0 ? make_problem(rng, {70, 37, 8, 64, 48, 24}, o)
                    : make_problem(rng, {10, 50, 2, 576, 512, 8192}, o);
}
}  // namespace

// Child half of the thread-count check: run by the parent test below in a fresh process.
TEST_CASE("sparse_mla_bwd determinism child", "[.smla_bwd_child]") {
  for (int which : {0, 1}) {
    Problem P = determinism_problem(which);
    run_ok(P.params());
    std::printf("%s\n", hash_line(P).c_str());
  }
}

TEST_CASE("sparse_mla_bwd is bitwise deterministic, run to run and across thread counts",
          "[sparse_mla_bwd]") {
  std::vector<std::string> want;
  for (int which : {0, 1}) {
    Problem P = determinism_problem(which);
    run_ok(P.params());
    const uint64_t hq = test::fnv1a(P.dq.mem), hkv = test::fnv1a(P.dkv.mem);
    for (int rep = 0; rep < 2; ++rep) {
      P.dq.poison();
      P.dkv.poison();
      run_ok(P.params());
      CHECK(test::fnv1a(P.dq.mem) == hq);
      CHECK(test::fnv1a(P.dkv.mem) == hkv);
    }
    want.push_back(hash_line(P));
  }
  for (int threads : {1, 3, 7}) {
    const test::ChildRun r = test::run_self_with_threads("[.smla_bwd_child]", threads, "SMLABWDHASH ");
    REQUIRE(r.status == 0);
    INFO("DSA_NUM_THREADS=" << threads);
    CHECK(r.lines == want);
  }
}

namespace {
void expect_failure(const SparseMlaBwdParams& p, Problem& P, StatusCode code, const char* needle) {
  P.dq.poison();
  P.dkv.poison();
  const std::vector<unsigned char> dq0 = P.dq.mem, dkv0 = P.dkv.mem;
  const Status s = run(p);
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("sparse_mla_bwd: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  CHECK(P.dq.mem == dq0);
  CHECK(P.dkv.mem == dkv0);
  const Status r = ref::run(p, Accum::kF64);
  CHECK(r.code() == code);
}
}  // namespace

TEST_CASE("sparse_mla_bwd rejects bad input, naming the argument, writing nothing", "[sparse_mla_bwd]") {
  test::Rng rng(0xbad);
  Options o;
  o.empty_frac = 0;
  Problem P = make_problem(rng, {3, 10, 2, 16, 8, 4}, o);
  const SparseMlaBwdParams good = P.params();
  {
    SparseMlaBwdParams p = good;
    run_ok(p);
  }
  SparseMlaBwdParams p = good;
  float sink[2] = {0, 0};
  SECTION("q") {
    p.q = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "q is required");
    p = good, p.q.dtype = DType::kI32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "q.dtype");
    p = good, p.q.rank = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q has rank 2");
    p = good, p.q.stride[2] = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q.stride[2]");
    p = good, p.q.data = nullptr;
    expect_failure(p, P, StatusCode::kNullPointer, "q is null");
    p = good, p.q.data = static_cast<char*>(p.q.data) + 1;
    expect_failure(p, P, StatusCode::kMisaligned, "q = ");
    p = good, p.q.shape[0] = -3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q.shape[0] = -3");
  }
  SECTION("kv") {
    p.kv.shape[1] = 12;
    expect_failure(p, P, StatusCode::kInvalidArgument, "kv.shape[1]");
    p = good, p.kv.dtype = DType::kE4M3;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "kv.dtype");
    p = good, p.kv = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "kv is required");
  }
  SECTION("indices") {
    p.indices.dtype = DType::kF32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "indices.dtype");
    p = good, p.indices.shape[0] = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "indices.shape[0]");
    p = good, p.indices = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "indices is required");
  }
  SECTION("topk_length") {
    p.topk_length.shape[0] = 4;
    expect_failure(p, P, StatusCode::kInvalidArgument, "topk_length.shape[0]");
    p = good;
    P.len.set(1, 5);  // > topk = 4
    expect_failure(p, P, StatusCode::kInvalidArgument, "topk_length[1] = 5");
    P.len.set(1, -1);
    expect_failure(p, P, StatusCode::kInvalidArgument, "topk_length[1] = -1");
  }
  SECTION("attn_sink") {
    p.attn_sink = make_view(sink, DType::kF32, {2});
    expect_failure(p, P, StatusCode::kInvalidArgument, "attn_sink");
  }
  SECTION("out") {
    p.out.shape[2] = 32;  // d_v > d_qk
    p.dout.shape[2] = 32;
    expect_failure(p, P, StatusCode::kUnsupportedShape, "d_v = 32 exceeds d_qk");
    p = good, p.out = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "out is required");
    p = good, p.out.dtype = DType::kE4M3;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "out.dtype");
  }
  SECTION("lse") {
    p.lse.dtype = DType::kBF16;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "lse.dtype");
    p = good, p.lse.shape[1] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "lse.shape[1]");
    p = good;
    const double keep = P.lse.get(3);
    P.lse.set(3, NAN);
    // Row 1 (flat 3 = t 1, h 1) has a valid slot unless its topk_length is 0; force it.
    P.len.set(1, 4);
    for (int i = 0; i < 4; ++i) P.idx.set(4 + i, 0);
    expect_failure(p, P, StatusCode::kInvalidArgument, "lse[1][1]");
    P.lse.set(3, -INFINITY);
    expect_failure(p, P, StatusCode::kInvalidArgument, "lse[1][1]");
    P.lse.set(3, keep);
  }
  SECTION("dout") {
    p.dout.shape[2] = 4;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dout.shape[2]");
    p = good, p.dout = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dout is required");
  }
  SECTION("dq") {
    p.dq = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dq is required");
    p = good, p.dq.dtype = DType::kI32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "dq.dtype");
    p = good, p.dq.stride[1] = 8;  // heads overlap (d_qk = 16)
    expect_failure(p, P, StatusCode::kInvalidArgument, "dq.stride[1] = 8");
    p = good, p.dq.shape[1] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dq.shape[1]");
    p = good, p.dq = p.q;  // alias an input
    p.dq.dtype = p.q.dtype;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dq overlaps q");
  }
  SECTION("dkv") {
    p.dkv = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dkv is required");
    p = good, p.dkv.stride[0] = 0;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dkv.stride[0] = 0 makes elements of dkv overlap");
    p = good, p.dkv.shape[0] = 9;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dkv.shape[0]");
    p = good, p.dkv.data = p.kv.data;
    p.dkv.dtype = p.kv.dtype;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dkv overlaps kv");
    p = good, p.dq.data = p.dkv.data;  // dq (96 elements) inside dkv's buffer (160) only
    p.dq.dtype = p.dkv.dtype;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dkv overlaps dq");
  }
  SECTION("sm_scale and lse_base") {
    for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
      p.sm_scale = bad;
      expect_failure(p, P, StatusCode::kInvalidArgument, "sm_scale");
    }
    p = good, p.lse_base = static_cast<LseBase>(7);
    expect_failure(p, P, StatusCode::kInvalidArgument, "lse_base = 7");
  }
}

TEST_CASE("sparse_mla_bwd through the C ABI equals the C++ API", "[sparse_mla_bwd][c_api]") {
  dsa_sparse_mla_bwd_params c;
  REQUIRE(dsa_sparse_mla_bwd_params_init(&c) == DSA_STATUS_OK);
  CHECK(c.struct_size == sizeof(c));
  CHECK(c.abi_version == DSA_ABI_VERSION);
  CHECK(c.sm_scale == 0.0f);
  CHECK(c.lse_base == DSA_LSE_BASE_NATURAL);
  CHECK(c.q.data == nullptr);

  test::Rng rng(0xcab1);
  Options o;
  o.grad = DType::kF32;
  Problem P = make_problem(rng, {5, 19, 4, 32, 16, 7}, o);
  run_ok(P.params());
  const std::vector<unsigned char> dq = P.dq.mem, dkv = P.dkv.mem;
  const SparseMlaBwdParams p = P.params();
  std::memcpy(&c.q, &p.q, sizeof(TensorView));
  std::memcpy(&c.kv, &p.kv, sizeof(TensorView));
  std::memcpy(&c.indices, &p.indices, sizeof(TensorView));
  std::memcpy(&c.topk_length, &p.topk_length, sizeof(TensorView));
  std::memcpy(&c.out, &p.out, sizeof(TensorView));
  std::memcpy(&c.lse, &p.lse, sizeof(TensorView));
  std::memcpy(&c.dout, &p.dout, sizeof(TensorView));
  std::memcpy(&c.dq, &p.dq, sizeof(TensorView));
  std::memcpy(&c.dkv, &p.dkv, sizeof(TensorView));
  c.sm_scale = p.sm_scale;
  P.dq.poison();
  P.dkv.poison();
  REQUIRE(dsa_sparse_mla_bwd_supports(&c) == DSA_STATUS_OK);
  size_t bytes = 123;
  REQUIRE(dsa_sparse_mla_bwd_workspace_size(&c, &bytes) == DSA_STATUS_OK);
  CHECK(bytes == 0);
  REQUIRE(dsa_sparse_mla_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
  CHECK(P.dq.mem == dq);
  CHECK(P.dkv.mem == dkv);
  P.dq.poison();
  REQUIRE(dsa_sparse_mla_bwd_run_reference(&c, DSA_ACCUM_F64) == DSA_STATUS_OK);
  std::vector<double> dq_ref, dkv_ref;
  backward_f64(P, &dq_ref, &dkv_ref);
  CHECK(rel_inf(P.dq.values(), dq_ref) <= 2e-7);
  // Bad input through the C ABI: the same status and message as C++.
  c.sm_scale = -1;
  CHECK(dsa_sparse_mla_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("sm_scale") != std::string::npos);
  CHECK(dsa_sparse_mla_bwd_run(nullptr, nullptr, 0, nullptr) == DSA_STATUS_NULL_POINTER);
  c.sm_scale = p.sm_scale;
  c.struct_size = 16;
  CHECK(dsa_sparse_mla_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("struct_size") != std::string::npos);
  c.struct_size = sizeof(c);
  CHECK(dsa_sparse_mla_bwd_run_reference(&c, 5) == DSA_STATUS_INVALID_ARGUMENT);
}

TEST_CASE("sparse_mla_bwd consumes the library forward's out and lse", "[sparse_mla_bwd]") {
  // OP-SMLA-FWD writes out/lse; the backward on them must match the float64 oracle run on the
  // float64 forward's out/lse (same validity rules, topk_length, natural-log lse, empty rows).
  test::Rng rng(0xf0b);
  for (DType dt : {DType::kF32, DType::kBF16}) {
    Options o;
    o.in = o.out = dt;
    o.grad = DType::kF32;
    o.value_scale = 0.5;
    Problem P = make_problem(rng, {9, 31, 4, 64, 48, 12}, o);
    std::vector<double> dq_ref, dkv_ref;
    backward_f64(P, &dq_ref, &dkv_ref);  // on the float64 forward's out (stored) and lse
    SparseMlaFwdParams f;
    f.q = P.q.view();
    f.kv = P.kv.view();
    f.indices = P.idx.view();
    f.topk_length = P.len.view();
    f.out = P.out.view();
    f.lse = P.lse.view();
    f.sm_scale = o.sm_scale;
    P.out.poison();
    P.lse.poison();
    const Status s = run(f);
    INFO(s.message());
    REQUIRE(s.ok());
    for (int64_t t = 0; t < 9; ++t)
      if (!P.row_valid[t]) CHECK(std::isinf(P.lse.get(t * 4)));
    run_ok(P.params());
    check_close("dq (library forward)", P.dq.values(), dq_ref, kSparseBwd);
    check_close("dkv (library forward)", P.dkv.values(), dkv_ref, kSparseBwd);
  }
}
