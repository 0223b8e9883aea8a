// dsa_warmup — train a toy lightning indexer on CPU with only this library's KL loss and
// gradients (SPEC §8): the dense warm-up stage (OP-LOSS-DENSE), then the sparse stage
// (OP-LOSS-SPARSE) on the indexer's own top-k.
//
// The frozen "main attention" has structure: every token has a hidden type c ∈ [0, C), and a
// query of type c attends to the earlier tokens of type perm(c) — a few planted relevant tokens
// per query, so the teacher (head-mean attention) is peaked. The indexer (SPEC §4.1, RoPE and
// Hadamard left out of the toy) has its own projections, trained with Adam:
//   q_idx[t,j] = Wq[j]·c^Q_t   (c^Q_t = Wc·x_t, a frozen query latent)
//   k_idx[s]   = Wk·x_s
//   w[t,j]     = Ww[j]·x_t
// The example chains the library's dq_idx / dk_idx / dweights into these projections itself.
// Per step it prints the KL loss and the top-k recall on a held-out batch: the teacher's
// probability mass captured by the indexer's top-k (dsa::run(IndexerLogitsParams) + TopKParams),
// next to what a random k-subset captures.
//
// Exit code 0 iff the dense-stage loss fell by half, the recall ended ≥ kRecallThreshold (and
// ≥ 3× random), and the sparse stage kept recall ≥ kRecallThreshold with a falling sparse loss.
//
//   dsa_warmup [--seed N] [--dense-steps N] [--sparse-steps N] [--quiet]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dsa/dsa.hpp"

namespace {

using dsa::DType;
using dsa::make_view;

constexpr int kSeqs = 2, kSeqLen = 96, kT = kSeqs * kSeqLen;  // packed tokens per batch
constexpr int kD = 32;                                        // hidden size = teacher d_qk
constexpr int kTypes = 16;                                    // token types
constexpr int kHeads = 4;                                     // teacher heads
constexpr int kDv = 32;                                       // teacher d_v (only lse is used)
constexpr int kLatent = 24;                                   // query latent c^Q
constexpr int kHidx = 4, kDidx = 16;                          // indexer heads × dim
constexpr int kTopK = 8;                                      // recall@k and sparse stage k
constexpr double kRecallThreshold = 0.6;

void check(const dsa::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s failed: %s\n", what, s.message().c_str());
    std::exit(2);
  }
}

using Mat = std::vector<double>;  // row-major

struct Adam {
  std::vector<double> m, v;
  int t = 0;
  double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  explicit Adam(size_t n, double lr_) : m(n, 0.0), v(n, 0.0), lr(lr_) {}
  void step(std::vector<double>& w, const std::vector<double>& g) {
    ++t;
    const double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < w.size(); ++i) {
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      w[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
    }
  }
};

// The frozen world: type embeddings, the teacher's query map, the query-latent projection.
struct World {
  Mat E, M, R, Wc;  // E [C, D]; M [D, D]; R [H, D, D] per-head perturbation; Wc [latent, D]
  std::vector<int> perm;
  double alpha;
  float tau = static_cast<float>(1.0 / std::sqrt(double(kD)));
  explicit World(std::mt19937_64& g) {
    std::normal_distribution<double> n(0, 1);
    E.resize(kTypes * kD);
    for (auto& e : E) e = n(g);
    perm.resize(kTypes);
    for (int c = 0; c < kTypes; ++c) perm[c] = c;
    std::shuffle(perm.begin(), perm.end(), g);
    // M maps E[c] ≈ to E[perm(c)]: M = Σ_c E[perm(c)] E[c]^T / D.
    M.assign(kD * kD, 0.0);
    for (int c = 0; c < kTypes; ++c)
      for (int a = 0; a < kD; ++a)
        for (int b = 0; b < kD; ++b) M[a * kD + b] += E[perm[c] * kD + a] * E[c * kD + b] / kD;
    R.resize(kHeads * kD * kD);
    for (auto& r : R) r = 0.15 * n(g) / std::sqrt(double(kD));
    Wc.resize(kLatent * kD);
    for (auto& w : Wc) w = n(g) / std::sqrt(double(kD));
    alpha = 6.0 / (tau * kD);  // τ·q·kv ≈ 6 on the planted tokens
  }
};

