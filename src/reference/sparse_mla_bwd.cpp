// CPU reference of OP-SMLA-BWD, the sparse MLA backward in MQA mode (SPEC §6.5).
//
// Per query token t (one thread owns a token): gather the n valid KV rows K [n, d_qk] of the row
// (index-list semantics: a duplicate index is gathered twice), then with Eigen GEMMs
//   S = Q·Kᵀ [h_q, n],  P = exp(τ·S − lse),  dP = dO·Vᵀ,  dZ = P ∘ (dP − D),
//   dQ = τ·dZ·K,        dK_t = τ·dZᵀ·Q  (+ Pᵀ·dO on the first d_v columns)   [n, d_qk].
// dq is written directly. The dK_t of a block of tokens are kept and then scattered into an fp32
// (fp64) accumulator of dkv: every accumulator row is owned by one thread and adds its
// contributions in (t, slot) order, so dkv is bitwise reproducible and independent of the thread
// count and of the block size. dkv is cast to its storage type once, at the end.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

template <typename Acc>
using Mat = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Acc>
using Vec = Eigen::Matrix<Acc, Eigen::Dynamic, 1>;

// Slot i of row t is valid iff i < n_t and 0 ≤ idx < s_kv (SPEC §6.2).
inline int64_t row_length(const SparseMlaBwdParams& p, int64_t t, int64_t topk) {
  return p.topk_length.present() ? std::min<int64_t>(at<int32_t>(p.topk_length, t), topk) : topk;
}

