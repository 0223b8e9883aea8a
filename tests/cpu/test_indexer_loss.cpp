// OP-LOSS-DENSE and OP-LOSS-SPARSE (SPEC §8.1–8.4, D4, D8): loss and gradients against a naive
// float64 oracle written here from the SPEC formulas (p and π materialized), against central
// finite differences of an independent float64 loss, invariants, determinism and bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "dsa/dsa.h"
#include "dsa/dsa.hpp"
#include "support/child_process.hpp"
#include "support/random.hpp"

using namespace dsa;

namespace {

// A float tensor held in its storage dtype (f32 or bf16) with the float64 values the oracle uses.
struct Input {
  DType dt = DType::kF32;
  std::vector<float> f;
  std::vector<bf16_t> b;
  std::vector<double> d;
  void fill(test::Rng& rng, size_t n, DType dtype, double scale) {
    dt = dtype;
    if (dt == DType::kBF16) {
      b = test::randn_bf16(rng, n, scale, 0.0);
      d = test::to_double(b);
    } else {
      f = test::randn_f32(rng, n, scale);
      d = test::to_double(f);
    }
  }
  void set(size_t i, double v) {  // exact for the values used (representable)
    if (dt == DType::kBF16) {
      b[i] = float_to_bf16(static_cast<float>(v));
      d[i] = bf16_to_float(b[i]);
    } else {
      f[i] = static_cast<float>(v);
      d[i] = f[i];
    }
  }
  TensorView view(std::initializer_list<int64_t> shape) const {
    return make_view(dt == DType::kBF16 ? static_cast<const void*>(b.data()) : f.data(), dt, shape);
  }
};

// An output buffer (f32 or f64), poisoned with 0xFF before each run.
struct Output {
  DType dt = DType::kF32;
  std::vector<float> f;
  std::vector<double> d;
  void alloc(size_t n, DType dtype) {
    dt = dtype;
    f.assign(dt == DType::kF32 ? n : 0, 0.0f);
    d.assign(dt == DType::kF64 ? n : 0, 0.0);
    poison();
  }
  void poison() {
    test::poison_float(f);
    test::poison_float(d);
  }
  size_t size() const { return dt == DType::kF32 ? f.size() : d.size(); }
  std::vector<double> values() const {
    return dt == DType::kF32 ? std::vector<double>(f.begin(), f.end()) : d;
  }
  bool all_written() const {
    for (double v : values())
      if (std::isnan(v)) return false;
    return true;
  }
  bool untouched() const {
    std::vector<uint8_t> ff(dt == DType::kF32 ? f.size() * 4 : d.size() * 8, 0xFF);
    const void* p = dt == DType::kF32 ? static_cast<const void*>(f.data()) : d.data();
    return ff.empty() || std::memcmp(p, ff.data(), ff.size()) == 0;
  }
  TensorView view(std::initializer_list<int64_t> shape) const {
    return make_view(dt == DType::kF32 ? static_cast<const void*>(f.data()) : d.data(), dt, shape);
  }
};

struct Shape {
  int64_t s_q, s_kv, h_q, d_qk, h_idx, d_idx;
};

// One random problem: teacher q/kv, its lse (float64, stored f32), indexer q/k/w, key sets.
struct Problem {
  Shape sh;
  double tau = 0.0;
  Input q, kv, qi, ki;
  std::vector<float> w, lse;
  std::vector<int32_t> ks, ke, indices, topk_length;
  std::vector<uint8_t> mask;
  int64_t topk = 0;
  std::vector<std::vector<int32_t>> keys;  // V_t as a list (the oracle's view)

