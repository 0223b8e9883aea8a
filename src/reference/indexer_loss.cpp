// CPU reference of the indexer KL losses, OP-LOSS-DENSE and OP-LOSS-SPARSE (SPEC §8.1–8.4),
// exact mode: fp32 math (fp64 with Accum::kF64) on bf16/f32 storage.
//
// Structure (SPEC §8.2). Query rows are processed in blocks of kRowBlock rows; keys of a row in
// tiles of kKeyTile keys. For every row of a block (threads over rows):
//   pass 1: per tile, the teacher p (a [h_q, tile] score tile at a time, never [h, S, S]) and the
//           indexer logits I; then LSE_I and the row mass m_t;
//   pass 2: per tile, KL_t, G = κ·(π·m_t − p) (SPEC §8.4), dw and dq.
// The block keeps G of its rows ([kRowBlock, |V_t|]: memory O(S·(h + chunk))). Then dk is
// accumulated by threads over key tiles: each key's row is owned by one thread and receives the
// block's contributions in (row, slot) order, blocks in order — so every result is bitwise
// deterministic and independent of the thread count.
#include <Eigen/Dense>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

constexpr int64_t kKeyTile = 64;
constexpr int64_t kRowBlock = 64;

// One loss problem, independent of which op describes its valid sets.
struct LossProblem {
  const char* op;
  const TensorView *q, *kv, *lse, *q_idx, *k_idx, *weights, *row_mask;
  float sm_scale;
  LseBase lse_base;
  LossReduction reduction;
  float coefficient;
  const TensorView *loss, *row_kl, *dq_idx, *dk_idx, *dweights;
  // Appends the keys of row t (V_t, as a list) to `out` (cleared first).
  std::function<void(int64_t, std::vector<int32_t>&)> keys;
};

void store(const TensorView& t, int64_t off, double v) {
  if (t.dtype == DType::kF64)
    static_cast<double*>(t.data)[off] = v;
  else
    static_cast<float*>(t.data)[off] = static_cast<float>(v);
}

bool row_valid(const TensorView& mask, int64_t t) {
  if (!mask.present()) return true;
  if (mask.dtype == DType::kU8) return at<uint8_t>(mask, t) != 0;
  return at<int32_t>(mask, t) != 0;
}