template <typename Acc>
Status bwd(const SparseMlaBwdParams& p) {
  const int64_t s_q = p.q.shape[0], h_q = p.q.shape[1], d_qk = p.q.shape[2];
  const int64_t s_kv = p.kv.shape[0], topk = p.indices.shape[1], d_v = p.out.shape[2];
  const Acc tau = static_cast<Acc>(p.sm_scale);
  const Acc lse_to_nat = p.lse_base == LseBase::kBase2 ? static_cast<Acc>(0.69314718055994530942) : Acc(1);

  // Values first: nothing is written when a value is rejected.
  for (int64_t t = 0; t < s_q; ++t) {
    if (p.topk_length.present()) {
      const int32_t n = at<int32_t>(p.topk_length, t);
      if (n < 0 || n > topk)
        return Status(StatusCode::kInvalidArgument,
                      "sparse_mla_bwd: topk_length[" + std::to_string(t) + "] = " + std::to_string(n) +
                          " is out of range [0, topk = " + std::to_string(topk) + "]");
    }
    bool any_valid = false;
    for (int64_t i = 0, n = row_length(p, t, topk); i < n && !any_valid; ++i) {
      const int32_t idx = at<int32_t>(p.indices, t, i);
      any_valid = idx >= 0 && idx < s_kv;
    }
    if (!any_valid) continue;  // the row's lse is never used (dq = 0)
    for (int64_t h = 0; h < h_q; ++h) {
      const float l = at<float>(p.lse, t, h);
      if (std::isnan(l) || l == -std::numeric_limits<float>::infinity())
        return Status(StatusCode::kInvalidArgument,
                      "sparse_mla_bwd: lse[" + std::to_string(t) + "][" + std::to_string(h) + "] = " +
                          std::to_string(l) + " is not a log-sum-exp of a row with valid slots (NaN or −∞)");
    }
  }

  std::vector<Acc> acc(static_cast<size_t>(s_kv * d_qk), Acc(0));
  // Tokens per block: about 64 MiB of dK_t scratch, but at least one token per thread. The results
  // do not depend on the block size (dK_t is per token; the scatter order is global (t, slot)).
  const int64_t per_token = std::max<int64_t>(1, topk * d_qk * static_cast<int64_t>(sizeof(Acc)));
  const int64_t block = std::max<int64_t>(
      1, std::min<int64_t>(s_q, std::max<int64_t>(num_threads(), std::min<int64_t>(64, (int64_t{64} << 20) / per_token))));
  std::vector<Acc> dk_block(static_cast<size_t>(block * topk * d_qk));
  std::vector<int32_t> rows_block(static_cast<size_t>(block * topk));
  std::vector<int64_t> n_block(static_cast<size_t>(block));

  for (int64_t t0 = 0; t0 < s_q; t0 += block) {
    const int64_t nb = std::min(block, s_q - t0);
    parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
      Mat<Acc> Q(h_q, d_qk), O(h_q, d_v), dO(h_q, d_v), K, S, dP;
      Vec<Acc> lse(h_q), D(h_q);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t t = t0 + b;
        int32_t* rows = rows_block.data() + b * topk;
        int64_t n = 0;
        for (int64_t i = 0, len = row_length(p, t, topk); i < len; ++i) {
          const int32_t idx = at<int32_t>(p.indices, t, i);
          if (idx >= 0 && idx < s_kv) rows[n++] = idx;
        }
        n_block[b] = n;
        if (n == 0) {  // no valid slot: dq = 0
          for (int64_t h = 0; h < h_q; ++h)
            for (int64_t d = 0; d < d_qk; ++d) store_float(p.dq, offset(p.dq, t, h, d), 0.0f);
          continue;
        }
        for (int64_t h = 0; h < h_q; ++h) {
          for (int64_t d = 0; d < d_qk; ++d) Q(h, d) = load_float(p.q, offset(p.q, t, h, d));
          Acc dsum = 0;
          for (int64_t d = 0; d < d_v; ++d) {
            O(h, d) = load_float(p.out, offset(p.out, t, h, d));
            dO(h, d) = load_float(p.dout, offset(p.dout, t, h, d));
            dsum += O(h, d) * dO(h, d);
          }
          D(h) = dsum;
          lse(h) = static_cast<Acc>(at<float>(p.lse, t, h)) * lse_to_nat;
        }
        K.resize(n, d_qk);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t d = 0; d < d_qk; ++d) K(i, d) = load_float(p.kv, offset(p.kv, rows[i], d));
        S.noalias() = Q * K.transpose();    // [h_q, n]
        dP.noalias() = dO * K.leftCols(d_v).transpose();
        for (int64_t h = 0; h < h_q; ++h)
          for (int64_t i = 0; i < n; ++i) {
            const Acc z = tau * S(h, i);
            const Acc pr = std::exp(z - lse(h));  // 0 when lse = +∞
            S(h, i) = pr;                         // S now holds P
            dP(h, i) = pr * (dP(h, i) - D(h));    // dP now holds dZ
          }
        const Mat<Acc> dQ = tau * (dP * K);  // [h_q, d_qk]
        for (int64_t h = 0; h < h_q; ++h)
          for (int64_t d = 0; d < d_qk; ++d)
            store_float(p.dq, offset(p.dq, t, h, d), static_cast<float>(dQ(h, d)));
        Eigen::Map<Mat<Acc>> dK(dk_block.data() + b * topk * d_qk, n, d_qk);
        dK.noalias() = tau * (dP.transpose() * Q);
        dK.leftCols(d_v).noalias() += S.transpose() * dO;
      }
    });
    // Deterministic scatter: each thread owns a range of dkv rows and visits (t, slot) in order.
    parallel_for(s_kv, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < nb; ++b) {
        const int32_t* rows = rows_block.data() + b * topk;
        for (int64_t i = 0; i < n_block[b]; ++i) {
          const int64_t s = rows[i];
          if (s < r0 || s >= r1) continue;
          const Acc* src = dk_block.data() + (b * topk + i) * d_qk;
          Acc* dst = acc.data() + s * d_qk;
          for (int64_t d = 0; d < d_qk; ++d) dst[d] += src[d];
        }
      }
    });
  }
  parallel_for(s_kv, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t s = r0; s < r1; ++s)
      for (int64_t d = 0; d < d_qk; ++d)
        store_float(p.dkv, offset(p.dkv, s, d), static_cast<float>(acc[s * d_qk + d]));
  });
  return Status();
}

}  // namespace

Status reference(const SparseMlaBwdParams& p, Accum accum) {
  return accum == Accum::kF64 ? bwd<double>(p) : bwd<float>(p);
}

}  // namespace dsa::detail