  double wd(int64_t t, int64_t j) const { return w[t * sh.h_idx + j]; }
  double score(int64_t t, int64_t h, int64_t s) const {  // τ·q_h·kv_s
    double acc = 0;
    for (int64_t d = 0; d < sh.d_qk; ++d) acc += q.d[(t * sh.h_q + h) * sh.d_qk + d] * kv.d[s * sh.d_qk + d];
    return tau * acc;
  }
  // lse over keys[t] in float64, stored f32 (+∞ for an empty row), as the forward would give.
  void compute_lse() {
    lse.assign(sh.s_q * sh.h_q, 0.0f);
    for (int64_t t = 0; t < sh.s_q; ++t)
      for (int64_t h = 0; h < sh.h_q; ++h) {
        double mx = -INFINITY, se = 0;
        for (int32_t s : keys[t]) mx = std::max(mx, score(t, h, s));
        for (int32_t s : keys[t]) se += std::exp(score(t, h, s) - mx);
        lse[t * sh.h_q + h] = keys[t].empty() ? INFINITY : static_cast<float>(mx + std::log(se));
      }
  }
};

// Ragged causal packing: sequences of random lengths; queries are the last s_q tokens of the
// keys when s_kv > s_q (one sequence then). Some rows are made empty (ks = ke).
Problem make_problem(test::Rng& rng, Shape sh, DType teacher_dt, DType student_dt, bool empty_rows) {
  Problem P;
  P.sh = sh;
  P.tau = static_cast<double>(0.35f);  // the op receives sm_scale as f32
  P.q.fill(rng, sh.s_q * sh.h_q * sh.d_qk, teacher_dt, 1.0);
  P.kv.fill(rng, sh.s_kv * sh.d_qk, teacher_dt, 1.0);
  P.qi.fill(rng, sh.s_q * sh.h_idx * sh.d_idx, student_dt, 1.0);
  P.ki.fill(rng, sh.s_kv * sh.d_idx, student_dt, 1.0);
  P.w = test::randn_f32(rng, sh.s_q * sh.h_idx, 0.4);
  P.ks.resize(sh.s_q);
  P.ke.resize(sh.s_q);
  if (sh.s_kv == sh.s_q) {
    int64_t start = 0, next = 0;
    for (int64_t t = 0; t < sh.s_q; ++t) {
      if (t == next) {
        start = t;
        next = t + rng.integer(1, std::max<int64_t>(1, sh.s_q / 2));
      }
      P.ks[t] = static_cast<int32_t>(start);
      P.ke[t] = static_cast<int32_t>(t + 1);
    }
  } else {
    const int64_t off = std::max<int64_t>(0, sh.s_kv - sh.s_q);
    for (int64_t t = 0; t < sh.s_q; ++t) {
      P.ks[t] = 0;
      P.ke[t] = static_cast<int32_t>(std::min(sh.s_kv, off + t + 1));
    }
  }
  if (empty_rows)
    for (int64_t t = 0; t < sh.s_q; ++t)
      if (rng.uniform() < 0.15) P.ks[t] = P.ke[t] = static_cast<int32_t>(rng.integer(0, sh.s_kv));
  P.keys.resize(sh.s_q);
  for (int64_t t = 0; t < sh.s_q; ++t)
    for (int32_t s = P.ks[t]; s < P.ke[t]; ++s) P.keys[t].push_back(s);
  P.compute_lse();
  return P;
}

// Sparse selection from the dense ranges: a random subset of at most `topk` keys of [ks, ke) per
// row, shuffled, padded with −1 and other invalid values; optional topk_length.
void make_sparse(test::Rng& rng, Problem& P, int64_t topk, bool with_length) {
  P.topk = topk;
  P.indices.assign(P.sh.s_q * topk, -1);
  P.topk_length.assign(with_length ? P.sh.s_q : 0, 0);
  for (int64_t t = 0; t < P.sh.s_q; ++t) {
    std::vector<int32_t> all;
    for (int32_t s = P.ks[t]; s < P.ke[t]; ++s) all.push_back(s);
    std::shuffle(all.begin(), all.end(), rng.engine());
    const int64_t na = static_cast<int64_t>(all.size());
    const int64_t n = rng.uniform() < 0.8 ? na : rng.integer(0, na);
    std::vector<int32_t> row(topk, -1);
    for (int64_t i = 0; i < topk; ++i) {
      if (i < static_cast<int64_t>(all.size()) && i < n) row[i] = all[i];
      else row[i] = rng.uniform() < 0.5 ? -1 : static_cast<int32_t>(P.sh.s_kv + rng.integer(0, 3));
    }
    std::shuffle(row.begin(), row.end(), rng.engine());
    int64_t len = topk;
    if (with_length) {
      len = rng.integer(0, topk);
      P.topk_length[t] = static_cast<int32_t>(len);
    }
    P.keys[t].clear();
    for (int64_t i = 0; i < topk; ++i) {
      P.indices[t * topk + i] = row[i];
      if (i < len && row[i] >= 0 && row[i] < P.sh.s_kv) P.keys[t].push_back(row[i]);
    }
  }
  P.compute_lse();
}

// ---- the float64 oracle (SPEC §8.1, §8.4), p and π materialized per row --------------------------

struct Grads {
  double loss = 0;
  std::vector<double> kl, dq, dk, dw;
  // Condition scale of the KL sums: Σ_s p·(1 + |ln p| + |ln π|) per row, and |κ|·Σ_t of it. The
  // KL is a sum of terms of either sign, so its rounding error is relative to this, not to KL.
  std::vector<double> kl_scale;
  double loss_scale = 0;
};

double logit(const Problem& P, const std::vector<double>& qi, const std::vector<double>& ki, const std::vector<double>& w,
             int64_t t, int64_t s, std::vector<double>* z = nullptr) {
  double I = 0;
  for (int64_t j = 0; j < P.sh.h_idx; ++j) {
    double acc = 0;
    for (int64_t d = 0; d < P.sh.d_idx; ++d)
      acc += qi[(t * P.sh.h_idx + j) * P.sh.d_idx + d] * ki[s * P.sh.d_idx + d];
    if (z) (*z)[j] = acc;
    I += w[t * P.sh.h_idx + j] * std::max(acc, 0.0);
  }
  return I;
}

std::vector<double> teacher_row(const Problem& P, int64_t t) {
  std::vector<double> p;
  for (int32_t s : P.keys[t]) {
    double acc = 0;
    for (int64_t h = 0; h < P.sh.h_q; ++h) acc += std::exp(P.score(t, h, s) - P.lse[t * P.sh.h_q + h]);
    p.push_back(acc / P.sh.h_q);
  }
  return p;
}

double kappa_of(const Problem& P, LossReduction red, double c) {
  int64_t n = 0;
  for (int64_t t = 0; t < P.sh.s_q; ++t) n += P.mask.empty() || P.mask[t] ? 1 : 0;
  return red == LossReduction::kSum ? c : c / std::max<int64_t>(1, n);
}

Grads oracle(const Problem& P, LossReduction red, double c, const std::vector<double>& qi,
             const std::vector<double>& ki, const std::vector<double>& w, bool grads = true) {
  const Shape& sh = P.sh;
  const double kappa = kappa_of(P, red, c);
  Grads g;
  g.kl.assign(sh.s_q, 0);
  g.kl_scale.assign(sh.s_q, 0);
  g.dq.assign(sh.s_q * sh.h_idx * sh.d_idx, 0);
  g.dk.assign(sh.s_kv * sh.d_idx, 0);
  g.dw.assign(sh.s_q * sh.h_idx, 0);
  std::vector<double> z(sh.h_idx);
  for (int64_t t = 0; t < sh.s_q; ++t) {
    if (!P.mask.empty() && !P.mask[t]) continue;
    const auto& K = P.keys[t];
    if (K.empty()) continue;
    const std::vector<double> p = teacher_row(P, t);
    std::vector<double> I(K.size());
    double mx = -INFINITY;
    for (size_t i = 0; i < K.size(); ++i) mx = std::max(mx, I[i] = logit(P, qi, ki, w, t, K[i]));
    double se = 0;
    for (double v : I) se += std::exp(v - mx);
    const double lse_i = mx + std::log(se);
    double mass = 0, kl = 0;
    for (size_t i = 0; i < K.size(); ++i) {
      mass += p[i];
      if (p[i] > 0) kl += p[i] * (std::log(p[i]) - (I[i] - lse_i));
      g.kl_scale[t] += p[i] * (1 + std::abs(p[i] > 0 ? std::log(p[i]) : 0.0) + std::abs(I[i] - lse_i));
    }
    g.kl[t] = kl;
    g.loss_scale += std::abs(kappa) * g.kl_scale[t];
    g.loss += kappa * kl;
    if (!grads) continue;
    for (size_t i = 0; i < K.size(); ++i) {
      const double G = kappa * (std::exp(I[i] - lse_i) * mass - p[i]);
      logit(P, qi, ki, w, t, K[i], &z);
      for (int64_t j = 0; j < sh.h_idx; ++j) {
        g.dw[t * sh.h_idx + j] += G * std::max(z[j], 0.0);
        const double dz = z[j] > 0 ? G * w[t * sh.h_idx + j] : 0.0;
        for (int64_t d = 0; d < sh.d_idx; ++d) {
          g.dq[(t * sh.h_idx + j) * sh.d_idx + d] += dz * ki[K[i] * sh.d_idx + d];
          g.dk[K[i] * sh.d_idx + d] += dz * qi[(t * sh.h_idx + j) * sh.d_idx + d];
        }
      }
    }
  }
  return g;
}

Grads oracle(const Problem& P, LossReduction red = LossReduction::kSum, double c = 1.0) {
  std::vector<double> w(P.w.begin(), P.w.end());
  return oracle(P, red, c, P.qi.d, P.ki.d, w);
}

// ||a − b|| / max(||b||, floor)
double rel_err(const std::vector<double>& a, const std::vector<double>& b, double floor = 1e-30) {
  REQUIRE(a.size() == b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), floor);
}

// ---- running the ops ----------------------------------------------------------------------------

struct Outputs {
  Output loss, kl, dq, dk, dw;
  void alloc(const Shape& sh, DType dt) {
    loss.alloc(1, dt);
    kl.alloc(sh.s_q, dt);
    dq.alloc(sh.s_q * sh.h_idx * sh.d_idx, dt);
    dk.alloc(sh.s_kv * sh.d_idx, dt);
    dw.alloc(sh.s_q * sh.h_idx, dt);
  }
  void poison() {
    for (Output* x : {&loss, &kl, &dq, &dk, &dw}) x->poison();
  }
  bool all_written() const {
    return loss.all_written() && kl.all_written() && dq.all_written() && dk.all_written() && dw.all_written();
  }
  bool untouched() const {
    return loss.untouched() && kl.untouched() && dq.untouched() && dk.untouched() && dw.untouched();
  }
  bool bitwise_equal(const Outputs& o) const {
    auto eq = [](const Output& a, const Output& b) { return a.f == b.f && a.d == b.d; };
    return eq(loss, o.loss) && eq(kl, o.kl) && eq(dq, o.dq) && eq(dk, o.dk) && eq(dw, o.dw);
  }
};

template <class Params>
void fill_common(Params& p, const Problem& P, Outputs& o) {
  const Shape& sh = P.sh;
  p.q = P.q.view({sh.s_q, sh.h_q, sh.d_qk});
  p.kv = P.kv.view({sh.s_kv, sh.d_qk});
  p.lse = make_view(P.lse.data(), DType::kF32, {sh.s_q, sh.h_q});
  p.sm_scale = static_cast<float>(P.tau);
  p.q_idx = P.qi.view({sh.s_q, sh.h_idx, sh.d_idx});
  p.k_idx = P.ki.view({sh.s_kv, sh.d_idx});
  p.weights = make_view(P.w.data(), DType::kF32, {sh.s_q, sh.h_idx});
  if (!P.mask.empty()) p.row_mask = make_view(P.mask.data(), DType::kU8, {sh.s_q});
  p.loss = o.loss.view({1});
  p.row_kl = o.kl.view({sh.s_q});
  p.dq_idx = o.dq.view({sh.s_q, sh.h_idx, sh.d_idx});
  p.dk_idx = o.dk.view({sh.s_kv, sh.d_idx});
  p.dweights = o.dw.view({sh.s_q, sh.h_idx});
}