template <typename Acc>
Status run_loss(const LossProblem& P) {
  using Mat = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Vec = Eigen::Matrix<Acc, Eigen::Dynamic, 1>;
  const int64_t s_q = P.q->shape[0], h_q = P.q->shape[1], d_qk = P.q->shape[2];
  const int64_t s_kv = P.kv->shape[0];
  const int64_t h_idx = P.q_idx->shape[1], d_idx = P.q_idx->shape[2];

  // Keys in the accumulator type, once (O(S·d)).
  Mat kv(s_kv, d_qk), kidx(s_kv, d_idx);
  parallel_for(s_kv, 256, [&](int64_t b, int64_t e) {
    for (int64_t s = b; s < e; ++s) {
      for (int64_t d = 0; d < d_qk; ++d) kv(s, d) = load_float(*P.kv, offset(*P.kv, s, d));
      for (int64_t d = 0; d < d_idx; ++d) kidx(s, d) = load_float(*P.k_idx, offset(*P.k_idx, s, d));
    }
  });

  int64_t n_valid_rows = 0;
  for (int64_t t = 0; t < s_q; ++t) n_valid_rows += row_valid(*P.row_mask, t) ? 1 : 0;
  const Acc coef = static_cast<Acc>(P.coefficient);
  const Acc kappa = P.reduction == LossReduction::kSum
                        ? coef
                        : coef / static_cast<Acc>(std::max<int64_t>(1, n_valid_rows));
  const Acc tau = static_cast<Acc>(P.sm_scale);
  const Acc lse_mul = P.lse_base == LseBase::kBase2 ? static_cast<Acc>(0.69314718055994530942) : Acc(1);
  const bool want_dk = P.dk_idx->present(), want_dq = P.dq_idx->present(),
             want_dw = P.dweights->present();

  std::vector<Acc> kl(s_q, Acc(0));
  Mat dk = Mat::Zero(want_dk ? s_kv : 0, d_idx);

  // Per block: each row's key list, G, and the indexer q / weights in Acc (for the dk pass).
  struct RowState {
    std::vector<int32_t> keys;
    std::vector<Acc> g;  // p, then G
    std::vector<Acc> logit;
    Mat qi;
    Vec w;
    bool active = false;
  };
  std::vector<RowState> rows(static_cast<size_t>(std::min(kRowBlock, std::max<int64_t>(s_q, 1))));

  // Gathers the key tile [i0, i0 + m) of `keys` from `src` (a contiguous run maps in place).
  auto tile_of = [](const Mat& src, const std::vector<int32_t>& keys, int64_t i0, int64_t m, Mat& buf) {
    buf.resize(m, src.cols());
    for (int64_t i = 0; i < m; ++i) buf.row(i) = src.row(keys[i0 + i]);
  };

  for (int64_t t0 = 0; t0 < s_q; t0 += kRowBlock) {
    const int64_t nr = std::min(kRowBlock, s_q - t0);
    // ---- rows of the block: passes 1 and 2 ------------------------------------------------------
    parallel_for(nr, 1, [&](int64_t rb, int64_t re) {
      Mat qt(h_q, d_qk), kvt, kt, sc, z;
      Vec lse(h_q), dq_row(0);
      Mat dq;
      Vec dw;
      for (int64_t r = rb; r < re; ++r) {
        const int64_t t = t0 + r;
        RowState& R = rows[r];
        R.active = row_valid(*P.row_mask, t);
        R.keys.clear();
        if (R.active) P.keys(t, R.keys);
        const int64_t n = R.active ? static_cast<int64_t>(R.keys.size()) : 0;
        R.qi.resize(h_idx, d_idx);
        R.w.resize(h_idx);
        for (int64_t j = 0; j < h_idx; ++j) {
          R.w(j) = at<float>(*P.weights, t, j);
          for (int64_t d = 0; d < d_idx; ++d) R.qi(j, d) = load_float(*P.q_idx, offset(*P.q_idx, t, j, d));
        }
        dq = Mat::Zero(h_idx, d_idx);
        dw = Vec::Zero(h_idx);
        R.g.assign(n, Acc(0));
        R.logit.assign(n, Acc(0));
        if (n > 0) {
          for (int64_t h = 0; h < h_q; ++h) {
            lse(h) = static_cast<Acc>(at<float>(*P.lse, t, h)) * lse_mul;
            for (int64_t d = 0; d < d_qk; ++d) qt(h, d) = load_float(*P.q, offset(*P.q, t, h, d));
          }
          // Pass 1: teacher p and indexer logits per tile, then LSE_I and m_t.
          const Acc inv_h = Acc(1) / static_cast<Acc>(h_q);
          for (int64_t i0 = 0; i0 < n; i0 += kKeyTile) {
            const int64_t m = std::min(kKeyTile, n - i0);
            tile_of(kv, R.keys, i0, m, kvt);
            sc.noalias() = qt * kvt.transpose();  // [h_q, m]
            for (int64_t i = 0; i < m; ++i)
              R.g[i0 + i] = ((tau * sc.col(i).array()) - lse.array()).exp().sum() * inv_h;
            tile_of(kidx, R.keys, i0, m, kt);
            z.noalias() = R.qi * kt.transpose();  // [h_idx, m]
            for (int64_t i = 0; i < m; ++i)
              R.logit[i0 + i] = (z.col(i).array().max(Acc(0)) * R.w.array()).sum();
          }
          Acc mx = -std::numeric_limits<Acc>::infinity();
          for (int64_t i = 0; i < n; ++i) mx = std::max(mx, R.logit[i]);
          Acc se = 0;
          for (int64_t i = 0; i < n; ++i) se += std::exp(R.logit[i] - mx);
          const Acc lse_i = mx + std::log(se);
          Acc mass = 0;
          for (int64_t i = 0; i < n; ++i) mass += R.g[i];
          // Pass 2: KL, G = κ·(π·m_t − p), dw, dq per tile.
          Acc klt = 0;
          for (int64_t i0 = 0; i0 < n; i0 += kKeyTile) {
            const int64_t m = std::min(kKeyTile, n - i0);
            for (int64_t i = i0; i < i0 + m; ++i) {
              const Acc p = R.g[i], log_pi = R.logit[i] - lse_i;
              if (p != Acc(0)) klt += p * (std::log(p) - log_pi);
              R.g[i] = kappa * (std::exp(log_pi) * mass - p);
            }
            if (!want_dq && !want_dw) continue;
            tile_of(kidx, R.keys, i0, m, kt);
            z.noalias() = R.qi * kt.transpose();
            for (int64_t i = 0; i < m; ++i) {
              const Acc g = R.g[i0 + i];
              for (int64_t j = 0; j < h_idx; ++j) {
                const Acc zz = z(j, i);
                dw(j) += zz > Acc(0) ? g * zz : Acc(0);
                z(j, i) = zz > Acc(0) ? g * R.w(j) : Acc(0);  // dz; ReLU'(0) = 0
              }
            }
            if (want_dq) dq.noalias() += z * kt;
          }
          kl[t] = klt;
        }
        if (want_dq)
          for (int64_t j = 0; j < h_idx; ++j)
            for (int64_t d = 0; d < d_idx; ++d) store(*P.dq_idx, offset(*P.dq_idx, t, j, d), dq(j, d));
        if (want_dw)
          for (int64_t j = 0; j < h_idx; ++j) store(*P.dweights, offset(*P.dweights, t, j), dw(j));
      }
    });
    if (!want_dk) continue;
    // ---- dk of the block: threads over key tiles, contributions in (row, slot) order -------------
    const int64_t n_tiles = (s_kv + kKeyTile - 1) / kKeyTile;
    struct Entry {
      int32_t r, i;
    };
    std::vector<int64_t> start(n_tiles + 1, 0);
    for (int64_t r = 0; r < nr; ++r)
      for (int32_t s : rows[r].keys) ++start[s / kKeyTile + 1];
    for (int64_t k = 0; k < n_tiles; ++k) start[k + 1] += start[k];
    std::vector<Entry> entries(start[n_tiles]);
    {
      std::vector<int64_t> fill(start.begin(), start.end() - 1);
      for (int64_t r = 0; r < nr; ++r)
        for (size_t i = 0; i < rows[r].keys.size(); ++i)
          entries[fill[rows[r].keys[i] / kKeyTile]++] = Entry{static_cast<int32_t>(r), static_cast<int32_t>(i)};
    }
    parallel_for(n_tiles, 1, [&](int64_t kb, int64_t ke) {
      Mat kt, z, dkt;
      std::vector<int32_t> gk;
      std::vector<Acc> gg;
      for (int64_t k = kb; k < ke; ++k) {
        for (int64_t e = start[k]; e < start[k + 1];) {
          const int32_t r = entries[e].r;
          gk.clear();
          gg.clear();
          for (; e < start[k + 1] && entries[e].r == r; ++e) {
            const Acc g = rows[r].g[entries[e].i];
            if (g == Acc(0)) continue;
            gk.push_back(rows[r].keys[entries[e].i]);
            gg.push_back(g);
          }
          const int64_t m = static_cast<int64_t>(gk.size());
          if (m == 0) continue;
          const RowState& R = rows[r];
          tile_of(kidx, gk, 0, m, kt);
          z.noalias() = R.qi * kt.transpose();  // [h_idx, m]
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < h_idx; ++j) z(j, i) = z(j, i) > Acc(0) ? gg[i] * R.w(j) : Acc(0);
          dkt.noalias() = z.transpose() * R.qi;  // [m, d_idx]
          for (int64_t i = 0; i < m; ++i) dk.row(gk[i]) += dkt.row(i);
        }
      }
    });
  }

  if (want_dk)
    parallel_for(s_kv, 256, [&](int64_t b, int64_t e) {
      for (int64_t s = b; s < e; ++s)
        for (int64_t d = 0; d < d_idx; ++d) store(*P.dk_idx, offset(*P.dk_idx, s, d), dk(s, d));
    });
  Acc total = 0;
  for (int64_t t = 0; t < s_q; ++t) total += kl[t];
  store(*P.loss, offset(*P.loss, 0), kappa * total);
  if (P.row_kl->present())
    for (int64_t t = 0; t < s_q; ++t) store(*P.row_kl, offset(*P.row_kl, t), kl[t]);
  return Status();
}

