// OP-IDX-BWD (SPEC §8.4): the CPU reference against
//   - a naive float64 implementation of the §8.4 formulas written here (explicit Hadamard matrix,
//     explicit inverse rotation), dense and sparse G, Hadamard on and off;
//   - central finite differences of a float64 indexer forward from the raw inputs
//     (RoPE → Hadamard → ReLU score → weight fold), so RoPE⁻¹ and the Hadamard transpose are
//     checked against the pre-RoPE inputs;
//   - exact ReLU′(0) = 0 at exact zeros of z; dense ≡ sparse form;
// plus bitwise determinism and bad input for every argument.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

constexpr int D = 128;
const double kFold = 0.125 * static_cast<double>(kIndexerInvSqrtDim);  // 2⁻³·fl32(128^-0.5)

template <typename T>
TensorView view_of(std::vector<T>& v, DType dt, std::initializer_list<int64_t> shape) {
  return make_view(v.data(), dt, shape);
}

struct Problem {
  int64_t s_q = 0, s_kv = 0, h = 0, k_sel = 0, max_pos = 0;
  bool sparse = false, hadamard = false, ranges = false;
  DType in = DType::kF32, grad_dt = DType::kF32;
  // Inputs, stored. Values as doubles are read back from the stored type.
  std::vector<float> q32, k32;
  std::vector<bf16_t> q16, k16;
  std::vector<float> w, G, cos_t, sin_t;
  std::vector<int32_t> gidx, ks, ke, qpos, kpos;
  // Outputs (f32 or bf16 storage).
  std::vector<float> dq32, dk32, dw32;
  std::vector<bf16_t> dq16, dk16, dw16;

  double q(int64_t t, int64_t j, int d) const {
    const size_t i = (t * h + j) * D + d;
    return in == DType::kF32 ? q32[i] : bf16_to_float(q16[i]);
  }
  double k(int64_t s, int d) const {
    const size_t i = s * D + d;
    return in == DType::kF32 ? k32[i] : bf16_to_float(k16[i]);
  }
  void set_q(size_t i, double v) {
    if (in == DType::kF32) q32[i] = static_cast<float>(v); else q16[i] = float_to_bf16(static_cast<float>(v));
  }
  void set_k(size_t i, double v) {
    if (in == DType::kF32) k32[i] = static_cast<float>(v); else k16[i] = float_to_bf16(static_cast<float>(v));
  }
  // The (column, G) pairs of row t, in order, duplicates kept.
  std::vector<std::pair<int64_t, double>> row(int64_t t) const {
    std::vector<std::pair<int64_t, double>> r;
    if (sparse) {
      for (int64_t i = 0; i < k_sel; ++i) {
        const int32_t c = gidx[t * k_sel + i];
        if (c >= 0 && c < s_kv) r.push_back({c, G[t * k_sel + i]});
      }
    } else {
      const int64_t a = ranges ? ks[t] : 0, b = ranges ? ke[t] : s_kv;
      for (int64_t c = a; c < b; ++c) r.push_back({c, G[t * s_kv + c]});
    }
    return r;
  }
  void poison() {
    for (auto* v : {&dq32, &dk32, &dw32}) test::poison_float(*v);
    for (auto* v : {&dq16, &dk16, &dw16}) test::poison_float(*v);
  }
  std::vector<double> out(int which) const {  // 0 dq, 1 dk, 2 dw
    const auto& f = which == 0 ? dq32 : which == 1 ? dk32 : dw32;
    const auto& b = which == 0 ? dq16 : which == 1 ? dk16 : dw16;
    std::vector<double> r;
    if (grad_dt == DType::kF32) for (float x : f) r.push_back(x);
    else for (bf16_t x : b) r.push_back(bf16_to_float(x));
    return r;
  }
  IndexerBwdParams params() {
    IndexerBwdParams p;
    p.q = in == DType::kF32 ? view_of(q32, in, {s_q, h, D}) : view_of(q16, in, {s_q, h, D});
    p.k = in == DType::kF32 ? view_of(k32, in, {s_kv, D}) : view_of(k16, in, {s_kv, D});
    p.weights = view_of(w, DType::kF32, {s_q, h});
    if (sparse) {
      p.grad = view_of(G, DType::kF32, {s_q, k_sel});
      p.grad_indices = view_of(gidx, DType::kI32, {s_q, k_sel});
    } else {
      p.grad = view_of(G, DType::kF32, {s_q, s_kv});
      if (ranges) p.ks = view_of(ks, DType::kI32, {s_q}), p.ke = view_of(ke, DType::kI32, {s_q});
    }
    p.q_positions = view_of(qpos, DType::kI32, {s_q});
    p.k_positions = view_of(kpos, DType::kI32, {s_kv});
    p.rope_cos = view_of(cos_t, DType::kF32, {max_pos, 32});
    p.rope_sin = view_of(sin_t, DType::kF32, {max_pos, 32});
    p.hadamard = hadamard;
    if (grad_dt == DType::kF32) {
      p.dq_raw = view_of(dq32, DType::kF32, {s_q, h, D});
      p.dk_raw = view_of(dk32, DType::kF32, {s_kv, D});
      p.dw_raw = view_of(dw32, DType::kF32, {s_q, h});
    } else {
      p.dq_raw = view_of(dq16, DType::kBF16, {s_q, h, D});
      p.dk_raw = view_of(dk16, DType::kBF16, {s_kv, D});
      p.dw_raw = view_of(dw16, DType::kBF16, {s_q, h});
    }
    return p;
  }
};

struct Config {
  int64_t s_q, s_kv, h, k_sel;
  bool sparse, hadamard, ranges;
  DType in, grad;
  bool integer_values = false;  // q, k ∈ {−1, 0, 1}: many exact zeros of z
};

Problem make_problem(test::Rng& rng, const Config& c) {
  Problem P;
  P.s_q = c.s_q, P.s_kv = c.s_kv, P.h = c.h, P.k_sel = c.k_sel, P.sparse = c.sparse;
  P.hadamard = c.hadamard, P.ranges = c.ranges, P.in = c.in, P.grad_dt = c.grad;
  P.max_pos = 50;
  P.q32.resize(c.s_q * c.h * D), P.q16.resize(c.s_q * c.h * D);
  P.k32.resize(c.s_kv * D), P.k16.resize(c.s_kv * D);
  const double qoff = rng.uniform(-0.05, 0.05), koff = rng.uniform(-0.05, 0.05);
  for (size_t i = 0; i < P.q32.size(); ++i)
    P.set_q(i, c.integer_values ? static_cast<double>(rng.integer(-1, 1)) : rng.normal() * 0.3 + qoff);
  for (size_t i = 0; i < P.k32.size(); ++i)
    P.set_k(i, c.integer_values ? static_cast<double>(rng.integer(-1, 1)) : rng.normal() * 0.3 + koff);
  P.w.resize(c.s_q * c.h);
  for (auto& x : P.w) x = static_cast<float>(rng.normal() * 0.1);
  const int64_t gcols = c.sparse ? c.k_sel : c.s_kv;
  P.G.resize(c.s_q * gcols);
  for (auto& x : P.G) x = static_cast<float>(rng.normal() * 1e-2);
  if (c.sparse) {
    P.gidx.resize(c.s_q * c.k_sel);
    for (auto& x : P.gidx) {
      const double u = rng.uniform();
      x = u < 0.15 ? -1 : u < 0.2 ? static_cast<int32_t>(c.s_kv + rng.integer(0, 3))
                                  : static_cast<int32_t>(rng.integer(0, std::max<int64_t>(0, c.s_kv - 1)));
      if (c.s_kv == 0) x = -1;
    }
  }
  if (c.ranges) {
    P.ks.resize(c.s_q), P.ke.resize(c.s_q);
    for (int64_t t = 0; t < c.s_q; ++t) {
      P.ks[t] = static_cast<int32_t>(rng.integer(0, c.s_kv));
      P.ke[t] = static_cast<int32_t>(rng.integer(P.ks[t], c.s_kv));
    }
  }
  P.cos_t.resize(P.max_pos * 32), P.sin_t.resize(P.max_pos * 32);
  for (int64_t i = 0; i < P.max_pos * 32; ++i) {
    const double th = rng.uniform(-3.2, 3.2);
    P.cos_t[i] = static_cast<float>(std::cos(th)), P.sin_t[i] = static_cast<float>(std::sin(th));
  }
  P.qpos.resize(c.s_q), P.kpos.resize(c.s_kv);
  for (auto& x : P.qpos) x = static_cast<int32_t>(rng.integer(0, P.max_pos - 1));
  for (auto& x : P.kpos) x = static_cast<int32_t>(rng.integer(0, P.max_pos - 1));
  P.dq32.resize(c.s_q * c.h * D), P.dq16.resize(c.s_q * c.h * D);
  P.dk32.resize(c.s_kv * D), P.dk16.resize(c.s_kv * D);
  P.dw32.resize(c.s_q * c.h), P.dw16.resize(c.s_q * c.h);
  P.poison();
  return P;
}