IndexerLossDenseParams dense_params(const Problem& P, Outputs& o) {
  IndexerLossDenseParams p;
  fill_common(p, P, o);
  p.ks = make_view(P.ks.data(), DType::kI32, {P.sh.s_q});
  p.ke = make_view(P.ke.data(), DType::kI32, {P.sh.s_q});
  return p;
}

IndexerLossSparseParams sparse_params(const Problem& P, Outputs& o) {
  IndexerLossSparseParams p;
  fill_common(p, P, o);
  p.indices = make_view(P.indices.data(), DType::kI32, {P.sh.s_q, P.topk});
  if (!P.topk_length.empty()) p.topk_length = make_view(P.topk_length.data(), DType::kI32, {P.sh.s_q});
  return p;
}

template <class Params>
Outputs run_op(const Problem& P, Params (*make)(const Problem&, Outputs&), Accum accum, DType out_dt,
               LossReduction red = LossReduction::kSum, float c = 1.0f) {
  Outputs o;
  o.alloc(P.sh, out_dt);
  Params p = make(P, o);
  p.reduction = red;
  p.coefficient = c;
  const Status s = accum == Accum::kF64 ? ref::run(p, Accum::kF64) : run(p);
  INFO(s.message());
  REQUIRE(s.ok());
  REQUIRE(o.all_written());
  return o;
}

void check_against(const Outputs& o, const Grads& g, double tol) {
  INFO("loss " << o.loss.values()[0] << " oracle " << g.loss);
  CHECK(std::abs(o.loss.values()[0] - g.loss) <= tol * g.loss_scale);
  const std::vector<double> kl = o.kl.values();
  for (size_t t = 0; t < kl.size(); ++t) {
    INFO("row " << t << ": KL " << kl[t] << " oracle " << g.kl[t] << " scale " << g.kl_scale[t]);
    CHECK(std::abs(kl[t] - g.kl[t]) <= tol * g.kl_scale[t]);
  }
  CHECK(rel_err(o.dq.values(), g.dq, 1e-6) <= tol);
  CHECK(rel_err(o.dk.values(), g.dk, 1e-6) <= tol);
  CHECK(rel_err(o.dw.values(), g.dw, 1e-6) <= tol);
}

const Shape kShapes[] = {
    {1, 1, 1, 8, 1, 4},      {5, 5, 2, 16, 3, 8},     {13, 13, 3, 24, 4, 16},
    {7, 20, 2, 12, 2, 8},    {70, 70, 2, 20, 3, 8},   {9, 131, 2, 16, 4, 8},
    {66, 66, 1, 576, 2, 128},
};

}  // namespace

TEST_CASE("dense loss and gradients match the float64 oracle", "[indexer_loss]") {
  test::Rng rng(101);
  for (const Shape& sh : kShapes) {
    for (DType dt : {DType::kF32, DType::kBF16}) {
      CAPTURE(sh.s_q, sh.s_kv, sh.h_q, sh.d_qk, sh.h_idx, sh.d_idx, (int)dt);
      Problem P = make_problem(rng, sh, dt, dt, true);
      const Grads g = oracle(P);
      // fp64 accumulation, f64 outputs: agreement to float64 rounding.
      check_against(run_op(P, dense_params, Accum::kF64, DType::kF64), g, 1e-10);
      // fp64 accumulation, f32 outputs: only the output rounding remains.
      check_against(run_op(P, dense_params, Accum::kF64, DType::kF32), g, 1e-6);
      // The default fp32 path (what dsa::run does on host pointers).
      check_against(run_op(P, dense_params, Accum::kF32, DType::kF32), g, 2e-4);
    }
  }
}

TEST_CASE("sparse loss and gradients match the float64 oracle", "[indexer_loss]") {
  test::Rng rng(102);
  for (const Shape& sh : kShapes) {
    for (bool with_length : {false, true}) {
      CAPTURE(sh.s_q, sh.s_kv, sh.h_q, sh.d_qk, sh.h_idx, sh.d_idx, with_length);
      Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, true);
      make_sparse(rng, P, rng.integer(1, 12), with_length);
      const Grads g = oracle(P);
      check_against(run_op(P, sparse_params, Accum::kF64, DType::kF64), g, 1e-10);
      check_against(run_op(P, sparse_params, Accum::kF32, DType::kF32), g, 2e-4);
    }
  }
}

TEST_CASE("gradients match central finite differences of a float64 loss", "[indexer_loss]") {
  test::Rng rng(103);
  for (const Shape& sh : {Shape{6, 6, 2, 8, 3, 4}, Shape{5, 9, 3, 12, 2, 6}}) {
    for (LossReduction red : {LossReduction::kSum, LossReduction::kMean}) {
      Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
      P.mask.assign(sh.s_q, 1);
      P.mask[1] = 0;
      const double c = 0.7;
      std::vector<double> qi = P.qi.d, ki = P.ki.d, w(P.w.begin(), P.w.end());
      auto L = [&] { return oracle(P, red, c, qi, ki, w, false).loss; };
      const double h = 1e-6;
      auto fd = [&](std::vector<double>& x) {
        std::vector<double> g(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
          const double x0 = x[i];
          x[i] = x0 + h;
          const double lp = L();
          x[i] = x0 - h;
          const double lm = L();
          x[i] = x0;
          g[i] = (lp - lm) / (2 * h);
        }
        return g;
      };
      const std::vector<double> fq = fd(qi), fk = fd(ki), fw = fd(w);
      const Outputs o = run_op(P, dense_params, Accum::kF64, DType::kF64, red, static_cast<float>(c));
      CHECK(rel_err(o.dq.values(), fq) <= 1e-6);
      CHECK(rel_err(o.dk.values(), fk) <= 1e-6);
      CHECK(rel_err(o.dw.values(), fw) <= 1e-6);
      // The oracle's analytic gradients agree too (checks the test's own formulas).
      const Grads g = oracle(P, red, c, P.qi.d, P.ki.d, std::vector<double>(P.w.begin(), P.w.end()));
      CHECK(rel_err(g.dq, fq) <= 1e-6);
      CHECK(rel_err(g.dk, fk) <= 1e-6);
      CHECK(rel_err(g.dw, fw) <= 1e-6);
    }
  }
}