Status run_loss(const LossProblem& P, Accum accum) {
  return accum == Accum::kF64 ? run_loss<double>(P) : run_loss<float>(P);
}

template <class Params>
LossProblem common_problem(const char* op, const Params& p) {
  LossProblem P;
  P.op = op;
  P.q = &p.q;
  P.kv = &p.kv;
  P.lse = &p.lse;
  P.q_idx = &p.q_idx;
  P.k_idx = &p.k_idx;
  P.weights = &p.weights;
  P.row_mask = &p.row_mask;
  P.sm_scale = p.sm_scale;
  P.lse_base = p.lse_base;
  P.reduction = p.reduction;
  P.coefficient = p.coefficient;
  P.loss = &p.loss;
  P.row_kl = &p.row_kl;
  P.dq_idx = &p.dq_idx;
  P.dk_idx = &p.dk_idx;
  P.dweights = &p.dweights;
  return P;
}

}  // namespace

Status reference(const IndexerLossDenseParams& p, Accum accum) {
  const int64_t s_q = p.q.shape[0], s_kv = p.kv.shape[0];
  for (int64_t t = 0; t < s_q; ++t) {
    const int32_t ks = at<int32_t>(p.ks, t), ke = at<int32_t>(p.ke, t);
    if (ks < 0 || ks > s_kv)
      return Status(StatusCode::kInvalidArgument,
                    "indexer_loss_dense: ks[" + std::to_string(t) + "] = " + std::to_string(ks) +
                        " is out of range [0, s_kv = " + std::to_string(s_kv) + "]");
    if (ke < ks || ke > s_kv)
      return Status(StatusCode::kInvalidArgument,
                    "indexer_loss_dense: ke[" + std::to_string(t) + "] = " + std::to_string(ke) +
                        " is out of range [ks[" + std::to_string(t) + "] = " + std::to_string(ks) +
                        ", s_kv = " + std::to_string(s_kv) + "]");
  }
  LossProblem P = common_problem("indexer_loss_dense", p);
  P.keys = [&p](int64_t t, std::vector<int32_t>& out) {
    const int32_t ks = at<int32_t>(p.ks, t), ke = at<int32_t>(p.ke, t);
    for (int32_t s = ks; s < ke; ++s) out.push_back(s);
  };
  return run_loss(P, accum);
}

Status reference(const IndexerLossSparseParams& p, Accum accum) {
  const int64_t s_q = p.q.shape[0], s_kv = p.kv.shape[0], topk = p.indices.shape[1];
  if (p.topk_length.present())
    for (int64_t t = 0; t < s_q; ++t) {
      const int32_t n = at<int32_t>(p.topk_length, t);
      if (n < 0 || n > topk)
        return Status(StatusCode::kInvalidArgument,
                      "indexer_loss_sparse: topk_length[" + std::to_string(t) + "] = " +
                          std::to_string(n) + " is out of range [0, topk = " + std::to_string(topk) + "]");
    }
  LossProblem P = common_problem("indexer_loss_sparse", p);
  P.keys = [&p, s_kv, topk](int64_t t, std::vector<int32_t>& out) {
    const int64_t n = p.topk_length.present() ? at<int32_t>(p.topk_length, t) : topk;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t s = at<int32_t>(p.indices, t, i);
      if (s >= 0 && s < s_kv) out.push_back(s);  // −1 and out-of-range slots are invalid
    }
  };
  return run_loss(P, accum);
}

}  // namespace dsa::detail