// ---- float64 oracle, straight from SPEC §8.4 ----------------------------------------------------

int popcount(unsigned x) { return __builtin_popcount(x); }

// y = Mᵀ x for the forward map M = (Hadamard ∘ RoPE) on one 128-d row, written with the explicit
// matrices: H[r][c] = (−1)^popcount(r & c)·fl32(128^-0.5); R = rotation of pairs (i, i + 32).
std::vector<double> transform_t(const std::vector<double>& g, bool hadamard, double* c, double* s) {
  std::vector<double> y = g;
  if (hadamard) {
    std::vector<double> z(D, 0.0);
    for (int r = 0; r < D; ++r)
      for (int col = 0; col < D; ++col)
        z[r] += ((popcount(r & col) & 1) ? -1.0 : 1.0) * static_cast<double>(kIndexerInvSqrtDim) * y[col];
    y = z;
  }
  // Forward R: [a'; b'] = [c −s; s c][a; b]. Rᵀ = [c s; −s c].
  std::vector<double> x = y;
  for (int i = 0; i < 32; ++i) {
    x[i] = c[i] * y[i] + s[i] * y[i + 32];
    x[i + 32] = -s[i] * y[i] + c[i] * y[i + 32];
  }
  return x;
}

// The score-gradient stage alone: G → the gradients w.r.t. the post-transform q, k and the folded
// w (what the loss ops output, and what the transforms-only form takes).
void post_grads(const Problem& P, std::vector<double>* dqp, std::vector<double>* dkp, std::vector<double>* dwp) {
  dqp->assign(P.s_q * P.h * D, 0.0);
  dkp->assign(P.s_kv * D, 0.0);
  dwp->assign(P.s_q * P.h, 0.0);
  for (int64_t t = 0; t < P.s_q; ++t)
    for (const auto& [s, g] : P.row(t))
      for (int64_t j = 0; j < P.h; ++j) {
        double z = 0;
        for (int d = 0; d < D; ++d) z += P.q(t, j, d) * P.k(s, d);
        (*dwp)[t * P.h + j] += g * std::max(z, 0.0);
        const double dz = z > 0 ? g * P.w[t * P.h + j] : 0.0;
        for (int d = 0; d < D; ++d) {
          (*dqp)[(t * P.h + j) * D + d] += dz * P.k(s, d);
          (*dkp)[s * D + d] += dz * P.q(t, j, d);
        }
      }
}

void oracle(const Problem& P, std::vector<double>* dq, std::vector<double>* dk, std::vector<double>* dw) {
  dq->assign(P.s_q * P.h * D, 0.0);
  dk->assign(P.s_kv * D, 0.0);
  std::vector<double> dqp, dkp;
  post_grads(P, &dqp, &dkp, dw);
  for (auto& x : *dw) x *= kFold;
  double c[32], sn[32];
  for (int64_t t = 0; t < P.s_q; ++t) {
    for (int i = 0; i < 32; ++i) c[i] = P.cos_t[P.qpos[t] * 32 + i], sn[i] = P.sin_t[P.qpos[t] * 32 + i];
    for (int64_t j = 0; j < P.h; ++j) {
      std::vector<double> g(dqp.begin() + (t * P.h + j) * D, dqp.begin() + (t * P.h + j + 1) * D);
      const std::vector<double> x = transform_t(g, P.hadamard, c, sn);
      std::copy(x.begin(), x.end(), dq->begin() + (t * P.h + j) * D);
    }
  }
  for (int64_t s = 0; s < P.s_kv; ++s) {
    for (int i = 0; i < 32; ++i) c[i] = P.cos_t[P.kpos[s] * 32 + i], sn[i] = P.sin_t[P.kpos[s] * 32 + i];
    std::vector<double> g(dkp.begin() + s * D, dkp.begin() + (s + 1) * D);
    const std::vector<double> x = transform_t(g, P.hadamard, c, sn);
    std::copy(x.begin(), x.end(), dk->begin() + s * D);
  }
}

// The exact inverse (in float64) of the forward transform of one 128-d row, RoPE (rotation by +θ
// with the f32 table values c, s: det = c² + s², not exactly 1) then the scaled Hadamard
// (H·H = 128·I, so its inverse is H/(128·fl32(128^-0.5))). The finite-difference tests use it to
// pick raw inputs whose transformed values are exactly the f32 values the op receives, so the f64
// forward and the op evaluate at the same point (a dot product q·k with cancellation would
// otherwise amplify the f32 rounding of q, k beyond the 1e-6 bound).
void inverse_row(const float* post, const float* cs, const float* sn, bool hadamard, double* raw) {
  double y[D];
  for (int r = 0; r < D; ++r) {
    if (!hadamard) { y[r] = post[r]; continue; }
    double acc = 0;
    for (int col = 0; col < D; ++col) acc += ((popcount(r & col) & 1) ? -1.0 : 1.0) * static_cast<double>(post[col]);
    y[r] = acc / (128.0 * static_cast<double>(kIndexerInvSqrtDim));
  }
  for (int d = 0; d < D; ++d) raw[d] = y[d];
  for (int i = 0; i < 32; ++i) {
    const double c = cs[i], s = sn[i], det = c * c + s * s;
    raw[i] = (c * y[i] + s * y[i + 32]) / det;
    raw[i + 32] = (c * y[i + 32] - s * y[i]) / det;
  }
}

void run_ok(const IndexerBwdParams& p, Accum accum = Accum::kF32) {
  const Status s = accum == Accum::kF32 ? run(p) : ref::run(p, accum);
  INFO(s.message());
  REQUIRE(s.ok());
}

double rel_inf(const std::vector<double>& a, const std::vector<double>& r, double mag = 0) {
  double err = 0;
  for (size_t i = 0; i < a.size(); ++i) err = std::max(err, std::fabs(a[i] - r[i])), mag = std::max(mag, std::fabs(r[i]));
  return mag == 0 ? err : err / mag;
}

// fp32 reference vs the fp64 oracle. The sums cancel (G has both signs), so the element test
// uses an absolute floor relative to the tensor's scale; cos_diff is the global check.
void check_close(const char* what, const std::vector<double>& got, const std::vector<double>& want, bool bf16_out,
                 bool print) {
  double mag = 0;
  for (double v : want) mag = std::max(mag, std::fabs(v));
  const test::Tolerance tol = bf16_out ? test::Tolerance{1e-5 * mag + 1e-30, 2.01 / 256, 1e-5}
                                       : test::Tolerance{1e-5 * mag + 1e-30, 1e-4, 1e-9};
  const test::Report rep = test::compare(what, got, want, tol);
  INFO(rep.describe());
  if (print) std::printf("  [measure] %s\n", rep.describe().c_str());
  CHECK(rep.ok);
}

}  // namespace