TEST_CASE("sparse-stage gradients match central finite differences of a float64 loss", "[indexer_loss]") {
  test::Rng rng(113);
  for (const Shape& sh : {Shape{6, 6, 2, 8, 3, 4}, Shape{5, 9, 3, 12, 2, 6}}) {
    for (LossReduction red : {LossReduction::kSum, LossReduction::kMean}) {
      const bool with_length = red == LossReduction::kMean;
      CAPTURE(sh.s_q, sh.s_kv, (int)red, with_length);
      Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
      // Unmasked rows with a non-empty S_t keep the check from being vacuous. Fresh random
      // selections leave all 5 empty now and then (short causal ranges, topk_length 0, invalid
      // slots), so draw until at least one row is used.
      int64_t used = 0;
      for (int draw = 0; draw < 100 && used == 0; ++draw) {
        make_sparse(rng, P, rng.integer(2, 6), with_length);
        P.mask.assign(sh.s_q, 1);
        P.mask[1] = 0;
        for (int64_t t = 0; t < sh.s_q; ++t) used += P.mask[t] && !P.keys[t].empty();
      }
      REQUIRE(used > 0);
      const double c = 0.7;
      std::vector<double> qi = P.qi.d, ki = P.ki.d, w(P.w.begin(), P.w.end());
      auto L = [&] { return oracle(P, red, c, qi, ki, w, false).loss; };
      const double h = 1e-6;
      auto fd = [&](std::vector<double>& x) {
        std::vector<double> g(x.size());
        for (size_t i = 0; i < x.size(); ++i) {
          const double x0 = x[i];
          x[i] = x0 + h;
          const double lp = L();
          x[i] = x0 - h;
          const double lm = L();
          x[i] = x0;
          g[i] = (lp - lm) / (2 * h);
        }
        return g;
      };
      const std::vector<double> fq = fd(qi), fk = fd(ki), fw = fd(w);
      const Outputs o = run_op(P, sparse_params, Accum::kF64, DType::kF64, red, static_cast<float>(c));
      CHECK(rel_err(o.dq.values(), fq) <= 1e-6);
      CHECK(rel_err(o.dk.values(), fk) <= 1e-6);
      CHECK(rel_err(o.dw.values(), fw) <= 1e-6);
      const Grads g = oracle(P, red, c, P.qi.d, P.ki.d, std::vector<double>(P.w.begin(), P.w.end()));
      CHECK(rel_err(g.dq, fq) <= 1e-6);
      CHECK(rel_err(g.dk, fk) <= 1e-6);
      CHECK(rel_err(g.dw, fw) <= 1e-6);
    }
  }
}

TEST_CASE("KL is non-negative and zero when the indexer equals the teacher", "[indexer_loss]") {
  test::Rng rng(104);
  SECTION("random problems: KL_t >= 0") {
    Problem P = make_problem(rng, {40, 40, 3, 16, 4, 8}, DType::kBF16, DType::kBF16, true);
    const Outputs o = run_op(P, dense_params, Accum::kF32, DType::kF32);
    int positive = 0;
    for (double v : o.kl.values()) {
      CHECK(v >= -1e-6);  // exact KL ≥ m·ln m with m = Σp = 1 ± rounding of the f32 lse
      positive += v > 1e-3;
    }
    CHECK(positive > 10);
  }
  SECTION("I = ln p + const gives KL = 0 and zero gradient") {
    // Positive indexer q/k make ReLU the identity, so I[t,s] = u_t·k_s with u_t = Σ_j w_j·q_j.
    // A teacher with q_h = u_t/τ (all heads equal) and kv = k_idx then has p = π.
    const Shape sh{24, 24, 3, 8, 4, 8};
    Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
    for (auto& v : P.qi.f) v = std::abs(v);
    for (auto& v : P.ki.f) v = std::abs(v);
    P.qi.d = test::to_double(P.qi.f);
    P.ki.d = test::to_double(P.ki.f);
    for (int64_t t = 0; t < sh.s_q; ++t) {
      std::vector<double> u(sh.d_idx, 0.0);
      for (int64_t j = 0; j < sh.h_idx; ++j)
        for (int64_t d = 0; d < sh.d_idx; ++d) u[d] += P.w[t * sh.h_idx + j] * P.qi.d[(t * sh.h_idx + j) * sh.d_idx + d];
      for (int64_t h = 0; h < sh.h_q; ++h)
        for (int64_t d = 0; d < sh.d_qk; ++d) P.q.set((t * sh.h_q + h) * sh.d_qk + d, u[d] / P.tau);
    }
    P.kv = P.ki;
    P.compute_lse();
    const Outputs o = run_op(P, dense_params, Accum::kF64, DType::kF64);
    for (double v : o.kl.values()) CHECK(std::abs(v) <= 1e-6);
    const Problem Q = make_problem(rng, sh, DType::kF32, DType::kF32, false);
    const Outputs r = run_op(Q, dense_params, Accum::kF64, DType::kF64);  // a generic problem
    CHECK(rel_err(o.dq.values(), std::vector<double>(o.dq.size(), 0.0), 1.0) <=
          1e-4 * rel_err(r.dq.values(), std::vector<double>(r.dq.size(), 0.0), 1.0));
  }
  SECTION("sparse stage: π = p over S_t gives KL = 0 and zero gradient") {
    // The same construction; the teacher and the indexer are then both renormalized over S_t
    // (make_sparse recomputes the teacher lse over the selected keys), so p = π there.
    const Shape sh{24, 24, 3, 8, 4, 8};
    Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
    for (auto& v : P.qi.f) v = std::abs(v);
    for (auto& v : P.ki.f) v = std::abs(v);
    P.qi.d = test::to_double(P.qi.f);
    P.ki.d = test::to_double(P.ki.f);
    for (int64_t t = 0; t < sh.s_q; ++t) {
      std::vector<double> u(sh.d_idx, 0.0);
      for (int64_t j = 0; j < sh.h_idx; ++j)
        for (int64_t d = 0; d < sh.d_idx; ++d) u[d] += P.w[t * sh.h_idx + j] * P.qi.d[(t * sh.h_idx + j) * sh.d_idx + d];
      for (int64_t h = 0; h < sh.h_q; ++h)
        for (int64_t d = 0; d < sh.d_qk; ++d) P.q.set((t * sh.h_q + h) * sh.d_qk + d, u[d] / P.tau);
    }
    P.kv = P.ki;
    for (bool with_length : {false, true}) {
      CAPTURE(with_length);
      Problem S = P;
      make_sparse(rng, S, 6, with_length);
      int64_t multi = 0;  // rows with ≥ 2 selected keys (where KL could be non-zero)
      for (const auto& K : S.keys) multi += K.size() >= 2;
      REQUIRE(multi > 0);
      const Outputs o = run_op(S, sparse_params, Accum::kF64, DType::kF64);
      for (double v : o.kl.values()) CHECK(std::abs(v) <= 1e-6);
      CHECK(std::abs(o.loss.values()[0]) <= 1e-6 * sh.s_q);
      Problem Q = make_problem(rng, sh, DType::kF32, DType::kF32, false);  // a generic problem
      Q.keys = S.keys;
      Q.indices = S.indices;
      Q.topk = S.topk;
      Q.topk_length = S.topk_length;
      Q.compute_lse();
      const Outputs r = run_op(Q, sparse_params, Accum::kF64, DType::kF64);
      const double generic = rel_err(r.dq.values(), std::vector<double>(r.dq.size(), 0.0), 1.0);
      REQUIRE(generic > 0);
      CHECK(rel_err(o.dq.values(), std::vector<double>(o.dq.size(), 0.0), 1.0) <= 1e-4 * generic);
      CHECK(rel_err(o.dk.values(), std::vector<double>(o.dk.size(), 0.0), 1.0) <=
            1e-4 * rel_err(r.dk.values(), std::vector<double>(r.dk.size(), 0.0), 1.0));
    }
  }
}

TEST_CASE("dense and sparse loss at the model's sizes match the float64 oracle", "[indexer_loss]") {
  // V3.2: h_q 128, d_qk 576, h_idx 64, d_idx 128; one causal sequence of 130 tokens whose last
  // 129 are the queries (row t sees keys [0, t + 2)).
  test::Rng rng(114);
  const Shape sh{129, 130, 128, 576, 64, 128};
  Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, false);
  for (int64_t t = 0; t < sh.s_q; ++t) REQUIRE((P.ks[t] == 0 && P.ke[t] == t + 2));
  {
    INFO("dense");
    const Grads g = oracle(P);
    check_against(run_op(P, dense_params, Accum::kF64, DType::kF64), g, 1e-10);
    check_against(run_op(P, dense_params, Accum::kF64, DType::kF32), g, 1e-6);
    check_against(run_op(P, dense_params, Accum::kF32, DType::kF32), g, 2e-4);
  }
  {
    INFO("sparse, topk 64");
    make_sparse(rng, P, 64, true);
    const Grads g = oracle(P);
    check_against(run_op(P, sparse_params, Accum::kF64, DType::kF64), g, 1e-10);
    check_against(run_op(P, sparse_params, Accum::kF32, DType::kF32), g, 2e-4);
  }
}