// One packed batch: hidden states, teacher q/kv, the query latent, causal ranges.
struct Batch {
  std::vector<float> x, q, kv, latent;
  std::vector<int32_t> ks, ke;
  Batch(const World& w, std::mt19937_64& g) {
    std::normal_distribution<double> n(0, 1);
    std::uniform_int_distribution<int> type(0, kTypes - 1);
    x.resize(kT * kD);
    for (int t = 0; t < kT; ++t) {
      const int c = type(g);
      for (int d = 0; d < kD; ++d) x[t * kD + d] = static_cast<float>(w.E[c * kD + d] + 0.3 * n(g));
    }
    kv = x;  // the teacher's keys are the hidden states
    q.resize(kT * kHeads * kD);
    latent.resize(kT * kLatent);
    for (int t = 0; t < kT; ++t) {
      for (int h = 0; h < kHeads; ++h)
        for (int a = 0; a < kD; ++a) {
          double acc = 0;
          for (int b = 0; b < kD; ++b) acc += (w.alpha * w.M[a * kD + b] + w.R[(h * kD + a) * kD + b]) * x[t * kD + b];
          q[(t * kHeads + h) * kD + a] = static_cast<float>(acc);
        }
      for (int a = 0; a < kLatent; ++a) {
        double acc = 0;
        for (int b = 0; b < kD; ++b) acc += w.Wc[a * kD + b] * x[t * kD + b];
        latent[t * kLatent + a] = static_cast<float>(acc);
      }
      ks.push_back(t / kSeqLen * kSeqLen);
      ke.push_back(t + 1);
    }
  }
};

// The trainable indexer.
struct Indexer {
  std::vector<double> wq, wk, ww;  // [Hidx, Didx, latent], [Didx, D], [Hidx, D]
  explicit Indexer(std::mt19937_64& g) {
    std::normal_distribution<double> n(0, 1);
    wq.resize(kHidx * kDidx * kLatent);
    wk.resize(kDidx * kD);
    ww.resize(kHidx * kD);
    for (auto& v : wq) v = n(g) / std::sqrt(double(kLatent));
    for (auto& v : wk) v = n(g) / std::sqrt(double(kD));
    for (auto& v : ww) v = 0.3 * n(g) / std::sqrt(double(kD));
  }
  // Forward: q_idx [T, Hidx, Didx], k_idx [T, Didx], w [T, Hidx] (f32 for the library).
  void forward(const Batch& b, std::vector<float>& qi, std::vector<float>& ki, std::vector<float>& w) const {
    qi.assign(kT * kHidx * kDidx, 0.0f);
    ki.assign(kT * kDidx, 0.0f);
    w.assign(kT * kHidx, 0.0f);
    for (int t = 0; t < kT; ++t) {
      for (int j = 0; j < kHidx; ++j) {
        for (int a = 0; a < kDidx; ++a) {
          double acc = 0;
          for (int c = 0; c < kLatent; ++c) acc += wq[(j * kDidx + a) * kLatent + c] * b.latent[t * kLatent + c];
          qi[(t * kHidx + j) * kDidx + a] = static_cast<float>(acc);
        }
        double acc = 0;
        for (int d = 0; d < kD; ++d) acc += ww[j * kD + d] * b.x[t * kD + d];
        w[t * kHidx + j] = static_cast<float>(acc);
      }
      for (int a = 0; a < kDidx; ++a) {
        double acc = 0;
        for (int d = 0; d < kD; ++d) acc += wk[a * kD + d] * b.x[t * kD + d];
        ki[t * kDidx + a] = static_cast<float>(acc);
      }
    }
  }
  // Chain rule from the library's gradients into the projections.
  void backward(const Batch& b, const std::vector<float>& dq, const std::vector<float>& dk,
                const std::vector<float>& dw, std::vector<double>& gq, std::vector<double>& gk,
                std::vector<double>& gw) const {
    gq.assign(wq.size(), 0.0);
    gk.assign(wk.size(), 0.0);
    gw.assign(ww.size(), 0.0);
    for (int t = 0; t < kT; ++t) {
      for (int j = 0; j < kHidx; ++j) {
        for (int a = 0; a < kDidx; ++a) {
          const double g = dq[(t * kHidx + j) * kDidx + a];
          for (int c = 0; c < kLatent; ++c) gq[(j * kDidx + a) * kLatent + c] += g * b.latent[t * kLatent + c];
        }
        for (int d = 0; d < kD; ++d) gw[j * kD + d] += dw[t * kHidx + j] * b.x[t * kD + d];
      }
      for (int a = 0; a < kDidx; ++a)
        for (int d = 0; d < kD; ++d) gk[a * kD + d] += dk[t * kDidx + a] * b.x[t * kD + d];
    }
  }
};