TEST_CASE("indexer_bwd matches the float64 SPEC formulas", "[indexer_bwd]") {
  test::Rng rng(0x1dbd);
  const Config configs[] = {
      // s_q, s_kv, h, k_sel, sparse, hadamard, ranges, in, grad
      {1, 1, 1, 0, false, false, false, DType::kF32, DType::kF32},
      {5, 9, 3, 0, false, true, true, DType::kBF16, DType::kF32},
      {7, 13, 4, 0, false, false, true, DType::kF32, DType::kF32},
      {6, 70, 64, 0, false, true, true, DType::kBF16, DType::kF32},   // V3.2 heads, 2 key blocks
      {8, 11, 5, 6, true, false, false, DType::kBF16, DType::kF32},
      {9, 140, 64, 24, true, true, false, DType::kBF16, DType::kF32},
      {4, 6, 2, 12, true, true, false, DType::kF32, DType::kBF16},    // k > s_kv: many duplicates
      {3, 8, 2, 0, false, true, true, DType::kF32, DType::kBF16},
      {0, 4, 2, 3, true, false, false, DType::kF32, DType::kF32},     // empty problems
      {3, 0, 2, 0, false, false, false, DType::kF32, DType::kF32},
      {3, 0, 2, 2, true, true, false, DType::kF32, DType::kF32},
      {6, 10, 8, 0, false, false, true, DType::kF32, DType::kF32, true},  // exact zeros of z
      {6, 10, 8, 5, true, true, false, DType::kBF16, DType::kF32, true},
      {70, 30, 2, 8, true, false, false, DType::kF32, DType::kF32},   // > 1 token block (64)
      {70, 130, 2, 0, false, false, true, DType::kBF16, DType::kF32}, // 3 key blocks
  };
  for (const Config& c : configs) {
    Problem P = make_problem(rng, c);
    INFO("s_q=" << c.s_q << " s_kv=" << c.s_kv << " h=" << c.h << " k=" << c.k_sel << " sparse=" << c.sparse
                << " hadamard=" << c.hadamard << " ranges=" << c.ranges << " in=" << dtype_name(c.in)
                << " grad=" << dtype_name(c.grad) << " integer=" << c.integer_values);
    std::vector<double> dq, dk, dw;
    oracle(P, &dq, &dk, &dw);
    run_ok(P.params());
    const bool bf = c.grad == DType::kBF16, print = c.h == 64;
    check_close("dq_raw", P.out(0), dq, bf, print);
    check_close("dk_raw", P.out(1), dk, bf, print);
    check_close("dw_raw", P.out(2), dw, bf, print);
    if (c.grad == DType::kF32) {
      P.poison();
      run_ok(P.params(), Accum::kF64);
      CHECK(rel_inf(P.out(0), dq) <= 2e-7);  // f32 storage of the f64 result
      CHECK(rel_inf(P.out(1), dk) <= 2e-7);
      CHECK(rel_inf(P.out(2), dw) <= 2e-7);
    }
  }
}

TEST_CASE("indexer_bwd: ReLU′(0) = 0 at exact zeros of z", "[indexer_bwd]") {
  test::Rng rng(0x2e10);
  Problem P = make_problem(rng, {4, 6, 3, 0, false, true, false, DType::kBF16, DType::kF32});
  // Head (1, 2) has q = 0, key 4 has k = 0: every z they touch is exactly 0. With ReLU′(0) = 1
  // their gradients would be Σ G·w·k and Σ G·w·q ≠ 0; with ReLU′(0) = 0 they are exactly 0.
  for (int d = 0; d < D; ++d) P.set_q((1 * 3 + 2) * D + d, 0.0), P.set_k(4 * D + d, 0.0);
  run_ok(P.params());
  const std::vector<double> dq = P.out(0), dk = P.out(1), dw = P.out(2);
  for (int d = 0; d < D; ++d) {
    CHECK(dq[(1 * 3 + 2) * D + d] == 0.0);
    CHECK(dk[4 * D + d] == 0.0);
  }
  CHECK(dw[1 * 3 + 2] == 0.0);
  double other = 0;
  for (int d = 0; d < D; ++d) other += std::fabs(dq[(1 * 3 + 1) * D + d]) + std::fabs(dk[3 * D + d]);
  CHECK(other > 0);
}

TEST_CASE("indexer_bwd equals finite differences w.r.t. the raw (pre-RoPE) inputs", "[indexer_bwd]") {
  test::Rng rng(0xfd1);
  for (bool hadamard : {false, true})
    for (bool sparse : {false, true}) {
      const Config c{3, 5, 2, 7, sparse, hadamard, !sparse, DType::kF32, DType::kF32};
      Problem P = make_problem(rng, c);
      if (!sparse)  // non-empty ragged ranges: an all-empty draw would make the check vacuous
        for (int64_t t = 0; t < P.s_q; ++t) {
          P.ks[t] = static_cast<int32_t>(rng.integer(0, P.s_kv - 1));
          P.ke[t] = static_cast<int32_t>(rng.integer(P.ks[t] + 1, P.s_kv));
        }
      // Raw inputs in float64; the op receives the transformed q, k (rounded to f32) and folded w.
      const int64_t nq = P.s_q * P.h * D, nk = P.s_kv * D, nw = P.s_q * P.h;
      std::vector<double> x(nq + nk + nw);  // [q_raw | k_raw | w_raw]
      // (drawn below, away from the ReLU kinks)
      auto fwd_row = [&](const double* raw, int32_t pos, double* out) {
        double y[D];
        for (int d = 0; d < D; ++d) y[d] = raw[d];
        for (int i = 0; i < 32; ++i) {
          const double cs = P.cos_t[pos * 32 + i], sn = P.sin_t[pos * 32 + i], a = raw[i], b = raw[i + 32];
          y[i] = a * cs - b * sn;
          y[i + 32] = a * sn + b * cs;
        }
        for (int r = 0; r < D; ++r) {
          if (!hadamard) { out[r] = y[r]; continue; }
          double acc = 0;
          for (int col = 0; col < D; ++col)
            acc += ((popcount(r & col) & 1) ? -1.0 : 1.0) * static_cast<double>(kIndexerInvSqrtDim) * y[col];
          out[r] = acc;
        }
      };
      // L = Σ_t Σ_(s, G) G·I[t, s], I = Σ_j w·ReLU(q·k), every stage in float64.
      auto loss = [&](const std::vector<double>& xv, std::vector<double>* qpost, std::vector<double>* kpost) {
        std::vector<double> qp(nq), kp(nk);
        for (int64_t r = 0; r < P.s_q * P.h; ++r) fwd_row(&xv[r * D], P.qpos[r / P.h], &qp[r * D]);
        for (int64_t s = 0; s < P.s_kv; ++s) fwd_row(&xv[nq + s * D], P.kpos[s], &kp[s * D]);
        double L = 0;
        for (int64_t t = 0; t < P.s_q; ++t)
          for (const auto& [s, g] : P.row(t))
            for (int64_t j = 0; j < P.h; ++j) {
              double z = 0;
              for (int d = 0; d < D; ++d) z += qp[(t * P.h + j) * D + d] * kp[s * D + d];
              L += g * xv[nq + nk + t * P.h + j] * kFold * std::max(z, 0.0);
            }
        if (qpost) *qpost = qp, *kpost = kp;
        return L;
      };
      // Keep every used z = q·k at least 1e-4 away from the ReLU kink, so that no central difference
      // (a step of 1e-6) straddles it; redraw otherwise.
      std::vector<double> qp, kp;
      for (int attempt = 0;; ++attempt) {
        REQUIRE(attempt < 100);
        for (auto& v : x) v = rng.normal() * 0.3;
        loss(x, &qp, &kp);
        // Snap to the op's f32 inputs (see inverse_row); w_raw so that w_raw·fold is an f32 value.
        for (int64_t r = 0; r < P.s_q * P.h + P.s_kv; ++r) {
          const bool is_q = r < P.s_q * P.h;
          const int32_t pos = is_q ? P.qpos[r / P.h] : P.kpos[r - P.s_q * P.h];
          const double* src = is_q ? &qp[r * D] : &kp[(r - P.s_q * P.h) * D];
          float f[D];
          for (int d = 0; d < D; ++d) f[d] = static_cast<float>(src[d]);
          inverse_row(f, &P.cos_t[pos * 32], &P.sin_t[pos * 32], hadamard, &x[r * D]);
        }
        for (int64_t i = nq + nk; i < nq + nk + nw; ++i) x[i] = static_cast<double>(static_cast<float>(x[i] * kFold)) / kFold;
        loss(x, &qp, &kp);
        double zmin = 1e300;
        for (int64_t t = 0; t < P.s_q; ++t)
          for (const auto& [s, g] : P.row(t))
            for (int64_t j = 0; j < P.h; ++j) {
              double z = 0;
              for (int d = 0; d < D; ++d) z += qp[(t * P.h + j) * D + d] * kp[s * D + d];
              zmin = std::min(zmin, std::fabs(z));
            }
        if (zmin >= 1e-4) break;
        std::printf("  [measure] finite differences: min |z| = %.3e, redrawn\n", zmin);
      }
      for (int64_t i = 0; i < nq; ++i) P.q32[i] = static_cast<float>(qp[i]);
      for (int64_t i = 0; i < nk; ++i) P.k32[i] = static_cast<float>(kp[i]);
      for (int64_t i = 0; i < nw; ++i) P.w[i] = static_cast<float>(x[nq + nk + i] * kFold);
      run_ok(P.params(), Accum::kF64);
      std::vector<double> got;
      for (int w = 0; w < 3; ++w) for (double v : P.out(w)) got.push_back(v);
      std::vector<double> fd(x.size());
      const double eps = 1e-6;
      for (size_t i = 0; i < x.size(); ++i) {
        std::vector<double> a = x, b = x;
        a[i] += eps, b[i] -= eps;
        fd[i] = (loss(a, nullptr, nullptr) - loss(b, nullptr, nullptr)) / (2 * eps);
      }
      const double e = rel_inf(got, fd);
      std::printf("  [measure] finite differences (hadamard %d, sparse %d): rel %.3e\n", hadamard, sparse, e);
      CHECK(e <= 1e-6);
      CHECK(*std::max_element(fd.begin(), fd.end()) - *std::min_element(fd.begin(), fd.end()) > 0);
    }
}