TEST_CASE("sparse with every valid key selected equals dense", "[indexer_loss]") {
  test::Rng rng(105);
  for (const Shape& sh : {Shape{20, 20, 2, 16, 3, 8}, Shape{70, 70, 2, 12, 2, 8}}) {
    Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, true);
    const Outputs dense = run_op(P, dense_params, Accum::kF32, DType::kF32);
    const int64_t topk = sh.s_kv + 3;
    // Ascending keys, −1 padding after them: the same key lists, so bitwise the same results.
    P.topk = topk;
    P.indices.assign(sh.s_q * topk, -1);
    for (int64_t t = 0; t < sh.s_q; ++t)
      for (int32_t s = P.ks[t]; s < P.ke[t]; ++s) P.indices[t * topk + (s - P.ks[t])] = s;
    const Outputs asc = run_op(P, sparse_params, Accum::kF32, DType::kF32);
    CHECK(asc.bitwise_equal(dense));
    // Shuffled order with invalid slots interleaved: equal to rounding.
    for (int64_t t = 0; t < sh.s_q; ++t) {
      std::shuffle(P.indices.begin() + t * topk, P.indices.begin() + (t + 1) * topk, rng.engine());
      if (topk > 2) P.indices[t * topk + rng.integer(0, topk - 1)] = static_cast<int32_t>(-1 - rng.integer(0, 5));
    }
    // (the replaced slot may have held a key: recompute the key lists and lse accordingly)
    for (int64_t t = 0; t < sh.s_q; ++t) {
      P.keys[t].clear();
      for (int64_t i = 0; i < topk; ++i)
        if (P.indices[t * topk + i] >= 0) P.keys[t].push_back(P.indices[t * topk + i]);
    }
    P.compute_lse();
    const Outputs shuf64 = run_op(P, sparse_params, Accum::kF64, DType::kF64);
    check_against(shuf64, oracle(P), 1e-10);
  }
}

TEST_CASE("sparse: all-valid top-k of a dense problem gives the dense loss to rounding", "[indexer_loss]") {
  test::Rng rng(106);
  const Shape sh{30, 30, 2, 16, 3, 8};
  Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
  const Outputs dense = run_op(P, dense_params, Accum::kF64, DType::kF64);
  const int64_t topk = 40;
  P.topk = topk;
  P.indices.assign(sh.s_q * topk, -1);
  for (int64_t t = 0; t < sh.s_q; ++t) {
    std::vector<int32_t> row(topk, -1);
    for (int32_t s = P.ks[t]; s < P.ke[t]; ++s) row[s - P.ks[t]] = s;
    std::shuffle(row.begin(), row.end(), rng.engine());
    std::copy(row.begin(), row.end(), P.indices.begin() + t * topk);
  }
  const Outputs sp = run_op(P, sparse_params, Accum::kF64, DType::kF64);
  CHECK(std::abs(sp.loss.values()[0] - dense.loss.values()[0]) <= 1e-12 * std::abs(dense.loss.values()[0]));
  CHECK(rel_err(sp.dq.values(), dense.dq.values()) <= 1e-12);
  CHECK(rel_err(sp.dk.values(), dense.dk.values()) <= 1e-12);
  CHECK(rel_err(sp.dw.values(), dense.dw.values()) <= 1e-12);
}

TEST_CASE("sum vs mean reduction, coefficient and row mask", "[indexer_loss]") {
  test::Rng rng(107);
  const Shape sh{25, 25, 2, 16, 3, 8};
  Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, true);
  P.mask.assign(sh.s_q, 1);
  int64_t n = sh.s_q;
  for (int64_t t = 0; t < sh.s_q; ++t)
    if (rng.uniform() < 0.3) P.mask[t] = 0, --n;
  const Outputs s1 = run_op(P, dense_params, Accum::kF64, DType::kF64, LossReduction::kSum, 1.0f);
  const Outputs mc = run_op(P, dense_params, Accum::kF64, DType::kF64, LossReduction::kMean, 2.5f);
  const double k = 2.5 / std::max<int64_t>(1, n);
  CHECK(std::abs(mc.loss.values()[0] - k * s1.loss.values()[0]) <= 1e-12 * std::abs(mc.loss.values()[0]));
  auto scaled = [&](const Output& o) {
    std::vector<double> v = o.values();
    for (auto& x : v) x *= k;
    return v;
  };
  CHECK(rel_err(mc.dq.values(), scaled(s1.dq)) <= 1e-12);
  CHECK(rel_err(mc.dk.values(), scaled(s1.dk)) <= 1e-12);
  CHECK(rel_err(mc.dw.values(), scaled(s1.dw)) <= 1e-12);
  CHECK(mc.kl.values() == s1.kl.values());  // KL_t is unscaled
  check_against(mc, oracle(P, LossReduction::kMean, 2.5), 1e-10);
  // Masked rows: zero KL and zero gradients, exactly; they do not count in N.
  for (int64_t t = 0; t < sh.s_q; ++t) {
    if (P.mask[t]) continue;
    CHECK(s1.kl.values()[t] == 0.0);
    for (int64_t j = 0; j < sh.h_idx; ++j) {
      CHECK(s1.dw.values()[t * sh.h_idx + j] == 0.0);
      for (int64_t d = 0; d < sh.d_idx; ++d) CHECK(s1.dq.values()[(t * sh.h_idx + j) * sh.d_idx + d] == 0.0);
    }
  }
  // Sum with coefficient: everything scales by c.
  const Outputs s3 = run_op(P, dense_params, Accum::kF64, DType::kF64, LossReduction::kSum, -3.0f);
  CHECK(std::abs(s3.loss.values()[0] + 3.0 * s1.loss.values()[0]) <= 1e-12 * std::abs(s3.loss.values()[0]));
  // An i32 row mask is read the same way (non-zero = valid row).
  {
    std::vector<int32_t> mask32(P.mask.begin(), P.mask.end());
    for (auto& m : mask32) m *= 7;
    Outputs o;
    o.alloc(sh, DType::kF64);
    IndexerLossDenseParams p = dense_params(P, o);
    p.row_mask = make_view(mask32.data(), DType::kI32, {sh.s_q});
    p.reduction = LossReduction::kMean;
    p.coefficient = 2.5f;
    REQUIRE(ref::run(p, Accum::kF64).ok());
    CHECK(o.bitwise_equal(mc));
  }
  // All rows masked: loss 0, N clamps to 1 (no division by zero).
  P.mask.assign(sh.s_q, 0);
  const Outputs none = run_op(P, dense_params, Accum::kF32, DType::kF32, LossReduction::kMean, 1.0f);
  CHECK(none.loss.values()[0] == 0.0);
  for (double v : none.dk.values()) CHECK(v == 0.0);
}