// Teacher lse over each row's causal range: the library's dense forward.
std::vector<float> dense_lse(const Batch& b, const World& w) {
  std::vector<float> out(kT * kHeads * kDv), lse(kT * kHeads);
  dsa::DenseMlaFwdParams p;
  p.q = make_view(b.q.data(), DType::kF32, {kT, kHeads, kD});
  p.kv = make_view(b.kv.data(), DType::kF32, {kT, kD});
  p.ks = make_view(b.ks.data(), DType::kI32, {kT});
  p.ke = make_view(b.ke.data(), DType::kI32, {kT});
  p.out = make_view(out.data(), DType::kF32, {kT, kHeads, kDv});
  p.lse = make_view(lse.data(), DType::kF32, {kT, kHeads});
  p.sm_scale = w.tau;
  check(dsa::run(p), "dense_mla_fwd");
  return lse;
}

// The indexer's top-k per row: exact-mode logits (OP-IDXLOGITS), then OP-TOPK (−1 past k_eff).
std::vector<int32_t> indexer_topk(const Batch& b, const std::vector<float>& qi, const std::vector<float>& ki,
                                  const std::vector<float>& w) {
  std::vector<float> logits(kT * kT);
  dsa::IndexerLogitsParams lp;
  lp.q = make_view(qi.data(), DType::kF32, {kT, kHidx, kDidx});
  lp.k = make_view(ki.data(), DType::kF32, {kT, kDidx});
  lp.weights = make_view(w.data(), DType::kF32, {kT, kHidx});
  lp.ks = make_view(b.ks.data(), DType::kI32, {kT});
  lp.ke = make_view(b.ke.data(), DType::kI32, {kT});
  lp.logits = make_view(logits.data(), DType::kF32, {kT, kT});
  check(dsa::run(lp), "indexer_logits");
  std::vector<int32_t> idx(kT * kTopK);
  dsa::TopKParams tp;
  tp.scores = lp.logits;
  tp.ks = lp.ks;
  tp.ke = lp.ke;
  tp.indices = make_view(idx.data(), DType::kI32, {kT, kTopK});
  check(dsa::run(tp), "topk");
  return idx;
}

// Mean over rows with more than k candidates of the teacher mass inside the top-k, and of k/|V_t|.
void recall(const Batch& b, const World& w, const std::vector<float>& lse, const std::vector<int32_t>& idx,
            double* captured, double* random) {
  double sum = 0, base = 0;
  int rows = 0;
  for (int t = 0; t < kT; ++t) {
    const int n = b.ke[t] - b.ks[t];
    if (n <= kTopK) continue;
    double mass = 0;
    for (int i = 0; i < kTopK; ++i) {
      const int s = idx[t * kTopK + i];
      if (s < 0) continue;
      for (int h = 0; h < kHeads; ++h) {
        double dot = 0;
        for (int d = 0; d < kD; ++d) dot += double(b.q[(t * kHeads + h) * kD + d]) * b.kv[s * kD + d];
        mass += std::exp(double(w.tau) * dot - lse[t * kHeads + h]) / kHeads;
      }
    }
    sum += mass;
    base += double(kTopK) / n;
    ++rows;
  }
  *captured = sum / rows;
  *random = base / rows;
}