TEST_CASE("indexer_bwd: the sparse form equals the dense form on the same columns", "[indexer_bwd]") {
  test::Rng rng(0x5d);
  Problem Dn = make_problem(rng, {5, 12, 4, 0, false, true, true, DType::kBF16, DType::kF32});
  Problem Sp = Dn;
  Sp.sparse = true, Sp.ranges = false;
  Sp.k_sel = Dn.s_kv + 2;
  Sp.G.assign(Sp.s_q * Sp.k_sel, 0.0f);
  Sp.gidx.assign(Sp.s_q * Sp.k_sel, -1);
  for (int64_t t = 0; t < Dn.s_q; ++t) {
    std::vector<int32_t> cols;
    for (int32_t c = Dn.ks[t]; c < Dn.ke[t]; ++c) cols.push_back(c);
    std::shuffle(cols.begin(), cols.end(), rng.engine());
    for (size_t i = 0; i < cols.size(); ++i)
      Sp.gidx[t * Sp.k_sel + i + 1] = cols[i], Sp.G[t * Sp.k_sel + i + 1] = Dn.G[t * Dn.s_kv + cols[i]];
    Sp.gidx[t * Sp.k_sel] = static_cast<int32_t>(Dn.s_kv);  // invalid slots anywhere
  }
  run_ok(Dn.params(), Accum::kF64);
  run_ok(Sp.params(), Accum::kF64);
  for (int w = 0; w < 3; ++w) CHECK(rel_inf(Sp.out(w), Dn.out(w)) <= 2e-7);
}

namespace {
// The child's output line for one problem: hashes of dq, dk and dw.
std::string hash_line(const Problem& P) {
  return "IDXBWDHASH " + std::to_string(test::fnv1a(P.dq32)) + " " + std::to_string(test::fnv1a(P.dk32)) + " " +
         std::to_string(test::fnv1a(P.dw32));
}
Problem determinism_problem(bool sparse) {
  test::Rng rng(sparse ? 0xd5 : 0xdd);
  return make_problem(rng, {40, 150, 16, 48, sparse, true, !sparse, DType::kBF16, DType::kF32});
}
}  // namespace

TEST_CASE("indexer_bwd determinism child", "[.idx_bwd_child]") {
  for (bool sparse : {false, true}) {
    Problem P = determinism_problem(sparse);
    run_ok(P.params());
    std::printf("%s\n", hash_line(P).c_str());
  }
}

TEST_CASE("indexer_bwd is bitwise deterministic, run to run and across thread counts", "[indexer_bwd]") {
  std::vector<std::string> want;
  for (bool sparse : {false, true}) {
    Problem P = determinism_problem(sparse);
    run_ok(P.params());
    const uint64_t a = test::fnv1a(P.dq32), b = test::fnv1a(P.dk32), c = test::fnv1a(P.dw32);
    for (int rep = 0; rep < 2; ++rep) {
      P.poison();
      run_ok(P.params());
      CHECK(test::fnv1a(P.dq32) == a);
      CHECK(test::fnv1a(P.dk32) == b);
      CHECK(test::fnv1a(P.dw32) == c);
    }
    want.push_back(hash_line(P));
  }
  for (int threads : {1, 3, 7}) {
    const test::ChildRun r = test::run_self_with_threads("[.idx_bwd_child]", threads, "IDXBWDHASH ");
    REQUIRE(r.status == 0);
    INFO("DSA_NUM_THREADS=" << threads);
    CHECK(r.lines == want);
  }
}