TEST_CASE("rows with empty valid sets give zero loss and zero gradient", "[indexer_loss]") {
  test::Rng rng(108);
  const Shape sh{16, 16, 2, 8, 2, 8};
  Problem P = make_problem(rng, sh, DType::kF32, DType::kF32, false);
  for (int64_t t = 0; t < sh.s_q; t += 3) P.ks[t] = P.ke[t];
  for (int64_t t = 0; t < sh.s_q; ++t) {
    P.keys[t].clear();
    for (int32_t s = P.ks[t]; s < P.ke[t]; ++s) P.keys[t].push_back(s);
  }
  P.compute_lse();
  const Outputs o = run_op(P, dense_params, Accum::kF32, DType::kF32);
  for (int64_t t = 0; t < sh.s_q; t += 3) {
    CHECK(o.kl.values()[t] == 0.0);
    for (int64_t j = 0; j < sh.h_idx; ++j) CHECK(o.dw.values()[t * sh.h_idx + j] == 0.0);
  }
  check_against(o, oracle(P), 2e-4);
  // Every row empty (and s_kv = 0): loss 0, all outputs written.
  Problem E = make_problem(rng, {4, 0, 2, 8, 2, 8}, DType::kF32, DType::kF32, false);
  const Outputs e = run_op(E, dense_params, Accum::kF32, DType::kF32);
  CHECK(e.loss.values()[0] == 0.0);
  // No query rows (s_q = 0): loss 0 and dk_idx all zero.
  Problem Z = make_problem(rng, {0, 5, 2, 8, 2, 8}, DType::kF32, DType::kF32, false);
  const Outputs z = run_op(Z, dense_params, Accum::kF32, DType::kF32);
  CHECK(z.loss.values()[0] == 0.0);
  for (double v : z.dk.values()) CHECK(v == 0.0);
  // Empty sparse rows: every slot invalid.
  make_sparse(rng, P, 4, false);
  std::fill(P.indices.begin(), P.indices.begin() + 4, -1);
  P.keys[0].clear();
  const Outputs s = run_op(P, sparse_params, Accum::kF32, DType::kF32);
  CHECK(s.kl.values()[0] == 0.0);
}

TEST_CASE("ReLU'(0) = 0: a key with z = 0 receives no gradient", "[indexer_loss]") {
  test::Rng rng(109);
  const Shape sh{12, 12, 2, 8, 3, 8};
  Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, false);
  for (int64_t d = 0; d < sh.d_idx; ++d) P.ki.set(3 * sh.d_idx + d, 0.0);        // z[·,·,3] = 0
  for (int64_t d = 0; d < sh.d_idx; ++d) P.qi.set((5 * sh.h_idx + 1) * sh.d_idx + d, 0.0);  // z[5,1,·] = 0
  const Outputs o = run_op(P, dense_params, Accum::kF32, DType::kF32);
  for (int64_t d = 0; d < sh.d_idx; ++d) {
    CHECK(o.dk.values()[3 * sh.d_idx + d] == 0.0);
    CHECK(o.dq.values()[(5 * sh.h_idx + 1) * sh.d_idx + d] == 0.0);
  }
  CHECK(o.dw.values()[5 * sh.h_idx + 1] == 0.0);
  check_against(o, oracle(P), 2e-4);
}

TEST_CASE("results are bitwise deterministic", "[indexer_loss]") {
  test::Rng rng(110);
  Problem P = make_problem(rng, {130, 130, 3, 32, 4, 16}, DType::kBF16, DType::kBF16, true);
  const Outputs a = run_op(P, dense_params, Accum::kF32, DType::kF32);
  const Outputs b = run_op(P, dense_params, Accum::kF32, DType::kF32);
  CHECK(a.bitwise_equal(b));
  make_sparse(rng, P, 17, true);
  const Outputs c = run_op(P, sparse_params, Accum::kF32, DType::kF32);
  const Outputs d = run_op(P, sparse_params, Accum::kF32, DType::kF32);
  CHECK(c.bitwise_equal(d));
}

TEST_CASE("gradient outputs and row_kl are optional", "[indexer_loss]") {
  test::Rng rng(111);
  Problem P = make_problem(rng, {10, 10, 2, 8, 2, 8}, DType::kF32, DType::kF32, false);
  const Outputs full = run_op(P, dense_params, Accum::kF32, DType::kF32);
  Outputs o;
  o.alloc(P.sh, DType::kF32);
  IndexerLossDenseParams p = dense_params(P, o);
  p.row_kl = p.dq_idx = p.dk_idx = p.dweights = TensorView{};
  REQUIRE(run(p).ok());
  CHECK(o.loss.f == full.loss.f);
  CHECK(o.dq.untouched());
}

namespace {
void expect_failure(const Status& s, StatusCode code, const char* op, const char* needle, const Outputs& o) {
  INFO("message: " << s.message() << " | expected: " << needle);
  CHECK(s.code() == code);
  CHECK(s.message().find(std::string(op) + ": ") == 0);
  CHECK(s.message().find(needle) != std::string::npos);
  CHECK(o.untouched());
}
}  // namespace