// Mean of the first or last n entries (per-step losses are on fresh batches, hence noisy).
double mean_of(const std::vector<float>& v, bool first, size_t n = 5) {
  n = std::min(n, v.size());
  if (n == 0) return 0;
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += first ? v[i] : v[v.size() - 1 - i];
  return s / n;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1234;
  int dense_steps = 150, sparse_steps = 60;
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--dense-steps" && i + 1 < argc) dense_steps = std::atoi(argv[++i]);
    else if (a == "--sparse-steps" && i + 1 < argc) sparse_steps = std::atoi(argv[++i]);
    else if (a == "--quiet") quiet = true;
    else {
      std::fprintf(stderr, "usage: %s [--seed N] [--dense-steps N] [--sparse-steps N] [--quiet]\n", argv[0]);
      return 2;
    }
  }
  std::mt19937_64 gen(seed);
  const World world(gen);
  Indexer ix(gen);
  Adam aq(ix.wq.size(), 1e-2), ak(ix.wk.size(), 1e-2), aw(ix.ww.size(), 1e-2);
  std::mt19937_64 eval_gen(seed ^ 0xE7A1);
  const Batch eval(world, eval_gen);
  const std::vector<float> eval_lse = dense_lse(eval, world);

  std::vector<float> qi, ki, w, dq(kT * kHidx * kDidx), dk(kT * kDidx), dw(kT * kHidx);
  std::vector<double> gq, gk, gw;
  auto eval_recall = [&](double* r, double* base) {
    std::vector<float> eq, ek, ew;
    ix.forward(eval, eq, ek, ew);
    recall(eval, world, eval_lse, indexer_topk(eval, eq, ek, ew), r, base);
  };
  auto report = [&](const char* stage, int step, float loss, bool force) {
    if (quiet && !force) return;
    double r, base;
    eval_recall(&r, &base);
    std::printf("%-6s step %4d  KL loss %8.4f  recall@%d %.3f  (random %.3f)\n", stage, step, loss, kTopK, r, base);
  };

  std::printf("dsa_warmup: %d sequences x %d tokens, teacher %d heads x d %d, indexer %d x %d, k = %d\n", kSeqs,
              kSeqLen, kHeads, kD, kHidx, kDidx, kTopK);
  double r0, base0;
  eval_recall(&r0, &base0);
  std::printf("before training: recall@%d %.3f (random %.3f)\n", kTopK, r0, base0);

  // ---- dense warm-up stage (OP-LOSS-DENSE) ----------------------------------------------------------
  std::vector<float> dense_losses, sparse_losses;
  for (int step = 0; step < dense_steps; ++step) {
    const Batch b(world, gen);
    const std::vector<float> lse = dense_lse(b, world);
    ix.forward(b, qi, ki, w);
    float loss = 0;
    dsa::IndexerLossDenseParams p;
    p.q = make_view(b.q.data(), DType::kF32, {kT, kHeads, kD});
    p.kv = make_view(b.kv.data(), DType::kF32, {kT, kD});
    p.lse = make_view(lse.data(), DType::kF32, {kT, kHeads});
    p.sm_scale = world.tau;
    p.q_idx = make_view(qi.data(), DType::kF32, {kT, kHidx, kDidx});
    p.k_idx = make_view(ki.data(), DType::kF32, {kT, kDidx});
    p.weights = make_view(w.data(), DType::kF32, {kT, kHidx});
    p.ks = make_view(b.ks.data(), DType::kI32, {kT});
    p.ke = make_view(b.ke.data(), DType::kI32, {kT});
    p.reduction = dsa::LossReduction::kMean;
    p.loss = make_view(&loss, DType::kF32, {1});
    p.dq_idx = make_view(dq.data(), DType::kF32, {kT, kHidx, kDidx});
    p.dk_idx = make_view(dk.data(), DType::kF32, {kT, kDidx});
    p.dweights = make_view(dw.data(), DType::kF32, {kT, kHidx});
    check(dsa::run(p), "indexer_loss_dense");
    ix.backward(b, dq, dk, dw, gq, gk, gw);
    aq.step(ix.wq, gq);
    ak.step(ix.wk, gk);
    aw.step(ix.ww, gw);
    dense_losses.push_back(loss);
    report("dense", step, loss, step == 0 || step % 10 == 0 || step == dense_steps - 1);
  }
  double r_dense, base_dense;
  eval_recall(&r_dense, &base_dense);

  // ---- sparse stage (OP-LOSS-SPARSE) on the indexer's own top-k -------------------------------------
  std::vector<float> out(kT * kHeads * kDv), slse(kT * kHeads);
  for (auto* a : {&aq, &ak, &aw}) a->lr = 3e-3;
  for (int step = 0; step < sparse_steps; ++step) {
    const Batch b(world, gen);
    ix.forward(b, qi, ki, w);
    const std::vector<int32_t> idx = indexer_topk(b, qi, ki, w);
    dsa::SparseMlaFwdParams f;  // the teacher's lse over S_t (SPEC D8)
    f.q = make_view(b.q.data(), DType::kF32, {kT, kHeads, kD});
    f.kv = make_view(b.kv.data(), DType::kF32, {kT, kD});
    f.indices = make_view(idx.data(), DType::kI32, {kT, kTopK});
    f.out = make_view(out.data(), DType::kF32, {kT, kHeads, kDv});
    f.lse = make_view(slse.data(), DType::kF32, {kT, kHeads});
    f.sm_scale = world.tau;
    check(dsa::run(f), "sparse_mla_fwd");
    float loss = 0;
    dsa::IndexerLossSparseParams p;
    p.q = f.q;
    p.kv = f.kv;
    p.lse = f.lse;
    p.sm_scale = world.tau;
    p.indices = f.indices;
    p.q_idx = make_view(qi.data(), DType::kF32, {kT, kHidx, kDidx});
    p.k_idx = make_view(ki.data(), DType::kF32, {kT, kDidx});
    p.weights = make_view(w.data(), DType::kF32, {kT, kHidx});
    p.reduction = dsa::LossReduction::kMean;
    p.loss = make_view(&loss, DType::kF32, {1});
    p.dq_idx = make_view(dq.data(), DType::kF32, {kT, kHidx, kDidx});
    p.dk_idx = make_view(dk.data(), DType::kF32, {kT, kDidx});
    p.dweights = make_view(dw.data(), DType::kF32, {kT, kHidx});
    check(dsa::run(p), "indexer_loss_sparse");
    ix.backward(b, dq, dk, dw, gq, gk, gw);
    aq.step(ix.wq, gq);
    ak.step(ix.wk, gk);
    aw.step(ix.ww, gw);
    sparse_losses.push_back(loss);
    report("sparse", step, loss, step == 0 || step % 10 == 0 || step == sparse_steps - 1);
  }
  double r_sparse, base_sparse;
  eval_recall(&r_sparse, &base_sparse);

  const double first_dense = mean_of(dense_losses, true), last_dense = mean_of(dense_losses, false);
  const double first_sparse = mean_of(sparse_losses, true), last_sparse = mean_of(sparse_losses, false);
  std::printf("(KL: mean of the first / last 5 steps)\n");
  std::printf("dense stage:  KL %.4f -> %.4f, recall@%d %.3f -> %.3f (random %.3f)\n", first_dense, last_dense,
              kTopK, r0, r_dense, base_dense);
  std::printf("sparse stage: KL %.4f -> %.4f, recall@%d %.3f -> %.3f\n", first_sparse, last_sparse, kTopK,
              r_dense, r_sparse);
  bool ok = true;
  auto expect = [&](bool c, const char* what) {
    if (!c) std::printf("FAILED: %s\n", what);
    ok = ok && c;
  };
  expect(last_dense < 0.5 * first_dense, "dense KL fell by at least half");
  expect(r_dense >= kRecallThreshold, "dense-stage recall >= threshold (0.6)");
  expect(r_dense >= 3 * base_dense, "dense-stage recall >= 3x random selection");
  expect(r_sparse >= kRecallThreshold, "sparse-stage recall stays >= threshold (0.6)");
  expect(sparse_steps == 0 || last_sparse < first_sparse, "sparse KL fell");
  std::printf("%s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