namespace {
void expect_failure(const IndexerBwdParams& p, Problem& P, StatusCode code, const char* needle) {
  P.poison();
  const std::vector<float> a = P.dq32, b = P.dk32, c = P.dw32;
  const Status s = run(p);
  INFO("message: " << s.message());
  CHECK(s.code() == code);
  CHECK(s.message().rfind("indexer_bwd: ", 0) == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  CHECK(std::memcmp(a.data(), P.dq32.data(), a.size() * 4) == 0);
  CHECK(std::memcmp(b.data(), P.dk32.data(), b.size() * 4) == 0);
  CHECK(std::memcmp(c.data(), P.dw32.data(), c.size() * 4) == 0);
  CHECK(ref::run(p, Accum::kF64).code() == code);
}
}  // namespace

TEST_CASE("indexer_bwd rejects bad input, naming the argument, writing nothing", "[indexer_bwd]") {
  test::Rng rng(0xbad1);
  Problem P = make_problem(rng, {3, 7, 2, 0, false, true, true, DType::kBF16, DType::kF32});
  Problem S = make_problem(rng, {3, 7, 2, 5, true, false, false, DType::kF32, DType::kF32});
  const IndexerBwdParams good = P.params(), sgood = S.params();
  run_ok(good);
  run_ok(sgood);
  IndexerBwdParams p = good;
  SECTION("q") {
    p.q = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "q is required");
    p = good, p.q.shape[2] = 64;
    expect_failure(p, P, StatusCode::kUnsupportedShape, "q.shape[2] = 64");
    p = good, p.q.dtype = DType::kE4M3;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "q.dtype");
    p = good, p.q.stride[2] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q.stride[2]");
  }
  SECTION("k") {
    p.k.shape[0] = 6;
    p.k_positions.shape[0] = 6;
    p.dk_raw.shape[0] = 6;
    expect_failure(p, P, StatusCode::kInvalidArgument, "from k.shape[0]");  // s_kv bound by k
    p = good, p.k.dtype = DType::kI32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "k.dtype");
    p = good, p.k = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "k is required");
  }
  SECTION("weights") {
    p.weights.dtype = DType::kBF16;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "weights.dtype");
    p = good, p.weights.shape[1] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "weights.shape[1]");
  }
  SECTION("grad, dense") {
    p.grad = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "grad is required");
    p = good, p.grad.dtype = DType::kBF16;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "grad.dtype");
    p = good, p.grad.shape[0] = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "grad.shape[0]");
  }
  SECTION("grad_indices, sparse") {
    IndexerBwdParams q = sgood;
    q.grad_indices.dtype = DType::kF32;
    expect_failure(q, S, StatusCode::kUnsupportedDtype, "grad_indices.dtype");
    q = sgood, q.grad_indices.shape[1] = 4;
    expect_failure(q, S, StatusCode::kInvalidArgument, "grad_indices.shape[1]");
    q = sgood, q.ks = good.ks;
    expect_failure(q, S, StatusCode::kInvalidArgument, "ks is given together with grad_indices");
    q = sgood, q.ke = good.ke;
    expect_failure(q, S, StatusCode::kInvalidArgument, "ke is given together with grad_indices");
  }
  SECTION("ks, ke") {
    p.ks.shape[0] = 4;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ks.shape[0]");
    p = good, p.ke.dtype = DType::kF32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "ke.dtype");
    p = good;
    const int32_t ks1 = P.ks[1], ke1 = P.ke[1];
    P.ks[1] = -1;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ks[1] = -1");
    P.ks[1] = 8;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ks[1] = 8");
    P.ks[1] = 3, P.ke[1] = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ke[1] = 2");
    P.ke[1] = 8;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ke[1] = 8");
    P.ks[1] = ks1, P.ke[1] = ke1;
  }
  SECTION("positions and tables") {
    p.q_positions = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "q_positions is required");
    p = good, p.k_positions.shape[0] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "k_positions.shape[0]");
    p = good, p.rope_cos.shape[1] = 64;
    expect_failure(p, P, StatusCode::kUnsupportedShape, "rope_cos.shape[1] = 64");
    p = good, p.rope_sin.shape[0] = 10;
    expect_failure(p, P, StatusCode::kInvalidArgument, "rope_sin.shape[0]");
    p = good, p.rope_sin = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "rope_sin is required");
    p = good;
    P.qpos[2] = 50;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q_positions[2] = 50");
    P.qpos[2] = 0, P.kpos[5] = -3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "k_positions[5] = -3");
  }
  SECTION("outputs") {
    p.dq_raw = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dq_raw is required");
    p = good, p.dk_raw.dtype = DType::kI32;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "dk_raw.dtype");
    p = good, p.dq_raw.stride[0] = 0;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dq_raw.stride[0] = 0");
    p = good, p.dk_raw.stride[0] = 64;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dk_raw.stride[0] = 64");
    p = good, p.dw_raw.stride[0] = 1;
    expect_failure(p, P, StatusCode::kInvalidArgument, "makes elements of dw_raw overlap");
    p = good, p.dw_raw.shape[1] = 5;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_raw.shape[1]");
    p = good, p.dw_raw.data = p.weights.data;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_raw overlaps weights");
    p = good, p.dw_raw.data = p.dq_raw.data;  // inside dq_raw's buffer only
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_raw overlaps dq_raw");
  }
}