TEST_CASE("bad input is rejected naming the argument, outputs untouched", "[indexer_loss][validation]") {
  test::Rng rng(112);
  Problem P = make_problem(rng, {6, 6, 2, 8, 2, 8}, DType::kBF16, DType::kBF16, false);
  Problem Ps = P;
  make_sparse(rng, Ps, 4, true);
  Outputs o;
  o.alloc(P.sh, DType::kF32);
  std::vector<float> f32_q(6 * 2 * 8, 1.0f);
  std::vector<double> f64_lse(12);
  std::vector<int32_t> bad_ks = P.ks, bad_ke = P.ke, bad_len = Ps.topk_length;
  bad_ks[2] = -1;
  bad_ke[4] = 7;
  bad_len[1] = 5;
  using M = std::function<void(IndexerLossDenseParams&)>;
  struct DenseCase {
    const char* name;
    M mut;
    StatusCode code;
    const char* needle;
  };
  const DenseCase dense_cases[] = {
      {"q null", [](auto& p) { p.q.data = nullptr; }, StatusCode::kNullPointer, "q"},
      {"q absent", [](auto& p) { p.q = TensorView{}; }, StatusCode::kNullPointer, "q is required"},
      {"q dtype", [](auto& p) { p.q.dtype = DType::kE4M3; }, StatusCode::kUnsupportedDtype, "q"},
      {"q rank", [](auto& p) { p.q.rank = 2; }, StatusCode::kInvalidArgument, "q"},
      {"q stride", [](auto& p) { p.q.stride[2] = 2; }, StatusCode::kInvalidArgument, "q"},
      {"q zero heads", [](auto& p) { p.q.shape[1] = 0; p.lse.shape[1] = 0; }, StatusCode::kUnsupportedShape, "q.shape[1]"},
      {"kv null", [](auto& p) { p.kv.data = nullptr; }, StatusCode::kNullPointer, "kv"},
      {"kv dtype", [](auto& p) { p.kv.dtype = DType::kI32; }, StatusCode::kUnsupportedDtype, "kv"},
      {"kv d mismatch", [](auto& p) { p.kv.shape[1] = 7; }, StatusCode::kInvalidArgument, "kv.shape[1]"},
      {"lse null", [](auto& p) { p.lse.data = nullptr; }, StatusCode::kNullPointer, "lse"},
      {"lse dtype", [&](auto& p) { p.lse = make_view(f64_lse.data(), DType::kF64, {6, 2}); }, StatusCode::kUnsupportedDtype, "lse"},
      {"lse shape", [](auto& p) { p.lse.shape[1] = 3; }, StatusCode::kInvalidArgument, "lse.shape[1]"},
      {"sm_scale zero", [](auto& p) { p.sm_scale = 0.0f; }, StatusCode::kInvalidArgument, "sm_scale"},
      {"sm_scale nan", [](auto& p) { p.sm_scale = NAN; }, StatusCode::kInvalidArgument, "sm_scale"},
      {"lse_base", [](auto& p) { p.lse_base = static_cast<LseBase>(7); }, StatusCode::kInvalidArgument, "lse_base"},
      {"q_idx null", [](auto& p) { p.q_idx.data = nullptr; }, StatusCode::kNullPointer, "q_idx"},
      {"q_idx dtype", [](auto& p) { p.q_idx.dtype = DType::kE4M3; }, StatusCode::kUnsupportedDtype, "q_idx"},
      {"q_idx rows", [](auto& p) { p.q_idx.shape[0] = 5; }, StatusCode::kInvalidArgument, "q_idx.shape[0]"},
      {"k_idx null", [](auto& p) { p.k_idx.data = nullptr; }, StatusCode::kNullPointer, "k_idx"},
      {"k_idx d", [](auto& p) { p.k_idx.shape[1] = 4; }, StatusCode::kInvalidArgument, "k_idx.shape[1]"},
      {"k_idx dtype", [](auto& p) { p.k_idx.dtype = DType::kU8; }, StatusCode::kUnsupportedDtype, "k_idx"},
      {"weights null", [](auto& p) { p.weights.data = nullptr; }, StatusCode::kNullPointer, "weights"},
      {"weights dtype", [](auto& p) { p.weights.dtype = DType::kBF16; }, StatusCode::kUnsupportedDtype, "weights"},
      {"weights shape", [](auto& p) { p.weights.shape[1] = 3; }, StatusCode::kInvalidArgument, "weights.shape[1]"},
      {"ks null", [](auto& p) { p.ks.data = nullptr; }, StatusCode::kNullPointer, "ks"},
      {"ks dtype", [](auto& p) { p.ks.dtype = DType::kF32; }, StatusCode::kUnsupportedDtype, "ks"},
      {"ks value", [&](auto& p) { p.ks.data = bad_ks.data(); }, StatusCode::kInvalidArgument, "ks[2] = -1"},
      {"ke null", [](auto& p) { p.ke.data = nullptr; }, StatusCode::kNullPointer, "ke"},
      {"ke shape", [](auto& p) { p.ke.shape[0] = 5; }, StatusCode::kInvalidArgument, "ke.shape[0]"},
      {"ke value", [&](auto& p) { p.ke.data = bad_ke.data(); }, StatusCode::kInvalidArgument, "ke[4] = 7"},
      {"row_mask dtype", [&](auto& p) { p.row_mask = make_view(f32_q.data(), DType::kF32, {6}); }, StatusCode::kUnsupportedDtype, "row_mask"},
      {"row_mask shape", [&](auto& p) { p.row_mask = make_view(bad_ks.data(), DType::kI32, {5}); }, StatusCode::kInvalidArgument, "row_mask.shape[0]"},
      {"reduction", [](auto& p) { p.reduction = static_cast<LossReduction>(2); }, StatusCode::kInvalidArgument, "reduction"},
      {"coefficient", [](auto& p) { p.coefficient = INFINITY; }, StatusCode::kInvalidArgument, "coefficient"},
      {"loss absent", [](auto& p) { p.loss = TensorView{}; }, StatusCode::kNullPointer, "loss"},
      {"loss dtype", [](auto& p) { p.loss.dtype = DType::kBF16; }, StatusCode::kUnsupportedDtype, "loss"},
      {"loss shape", [](auto& p) { p.loss.shape[0] = 2; }, StatusCode::kUnsupportedShape, "loss.shape[0]"},
      {"row_kl shape", [](auto& p) { p.row_kl.shape[0] = 4; }, StatusCode::kInvalidArgument, "row_kl.shape[0]"},
      {"row_kl dtype", [](auto& p) { p.row_kl.dtype = DType::kBF16; }, StatusCode::kUnsupportedDtype, "row_kl"},
      {"dq_idx shape", [](auto& p) { p.dq_idx.shape[2] = 4; }, StatusCode::kInvalidArgument, "dq_idx.shape[2]"},
      {"dq_idx null", [](auto& p) { p.dq_idx.data = nullptr; }, StatusCode::kNullPointer, "dq_idx"},
      {"dk_idx shape", [](auto& p) { p.dk_idx.shape[0] = 5; }, StatusCode::kInvalidArgument, "dk_idx.shape[0]"},
      {"dk_idx stride", [](auto& p) { p.dk_idx.stride[1] = 3; }, StatusCode::kInvalidArgument, "dk_idx"},
      {"dweights dtype", [](auto& p) { p.dweights.dtype = DType::kI32; }, StatusCode::kUnsupportedDtype, "dweights"},
      {"dweights shape", [](auto& p) { p.dweights.shape[1] = 1; }, StatusCode::kInvalidArgument, "dweights.shape[1]"},
  };
  for (const DenseCase& dc : dense_cases) {
    SECTION(std::string("dense: ") + dc.name) {
      IndexerLossDenseParams p = dense_params(P, o);
      dc.mut(p);
      expect_failure(run(p), dc.code, "indexer_loss_dense", dc.needle, o);
      o.poison();
      expect_failure(ref::run(p, Accum::kF64), dc.code, "indexer_loss_dense", dc.needle, o);
      if (dc.code != StatusCode::kInvalidArgument || std::string(dc.name).find("value") == std::string::npos)
        CHECK(!supports(p).ok());
    }
  }
  std::vector<int32_t> idx_f(Ps.indices.size());
  using S = std::function<void(IndexerLossSparseParams&)>;
  struct SparseCase {
    const char* name;
    S mut;
    StatusCode code;
    const char* needle;
  };
  const SparseCase sparse_cases[] = {
      {"indices null", [](auto& p) { p.indices.data = nullptr; }, StatusCode::kNullPointer, "indices"},
      {"indices absent", [](auto& p) { p.indices = TensorView{}; }, StatusCode::kNullPointer, "indices is required"},
      {"indices dtype", [](auto& p) { p.indices.dtype = DType::kF32; }, StatusCode::kUnsupportedDtype, "indices"},
      {"indices rows", [](auto& p) { p.indices.shape[0] = 3; }, StatusCode::kInvalidArgument, "indices.shape[0]"},
      {"indices stride", [](auto& p) { p.indices.stride[1] = 2; }, StatusCode::kInvalidArgument, "indices"},
      {"topk_length dtype", [](auto& p) { p.topk_length.dtype = DType::kU8; }, StatusCode::kUnsupportedDtype, "topk_length"},
      {"topk_length shape", [](auto& p) { p.topk_length.shape[0] = 2; }, StatusCode::kInvalidArgument, "topk_length.shape[0]"},
      {"topk_length value", [&](auto& p) { p.topk_length.data = bad_len.data(); }, StatusCode::kInvalidArgument, "topk_length[1] = 5"},
      {"teacher", [](auto& p) { p.teacher = static_cast<SparseTeacher>(9); }, StatusCode::kInvalidArgument, "teacher"},
      {"teacher reserved", [](auto& p) { p.teacher = SparseTeacher::kDenseRenormalized; }, StatusCode::kNotImplemented, "teacher"},
      {"q dtype", [](auto& p) { p.q.dtype = DType::kE4M3; }, StatusCode::kUnsupportedDtype, "q"},
      {"lse shape", [](auto& p) { p.lse.shape[0] = 2; }, StatusCode::kInvalidArgument, "lse.shape[0]"},
      {"sm_scale", [](auto& p) { p.sm_scale = -1.0f; }, StatusCode::kInvalidArgument, "sm_scale"},
      {"k_idx null", [](auto& p) { p.k_idx.data = nullptr; }, StatusCode::kNullPointer, "k_idx"},
      {"weights shape", [](auto& p) { p.weights.shape[0] = 1; }, StatusCode::kInvalidArgument, "weights.shape[0]"},
      {"reduction", [](auto& p) { p.reduction = static_cast<LossReduction>(-1); }, StatusCode::kInvalidArgument, "reduction"},
      {"coefficient", [](auto& p) { p.coefficient = NAN; }, StatusCode::kInvalidArgument, "coefficient"},
      {"loss absent", [](auto& p) { p.loss = TensorView{}; }, StatusCode::kNullPointer, "loss"},
      {"dk_idx dtype", [](auto& p) { p.dk_idx.dtype = DType::kBF16; }, StatusCode::kUnsupportedDtype, "dk_idx"},
  };
  for (const SparseCase& sc : sparse_cases) {
    SECTION(std::string("sparse: ") + sc.name) {
      IndexerLossSparseParams p = sparse_params(Ps, o);
      sc.mut(p);
      expect_failure(run(p), sc.code, "indexer_loss_sparse", sc.needle, o);
    }
  }
}