TEST_CASE("indexer_bwd through the C ABI equals the C++ API", "[indexer_bwd][c_api]") {
  dsa_indexer_bwd_params c;
  REQUIRE(dsa_indexer_bwd_params_init(&c) == DSA_STATUS_OK);
  CHECK(c.struct_size == sizeof(c));
  CHECK(c.abi_version == DSA_ABI_VERSION);
  CHECK(c.hadamard == 0);
  CHECK(c.grad_indices.data == nullptr);

  test::Rng rng(0xcab2);
  for (bool sparse : {false, true}) {
    Problem P = make_problem(rng, {4, 9, 3, 6, sparse, true, !sparse, DType::kBF16, DType::kF32});
    const IndexerBwdParams p = P.params();
    run_ok(p);
    const std::vector<float> dq = P.dq32, dk = P.dk32, dw = P.dw32;
    REQUIRE(dsa_indexer_bwd_params_init(&c) == DSA_STATUS_OK);
    std::memcpy(&c.q, &p.q, sizeof(TensorView));
    std::memcpy(&c.k, &p.k, sizeof(TensorView));
    std::memcpy(&c.weights, &p.weights, sizeof(TensorView));
    std::memcpy(&c.grad, &p.grad, sizeof(TensorView));
    std::memcpy(&c.grad_indices, &p.grad_indices, sizeof(TensorView));
    std::memcpy(&c.ks, &p.ks, sizeof(TensorView));
    std::memcpy(&c.ke, &p.ke, sizeof(TensorView));
    std::memcpy(&c.q_positions, &p.q_positions, sizeof(TensorView));
    std::memcpy(&c.k_positions, &p.k_positions, sizeof(TensorView));
    std::memcpy(&c.rope_cos, &p.rope_cos, sizeof(TensorView));
    std::memcpy(&c.rope_sin, &p.rope_sin, sizeof(TensorView));
    c.hadamard = 1;
    std::memcpy(&c.dq_raw, &p.dq_raw, sizeof(TensorView));
    std::memcpy(&c.dk_raw, &p.dk_raw, sizeof(TensorView));
    std::memcpy(&c.dw_raw, &p.dw_raw, sizeof(TensorView));
    P.poison();
    REQUIRE(dsa_indexer_bwd_supports(&c) == DSA_STATUS_OK);
    REQUIRE(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
    CHECK(std::memcmp(dq.data(), P.dq32.data(), dq.size() * 4) == 0);
    CHECK(std::memcmp(dk.data(), P.dk32.data(), dk.size() * 4) == 0);
    CHECK(std::memcmp(dw.data(), P.dw32.data(), dw.size() * 4) == 0);
    P.poison();
    REQUIRE(dsa_indexer_bwd_run_reference(&c, DSA_ACCUM_F64) == DSA_STATUS_OK);
    std::vector<double> odq, odk, odw;
    oracle(P, &odq, &odk, &odw);
    CHECK(rel_inf(P.out(0), odq) <= 2e-7);
    CHECK(rel_inf(P.out(1), odk) <= 2e-7);
    CHECK(rel_inf(P.out(2), odw) <= 2e-7);
    c.hadamard = 0;  // a different function: the result changes
    REQUIRE(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
    CHECK(std::memcmp(dq.data(), P.dq32.data(), dq.size() * 4) != 0);
    c.rope_cos.dtype = DSA_DTYPE_BF16;
    CHECK(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_UNSUPPORTED_DTYPE);
    CHECK(std::string(dsa_last_error_message()).find("rope_cos.dtype") != std::string::npos);
    c.abi_version = 7u << 16;
    CHECK(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  }
}

// ---- the transforms-only form (dq_post, dk_post, dw_post) ---------------------------------------

namespace {

// The forward transform of one raw 128-d row, float64: RoPE (pairs (i, i + 32) on dims [0, 64),
// rotation by +θ), then the scaled Hadamard with the explicit matrix.
void forward_row(const double* raw, const float* cs, const float* sn, bool hadamard, double* out) {
  double y[D];
  for (int d = 0; d < D; ++d) y[d] = raw[d];
  for (int i = 0; i < 32; ++i) {
    const double a = raw[i], b = raw[i + 32];
    y[i] = a * cs[i] - b * sn[i];
    y[i + 32] = a * sn[i] + b * cs[i];
  }
  for (int r = 0; r < D; ++r) {
    if (!hadamard) { out[r] = y[r]; continue; }
    double acc = 0;
    for (int col = 0; col < D; ++col)
      acc += ((popcount(r & col) & 1) ? -1.0 : 1.0) * static_cast<double>(kIndexerInvSqrtDim) * y[col];
    out[r] = acc;
  }
}

struct PostGrads {
  std::vector<float> dq, dk, dw;  // [s_q, h, 128], [s_kv, 128], [s_q, h]
};

// P's params in the transforms-only form: G and its selectors removed, the post grads given.
IndexerBwdParams post_params(Problem& P, PostGrads& g) {
  IndexerBwdParams p = P.params();
  p.grad = TensorView{}, p.grad_indices = TensorView{}, p.ks = TensorView{}, p.ke = TensorView{};
  p.dq_post = view_of(g.dq, DType::kF32, {P.s_q, P.h, D});
  p.dk_post = view_of(g.dk, DType::kF32, {P.s_kv, D});
  p.dw_post = view_of(g.dw, DType::kF32, {P.s_q, P.h});
  return p;
}

bool all_finite(const std::vector<double>& v) {
  for (double x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

}  // namespace

TEST_CASE("indexer_bwd transforms-only form chains indexer_loss_dense to the raw inputs (finite differences)",
          "[indexer_bwd][indexer_loss]") {
  test::Rng rng(0xc4a1);
  for (bool hadamard : {false, true}) {
    Problem P = make_problem(rng, {3, 5, 2, 0, false, hadamard, true, DType::kF32, DType::kF32});
    const int64_t s_q = P.s_q, s_kv = P.s_kv, h = P.h, h_q = 3, d_qk = 16;
    for (int64_t t = 0; t < s_q; ++t) {  // ragged key ranges of ≥ 2 keys (one key: π ≡ 1, no gradient)
      P.ks[t] = static_cast<int32_t>(rng.integer(0, s_kv - 2));
      P.ke[t] = static_cast<int32_t>(rng.integer(P.ks[t] + 2, s_kv));
    }
    // Teacher (main attention): q, kv in f32, lse over V_t computed here in float64, stored f32.
    const float sm_scale = 0.37f, coefficient = 0.7f;
    std::vector<float> qm(s_q * h_q * d_qk), kvm(s_kv * d_qk), lse(s_q * h_q);
    for (auto& v : qm) v = static_cast<float>(rng.normal());
    for (auto& v : kvm) v = static_cast<float>(rng.normal());
    auto logit = [&](int64_t t, int64_t hh, int64_t s) {
      double z = 0;
      for (int64_t d = 0; d < d_qk; ++d) z += static_cast<double>(qm[(t * h_q + hh) * d_qk + d]) * kvm[s * d_qk + d];
      return static_cast<double>(sm_scale) * z;
    };
    for (int64_t t = 0; t < s_q; ++t)
      for (int64_t hh = 0; hh < h_q; ++hh) {
        double m = -1e300, sum = 0;
        for (int64_t s = P.ks[t]; s < P.ke[t]; ++s) m = std::max(m, logit(t, hh, s));
        for (int64_t s = P.ks[t]; s < P.ke[t]; ++s) sum += std::exp(logit(t, hh, s) - m);
        lse[t * h_q + hh] = static_cast<float>(m + std::log(sum));
      }
    std::vector<double> teacher(s_q * s_kv, 0.0);  // p[t, s] from the stored lse, as the op reads it
    for (int64_t t = 0; t < s_q; ++t)
      for (int64_t s = P.ks[t]; s < P.ke[t]; ++s) {
        double acc = 0;
        for (int64_t hh = 0; hh < h_q; ++hh) acc += std::exp(logit(t, hh, s) - lse[t * h_q + hh]);
        teacher[t * s_kv + s] = acc / h_q;
      }
    // Raw indexer inputs x = [q_raw | k_raw | w_raw], float64.
    const int64_t nq = s_q * h * D, nk = s_kv * D, nw = s_q * h;
    std::vector<double> x(nq + nk + nw);
    for (int64_t i = 0; i < nq + nk; ++i) x[i] = rng.normal() * 0.3;
    for (int64_t i = nq + nk; i < nq + nk + nw; ++i) x[i] = rng.normal() * 10.0;
    auto q_row = [&](const std::vector<double>& xv, int64_t r, double* out) {
      const int32_t pos = P.qpos[r / h];
      forward_row(&xv[r * D], &P.cos_t[pos * 32], &P.sin_t[pos * 32], hadamard, out);
    };
    auto k_row = [&](const std::vector<double>& xv, int64_t s, double* out) {
      const int32_t pos = P.kpos[s];
      forward_row(&xv[nq + s * D], &P.cos_t[pos * 32], &P.sin_t[pos * 32], hadamard, out);
    };
    // L = c·Σ_t KL(p_t ‖ softmax_{V_t} I_t), I = Σ_j w_raw·2⁻³·fl32(128^-0.5)·ReLU(q·k), float64.
    auto loss_post = [&](const std::vector<double>& qp, const std::vector<double>& kp, const std::vector<double>& xv) {
      double L = 0;
      for (int64_t t = 0; t < s_q; ++t) {
        std::vector<double> I;
        for (int64_t s = P.ks[t]; s < P.ke[t]; ++s) {
          double v = 0;
          for (int64_t j = 0; j < h; ++j) {
            double z = 0;
            for (int d = 0; d < D; ++d) z += qp[(t * h + j) * D + d] * kp[s * D + d];
            v += xv[nq + nk + t * h + j] * kFold * std::max(z, 0.0);
          }
          I.push_back(v);
        }
        const double m = *std::max_element(I.begin(), I.end());
        double sum = 0;
        for (double v : I) sum += std::exp(v - m);
        const double lse_i = m + std::log(sum);
        for (int64_t s = P.ks[t]; s < P.ke[t]; ++s) {
          const double p = teacher[t * s_kv + s];
          L += p * (std::log(p) - (I[s - P.ks[t]] - lse_i));
        }
      }
      return static_cast<double>(coefficient) * L;
    };
    std::vector<double> qp(nq), kp(nk);
    for (int64_t r = 0; r < s_q * h; ++r) q_row(x, r, &qp[r * D]);
    for (int64_t s = 0; s < s_kv; ++s) k_row(x, s, &kp[s * D]);
    // Snap the raw inputs so that the transformed q, k and the folded w are exactly the f32 values
    // the loss op receives (see inverse_row): both sides then evaluate at the same point.
    for (int64_t r = 0; r < s_q * h + s_kv; ++r) {
      const bool is_q = r < s_q * h;
      const int32_t pos = is_q ? P.qpos[r / h] : P.kpos[r - s_q * h];
      const double* src = is_q ? &qp[r * D] : &kp[(r - s_q * h) * D];
      float f[D];
      for (int d = 0; d < D; ++d) f[d] = static_cast<float>(src[d]);
      inverse_row(f, &P.cos_t[pos * 32], &P.sin_t[pos * 32], hadamard, &x[r * D]);
    }
    for (int64_t i = nq + nk; i < nq + nk + nw; ++i) x[i] = static_cast<double>(static_cast<float>(x[i] * kFold)) / kFold;
    for (int64_t r = 0; r < s_q * h; ++r) q_row(x, r, &qp[r * D]);
    for (int64_t s = 0; s < s_kv; ++s) k_row(x, s, &kp[s * D]);
    const double L0 = loss_post(qp, kp, x);

    // The loss op on the f32-rounded post-transform inputs and folded weights (exact mode, f64).
    std::vector<float> q_idx = to_f32(qp), k_idx = to_f32(kp), w_idx(nw);
    for (int64_t i = 0; i < nw; ++i) w_idx[i] = static_cast<float>(x[nq + nk + i] * kFold);
    std::vector<double> loss(1);
    PostGrads g{std::vector<float>(nq), std::vector<float>(nk), std::vector<float>(nw)};
    test::poison_float(g.dq), test::poison_float(g.dk), test::poison_float(g.dw);
    IndexerLossDenseParams lp;
    lp.q = view_of(qm, DType::kF32, {s_q, h_q, d_qk});
    lp.kv = view_of(kvm, DType::kF32, {s_kv, d_qk});
    lp.lse = view_of(lse, DType::kF32, {s_q, h_q});
    lp.sm_scale = sm_scale;
    lp.q_idx = view_of(q_idx, DType::kF32, {s_q, h, D});
    lp.k_idx = view_of(k_idx, DType::kF32, {s_kv, D});
    lp.weights = view_of(w_idx, DType::kF32, {s_q, h});
    lp.ks = view_of(P.ks, DType::kI32, {s_q});
    lp.ke = view_of(P.ke, DType::kI32, {s_q});
    lp.coefficient = coefficient;
    lp.loss = view_of(loss, DType::kF64, {1});
    lp.dq_idx = view_of(g.dq, DType::kF32, {s_q, h, D});
    lp.dk_idx = view_of(g.dk, DType::kF32, {s_kv, D});
    lp.dweights = view_of(g.dw, DType::kF32, {s_q, h});
    const Status ls = ref::run(lp, Accum::kF64);
    INFO(ls.message());
    REQUIRE(ls.ok());
    CHECK(std::fabs(loss[0] - L0) <= 1e-6 * std::fabs(L0));  // the same function as the test's
    CHECK(L0 > 0);

    // Chain: the transforms-only form maps them to the raw inputs.
    P.poison();
    run_ok(post_params(P, g), Accum::kF64);
    std::vector<double> got;
    for (int w = 0; w < 3; ++w) for (double v : P.out(w)) got.push_back(v);
    REQUIRE(all_finite(got));

    // Central differences of L w.r.t. every raw input (one transformed row changes per step).
    std::vector<double> fd(x.size());
    const double eps = 1e-6;
    for (int64_t i = 0; i < static_cast<int64_t>(x.size()); ++i) {
      double Lpm[2];
      for (int sgn = 0; sgn < 2; ++sgn) {
        std::vector<double> xv = x, qv = qp, kv = kp;
        xv[i] += sgn == 0 ? eps : -eps;
        if (i < nq) q_row(xv, i / D, &qv[(i / D) * D]);
        else if (i < nq + nk) k_row(xv, (i - nq) / D, &kv[((i - nq) / D) * D]);
        Lpm[sgn] = loss_post(qv, kv, xv);
      }
      fd[i] = (Lpm[0] - Lpm[1]) / (2 * eps);
    }
    const double e = rel_inf(got, fd);
    std::printf("  [measure] loss → transforms-only indexer_bwd vs finite differences (hadamard %d): rel %.3e\n",
                hadamard, e);
    CHECK(e <= 1e-6);
    double gmax = 0;
    for (double v : fd) gmax = std::max(gmax, std::fabs(v));
    CHECK(gmax > 0);
  }
}

TEST_CASE("indexer_bwd: the transforms-only form equals the G form", "[indexer_bwd]") {
  test::Rng rng(0x7f0);
  const Config configs[] = {
      {5, 9, 3, 0, false, true, true, DType::kBF16, DType::kF32},
      {7, 13, 4, 6, true, false, false, DType::kF32, DType::kF32},
      {6, 70, 64, 0, false, true, true, DType::kBF16, DType::kF32},  // V3.2 heads, 2 key blocks
      {4, 6, 2, 12, true, true, false, DType::kF32, DType::kBF16},
      {0, 4, 2, 0, false, true, false, DType::kF32, DType::kF32},    // empty problems
      {3, 0, 2, 0, false, true, false, DType::kF32, DType::kF32},
  };
  for (const Config& c : configs) {
    Problem P = make_problem(rng, c);
    INFO("s_q=" << c.s_q << " s_kv=" << c.s_kv << " h=" << c.h << " sparse=" << c.sparse
                << " hadamard=" << c.hadamard << " grad=" << dtype_name(c.grad));
    run_ok(P.params(), Accum::kF64);
    const std::vector<double> gq = P.out(0), gk = P.out(1), gw = P.out(2);
    std::vector<double> dqp, dkp, dwp;
    post_grads(P, &dqp, &dkp, &dwp);  // this test's float64 score stage, from the same G
    PostGrads g{to_f32(dqp), to_f32(dkp), to_f32(dwp)};
    const bool bf = c.grad == DType::kBF16;
    // bf16 outputs: both forms round the same f64 values up to the f32 rounding of the post grads.
    const double bound = bf ? 2.01 / 256 : 1e-6;
    for (Accum accum : {Accum::kF64, Accum::kF32}) {
      for (bool with_scores : {true, false}) {  // q, k, weights are not read in this form
        IndexerBwdParams p = post_params(P, g);
        if (!with_scores) p.q = TensorView{}, p.k = TensorView{}, p.weights = TensorView{};
        P.poison();
        run_ok(p, accum);
        const std::vector<double> tq = P.out(0), tk = P.out(1), tw = P.out(2);
        REQUIRE(all_finite(tq));
        REQUIRE(all_finite(tk));
        REQUIRE(all_finite(tw));
        if (accum == Accum::kF64) {
          CHECK(rel_inf(tq, gq) <= bound);
          CHECK(rel_inf(tk, gk) <= bound);
          CHECK(rel_inf(tw, gw) <= bound);
        } else {
          std::vector<double> dq, dk, dw;
          oracle(P, &dq, &dk, &dw);
          check_close("dq_raw", tq, dq, bf, false);
          check_close("dk_raw", tk, dk, bf, false);
          check_close("dw_raw", tw, dw, bf, false);
        }
      }
    }
    if (c.s_q > 0 && c.s_kv > 0) {  // the back-transforms really ran: hadamard changes dq_raw
      IndexerBwdParams p = post_params(P, g);
      p.hadamard = !p.hadamard;
      run_ok(p, Accum::kF64);
      // Only a non-zero gradient can change (fresh random data now and then leaves every ReLU
      // inactive: seed 979998331 gave dq = dk = 0 at s_q 5, s_kv 9).
      auto nonzero = [](const std::vector<double>& v) {
        for (double x : v)
          if (x != 0.0) return true;
        return false;
      };
      if (nonzero(gq)) CHECK(rel_inf(P.out(0), gq) > 1e-3);
      if (nonzero(gk)) CHECK(rel_inf(P.out(1), gk) > 1e-3);
      CHECK(rel_inf(P.out(2), gw) <= bound);  // the fold does not depend on it
    }
  }
}

TEST_CASE("indexer_bwd transforms-only form rejects bad input, naming the argument, writing nothing",
          "[indexer_bwd]") {
  test::Rng rng(0xbad2);
  Problem P = make_problem(rng, {3, 7, 2, 0, false, true, true, DType::kBF16, DType::kF32});
  PostGrads g{std::vector<float>(3 * 2 * D), std::vector<float>(7 * D), std::vector<float>(3 * 2)};
  for (auto* v : {&g.dq, &g.dk, &g.dw})
    for (auto& x : *v) x = static_cast<float>(rng.normal());
  const IndexerBwdParams good = post_params(P, g), gform = P.params();
  run_ok(good);
  IndexerBwdParams p = good;
  SECTION("G given too") {
    p.grad = gform.grad;
    expect_failure(p, P, StatusCode::kInvalidArgument, "grad is given together with dq_post");
    p = gform, p.dq_post = good.dq_post;  // the G form plus one post grad
    expect_failure(p, P, StatusCode::kInvalidArgument, "grad is given together with dq_post");
    p = good, p.grad_indices = view_of(P.ks, DType::kI32, {3, 1});
    expect_failure(p, P, StatusCode::kInvalidArgument, "grad_indices is given together with dq_post");
    p = good, p.ks = gform.ks;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ks is given together with dq_post");
    p = good, p.ke = gform.ke;
    expect_failure(p, P, StatusCode::kInvalidArgument, "ke is given together with dq_post");
  }
  SECTION("missing pieces") {
    p.dq_post = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dq_post is required");
    p = good, p.dk_post = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dk_post is required");
    p = good, p.dw_post = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dw_post is required");
    p = good, p.dk_post.data = nullptr;
    expect_failure(p, P, StatusCode::kNullPointer, "dk_post");
    p = good, p.q_positions = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "q_positions is required");
    p = good, p.dw_raw = TensorView{};
    expect_failure(p, P, StatusCode::kNullPointer, "dw_raw is required");
  }
  SECTION("shapes, dtypes, strides") {
    p.dq_post.shape[2] = 64;
    expect_failure(p, P, StatusCode::kUnsupportedShape, "dq_post.shape[2] = 64");
    p = good, p.dq_post.dtype = DType::kBF16;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "dq_post.dtype");
    p = good, p.dq_post.stride[2] = 2;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dq_post.stride[2]");
    p = good, p.dk_post.shape[0] = 6;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dk_post.shape[0]");
    p = good, p.dk_post.dtype = DType::kF64;
    expect_failure(p, P, StatusCode::kUnsupportedDtype, "dk_post.dtype");
    p = good, p.dw_post.shape[1] = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_post.shape[1]");
    p = good, p.dw_post.rank = 3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_post");
    p = good, p.q.shape[1] = 3;  // given q, k, weights must agree
    expect_failure(p, P, StatusCode::kInvalidArgument, "shape[1]");
    p = good, p.k.shape[0] = 6;
    expect_failure(p, P, StatusCode::kInvalidArgument, "shape[0]");
  }
  SECTION("values and aliasing") {
    P.qpos[2] = 50;
    expect_failure(p, P, StatusCode::kInvalidArgument, "q_positions[2] = 50");
    P.qpos[2] = 0, P.kpos[5] = -3;
    expect_failure(p, P, StatusCode::kInvalidArgument, "k_positions[5] = -3");
    P.kpos[5] = 0;
    p = good, p.dw_raw.data = p.dw_post.data;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dw_raw overlaps dw_post");
    p = good, p.dk_raw.data = p.dk_post.data;
    expect_failure(p, P, StatusCode::kInvalidArgument, "dk_raw overlaps dk_post");
  }
}

TEST_CASE("indexer_bwd transforms-only form through the C ABI, and ABI 1.0 callers keep working", "[indexer_bwd][c_api]") {
  test::Rng rng(0xcab3);
  Problem P = make_problem(rng, {4, 9, 3, 0, false, true, true, DType::kBF16, DType::kF32});
  std::vector<double> dqp, dkp, dwp;
  post_grads(P, &dqp, &dkp, &dwp);
  PostGrads g{to_f32(dqp), to_f32(dkp), to_f32(dwp)};
  const IndexerBwdParams p = post_params(P, g), gp = P.params();
  run_ok(p);
  const std::vector<float> dq = P.dq32, dk = P.dk32, dw = P.dw32;
  run_ok(gp);
  const std::vector<float> gdq = P.dq32, gdk = P.dk32, gdw = P.dw32;

  auto to_c = [](const IndexerBwdParams& s, dsa_indexer_bwd_params* c) {
    std::memcpy(&c->q, &s.q, sizeof(TensorView));
    std::memcpy(&c->k, &s.k, sizeof(TensorView));
    std::memcpy(&c->weights, &s.weights, sizeof(TensorView));
    std::memcpy(&c->grad, &s.grad, sizeof(TensorView));
    std::memcpy(&c->grad_indices, &s.grad_indices, sizeof(TensorView));
    std::memcpy(&c->ks, &s.ks, sizeof(TensorView));
    std::memcpy(&c->ke, &s.ke, sizeof(TensorView));
    std::memcpy(&c->q_positions, &s.q_positions, sizeof(TensorView));
    std::memcpy(&c->k_positions, &s.k_positions, sizeof(TensorView));
    std::memcpy(&c->rope_cos, &s.rope_cos, sizeof(TensorView));
    std::memcpy(&c->rope_sin, &s.rope_sin, sizeof(TensorView));
    c->hadamard = s.hadamard ? 1 : 0;
    std::memcpy(&c->dq_raw, &s.dq_raw, sizeof(TensorView));
    std::memcpy(&c->dk_raw, &s.dk_raw, sizeof(TensorView));
    std::memcpy(&c->dw_raw, &s.dw_raw, sizeof(TensorView));
    std::memcpy(&c->dq_post, &s.dq_post, sizeof(TensorView));
    std::memcpy(&c->dk_post, &s.dk_post, sizeof(TensorView));
    std::memcpy(&c->dw_post, &s.dw_post, sizeof(TensorView));
  };
  dsa_indexer_bwd_params c;
  REQUIRE(dsa_indexer_bwd_params_init(&c) == DSA_STATUS_OK);
  CHECK(c.dq_post.data == nullptr);
  CHECK(c.dk_post.data == nullptr);
  CHECK(c.dw_post.data == nullptr);
  to_c(p, &c);
  P.poison();
  REQUIRE(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
  CHECK(std::memcmp(dq.data(), P.dq32.data(), dq.size() * 4) == 0);
  CHECK(std::memcmp(dk.data(), P.dk32.data(), dk.size() * 4) == 0);
  CHECK(std::memcmp(dw.data(), P.dw32.data(), dw.size() * 4) == 0);
  c.grad = c.q_positions;  // grad and the post grads together
  CHECK(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("grad is given together with dq_post") != std::string::npos);

  // An ABI 1.0 caller: its struct ends after dw_raw. The minimal prefix did not grow, the bytes
  // past it are never read (here: the post grads, which would select the other form).
  const uint32_t v10 = static_cast<uint32_t>(offsetof(dsa_indexer_bwd_params, dq_post));
  CHECK(v10 == offsetof(dsa_indexer_bwd_params, dw_raw) + sizeof(dsa_tensor));
  to_c(gp, &c);
  std::memcpy(&c.dq_post, &p.dq_post, sizeof(TensorView));
  std::memcpy(&c.dk_post, &p.dk_post, sizeof(TensorView));
  std::memcpy(&c.dw_post, &p.dw_post, sizeof(TensorView));
  c.struct_size = v10;
  P.poison();
  REQUIRE(dsa_indexer_bwd_supports(&c) == DSA_STATUS_OK);
  REQUIRE(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
  CHECK(std::memcmp(gdq.data(), P.dq32.data(), gdq.size() * 4) == 0);
  CHECK(std::memcmp(gdk.data(), P.dk32.data(), gdk.size() * 4) == 0);
  CHECK(std::memcmp(gdw.data(), P.dw32.data(), gdw.size() * 4) == 0);
  c.struct_size = v10 - 8;
  CHECK(dsa_indexer_bwd_run(&c, nullptr, 0, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("struct_size") != std::string::npos);
  // init with an ABI 1.0 header writes only that prefix.
  std::vector<unsigned char> buf(sizeof(dsa_indexer_bwd_params), 0xAB);
  auto* h = reinterpret_cast<dsa_indexer_bwd_params*>(buf.data());
  h->struct_size = v10;
  h->abi_version = DSA_ABI_VERSION_MAJOR << 16;
  REQUIRE(dsa_indexer_bwd_params_init(h) == DSA_STATUS_OK);
  CHECK(h->struct_size == v10);
  CHECK(h->dw_raw.data == nullptr);
  for (size_t i = v10; i < buf.size(); ++i) CHECK(buf[i] == 0xAB);
}