TEST_CASE("C ABI: same results as the C++ API, errors reported", "[indexer_loss][c_abi]") {
  test::Rng rng(113);
  Problem P = make_problem(rng, {12, 12, 2, 8, 3, 8}, DType::kBF16, DType::kBF16, true);
  const Outputs cpp = run_op(P, dense_params, Accum::kF32, DType::kF32, LossReduction::kMean, 0.5f);
  Outputs o;
  o.alloc(P.sh, DType::kF32);
  const IndexerLossDenseParams p = dense_params(P, o);
  dsa_indexer_loss_dense_params c;
  REQUIRE(dsa_indexer_loss_dense_params_init(&c) == DSA_STATUS_OK);
  CHECK(c.reduction == DSA_LOSS_REDUCTION_SUM);
  CHECK(c.coefficient == 1.0f);
  auto tv = [](const TensorView& v) {
    dsa_tensor t;
    std::memcpy(&t, &v, sizeof t);
    return t;
  };
  c.q = tv(p.q), c.kv = tv(p.kv), c.lse = tv(p.lse), c.sm_scale = p.sm_scale;
  c.q_idx = tv(p.q_idx), c.k_idx = tv(p.k_idx), c.weights = tv(p.weights), c.ks = tv(p.ks), c.ke = tv(p.ke);
  c.reduction = DSA_LOSS_REDUCTION_MEAN, c.coefficient = 0.5f;
  c.loss = tv(p.loss), c.row_kl = tv(p.row_kl), c.dq_idx = tv(p.dq_idx), c.dk_idx = tv(p.dk_idx), c.dweights = tv(p.dweights);
  REQUIRE(dsa_indexer_loss_dense_supports(&c) == DSA_STATUS_OK);
  REQUIRE(dsa_indexer_loss_dense_run(&c, nullptr, 0, nullptr) == DSA_STATUS_OK);
  CHECK(o.bitwise_equal(cpp));
  o.poison();
  c.sm_scale = 0.0f;
  CHECK(dsa_indexer_loss_dense_run_reference(&c, DSA_ACCUM_F64) == DSA_STATUS_INVALID_ARGUMENT);
  CHECK(std::string(dsa_last_error_message()).find("sm_scale") != std::string::npos);
  CHECK(o.untouched());
  // Sparse: the reserved teacher is refused with NOT_IMPLEMENTED.
  dsa_indexer_loss_sparse_params sc;
  REQUIRE(dsa_indexer_loss_sparse_params_init(&sc) == DSA_STATUS_OK);
  CHECK(sc.teacher == DSA_SPARSE_TEACHER_SPARSE_HEAD_MEAN);
  make_sparse(rng, P, 5, false);
  IndexerLossSparseParams sp = sparse_params(P, o);
  sc.q = tv(sp.q), sc.kv = tv(sp.kv), sc.lse = tv(sp.lse), sc.sm_scale = sp.sm_scale;
  sc.indices = tv(sp.indices), sc.q_idx = tv(sp.q_idx), sc.k_idx = tv(sp.k_idx), sc.weights = tv(sp.weights);
  sc.loss = tv(sp.loss);
  sc.teacher = DSA_SPARSE_TEACHER_DENSE_RENORMALIZED;
  CHECK(dsa_indexer_loss_sparse_run(&sc, nullptr, 0, nullptr) == DSA_STATUS_NOT_IMPLEMENTED);
  sc.teacher = DSA_SPARSE_TEACHER_SPARSE_HEAD_MEAN;
  REQUIRE(dsa_indexer_loss_sparse_run(&sc, nullptr, 0, nullptr) == DSA_STATUS_OK);
  CHECK(std::abs(o.loss.values()[0] - oracle(P).loss) <= 2e-4 * oracle(P).loss_scale);
}

TEST_CASE("teacher lse from the library's dense and sparse forwards", "[indexer_loss]") {
  // The intended pipeline: lse from dense_mla_fwd (warm-up) or sparse_mla_fwd (sparse stage).
  test::Rng rng(114);
  const Shape sh{40, 40, 3, 24, 3, 8};
  Problem P = make_problem(rng, sh, DType::kBF16, DType::kBF16, true);
  const std::vector<float> own = P.lse;
  std::vector<float> out(sh.s_q * sh.h_q * 16);
  DenseMlaFwdParams f;
  f.q = P.q.view({sh.s_q, sh.h_q, sh.d_qk});
  f.kv = P.kv.view({sh.s_kv, sh.d_qk});
  f.ks = make_view(P.ks.data(), DType::kI32, {sh.s_q});
  f.ke = make_view(P.ke.data(), DType::kI32, {sh.s_q});
  f.out = make_view(out.data(), DType::kF32, {sh.s_q, sh.h_q, 16});
  f.lse = make_view(P.lse.data(), DType::kF32, {sh.s_q, sh.h_q});
  f.sm_scale = static_cast<float>(P.tau);
  REQUIRE(run(f).ok());
  for (size_t i = 0; i < own.size(); ++i)
    if (std::isinf(own[i])) CHECK(P.lse[i] == own[i]);
    else CHECK(std::abs(P.lse[i] - own[i]) <= 1e-5 * std::max(1.0f, std::abs(own[i])));
  check_against(run_op(P, dense_params, Accum::kF32, DType::kF32), oracle(P), 2e-4);
  make_sparse(rng, P, 9, true);
  SparseMlaFwdParams s;
  s.q = f.q;
  s.kv = f.kv;
  s.indices = make_view(P.indices.data(), DType::kI32, {sh.s_q, P.topk});
  s.topk_length = make_view(P.topk_length.data(), DType::kI32, {sh.s_q});
  s.out = f.out;
  s.lse = f.lse;
  s.sm_scale = f.sm_scale;
  REQUIRE(run(s).ok());
  check_against(run_op(P, sparse_params, Accum::kF32, DType::kF32), oracle(P), 2e-4);
}

// Prints a hash of every output of one dense and one sparse call (run by the next test in child
// processes with different DSA_NUM_THREADS; hidden from the normal run).
TEST_CASE("indexer loss output hash", "[.loss_hash]") {
  test::Rng rng(115);
  Problem P = make_problem(rng, {150, 150, 3, 32, 4, 16}, DType::kBF16, DType::kBF16, true);
  uint64_t h = test::kFnvOffset;
  auto mix = [&](const Outputs& o) {
    for (const Output* x : {&o.loss, &o.kl, &o.dq, &o.dk, &o.dw}) h = test::fnv1a(x->f, h);
  };
  mix(run_op(P, dense_params, Accum::kF32, DType::kF32));
  make_sparse(rng, P, 23, true);
  mix(run_op(P, sparse_params, Accum::kF32, DType::kF32));
  std::printf("LOSSHASH %016llx\n", static_cast<unsigned long long>(h));
}

TEST_CASE("results do not depend on the thread count", "[indexer_loss]") {
  std::vector<std::string> hashes;
  for (int threads : {1, 2, 3, 7}) {
    const test::ChildRun r = test::run_self_with_threads("[.loss_hash]", threads, "LOSSHASH ");
    CHECK(r.status == 0);
    INFO("DSA_NUM_THREADS=" << threads);
    REQUIRE(!r.lines.empty());
    hashes.push_back(r.lines.back());
  }
  for (const std::string& h : hashes) CHECK(h == hashes[0]);
}
