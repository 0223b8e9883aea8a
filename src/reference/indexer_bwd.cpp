// CPU reference of OP-IDX-BWD, the indexer backward in exact mode (SPEC §8.4).
//
// Pass 1, one thread per query token t: gather the row's keys K [n, 128] and G values g [n]
// (dense: columns [ks, ke); sparse: the valid grad_indices slots, duplicates kept), then
//   Z = Q_t·Kᵀ [h, n],  dw = ReLU(Z)·g,  dZ = (g·w)·1[Z > 0],  dQ = dZ·K,
// then dw_raw = dw·2⁻³·fl32(128^-0.5), and dQ → scaled Hadamard (optional) → RoPE by −θ.
// dk, deterministic without atomics (results do not depend on the thread count):
//   sparse form: pass 1 also computes dK_t = dZᵀ·Q_t [n, 128]; a block of tokens' dK_t is then
//     scattered by key-row ranges, each row adding in (t, slot) order;
//   dense form: pass 2 over key blocks recomputes z against the queries whose [ks, ke) covers the
//     block and adds dZᵀ·Q_t in t order.
// Then the same transforms with the key's position.
// Transforms-only form (dq_post, dk_post, dw_post given): no pass over G; every token row and
// every key row goes through the same back-transform code (emit_token, emit_key) as above.
#include <Eigen/Core>
#include <algorithm>
#include <string>
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

constexpr int kDim = kIndexerDim;        // 128
constexpr int kHalf = kIndexerRopeDim / 2;  // 32 rotation pairs (i, i + 32) on dims [0, 64)

// The transpose of the forward's q/k transform, applied to one 128-d gradient row in place:
// scaled Hadamard (symmetric: H/√128 with the same fp32 scale as the forward), then RoPE by −θ.
template <typename Acc>
void transform_back(Acc* g, bool hadamard, const TensorView& cos_t, const TensorView& sin_t, int64_t pos) {
  if (hadamard) {
    for (int h = 1; h < kDim; h *= 2)
      for (int i = 0; i < kDim; i += 2 * h)
        for (int j = i; j < i + h; ++j) {
          const Acc u = g[j], w = g[j + h];
          g[j] = u + w;
          g[j + h] = u - w;
        }
    const Acc scale = static_cast<Acc>(kIndexerInvSqrtDim);
    for (int i = 0; i < kDim; ++i) g[i] = g[i] * scale;
  }
  // Forward: ya = a·c − b·s, yb = a·s + b·c. Backward (Rᵀ): da = ya·c + yb·s, db = yb·c − ya·s.
  for (int i = 0; i < kHalf; ++i) {
    const Acc c = static_cast<Acc>(at<float>(cos_t, pos, i));
    const Acc s = static_cast<Acc>(at<float>(sin_t, pos, i));
    const Acc ya = g[i], yb = g[i + kHalf];
    const Acc ac = ya * c, bs = yb * s, as = ya * s, bc = yb * c;
    g[i] = ac + bs;
    g[i + kHalf] = bc - as;
  }
}

// The back-transforms, shared by both forms: token t's post-transform gradients dw [h] and
// dq [h, 128] (row-major) → dw_raw = dw·2⁻³·fl32(128^-0.5) and dq_raw = transform_back(dq).
template <typename Acc>
void emit_token(const IndexerBwdParams& p, int64_t t, int64_t h, const Acc* dw, const Acc* dq) {
  const Acc fold = static_cast<Acc>(0.125f) * static_cast<Acc>(kIndexerInvSqrtDim);  // exact product
  const int64_t pos = at<int32_t>(p.q_positions, t);
  Acc row[kDim];
  for (int64_t j = 0; j < h; ++j) {
    store_float(p.dw_raw, offset(p.dw_raw, t, j), static_cast<float>(dw[j] * fold));
    for (int d = 0; d < kDim; ++d) row[d] = dq[j * kDim + d];
    transform_back(row, p.hadamard, p.rope_cos, p.rope_sin, pos);
    for (int d = 0; d < kDim; ++d) store_float(p.dq_raw, offset(p.dq_raw, t, j, d), static_cast<float>(row[d]));
  }
}

// Key row s's post-transform gradient dk [128] → dk_raw = transform_back(dk).
template <typename Acc>
void emit_key(const IndexerBwdParams& p, int64_t s, const Acc* dk) {
  Acc row[kDim];
  for (int d = 0; d < kDim; ++d) row[d] = dk[d];
  transform_back(row, p.hadamard, p.rope_cos, p.rope_sin, at<int32_t>(p.k_positions, s));
  for (int d = 0; d < kDim; ++d) store_float(p.dk_raw, offset(p.dk_raw, s, d), static_cast<float>(row[d]));
}

// Transforms-only form: the given post-transform gradients go straight to the back-transforms.
template <typename Acc>
void transforms_only(const IndexerBwdParams& p) {
  const int64_t s_q = p.dq_post.shape[0], h = p.dq_post.shape[1], s_kv = p.dk_post.shape[0];
  parallel_for(s_q, 1, [&](int64_t t0, int64_t t1) {
    std::vector<Acc> dq(static_cast<size_t>(h * kDim)), dw(static_cast<size_t>(h));
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t j = 0; j < h; ++j) {
        dw[j] = static_cast<Acc>(at<float>(p.dw_post, t, j));
        for (int d = 0; d < kDim; ++d) dq[j * kDim + d] = static_cast<Acc>(at<float>(p.dq_post, t, j, d));
      }
      emit_token(p, t, h, dw.data(), dq.data());
    }
  });
  parallel_for(s_kv, 64, [&](int64_t s0, int64_t s1) {
    Acc dk[kDim];
    for (int64_t s = s0; s < s1; ++s) {
      for (int d = 0; d < kDim; ++d) dk[d] = static_cast<Acc>(at<float>(p.dk_post, s, d));
      emit_key(p, s, dk);
    }
  });
}

std::string range_error(const char* what, int64_t row, int64_t v, const char* rule) {
  return "indexer_bwd: " + std::string(what) + "[" + std::to_string(row) + "] = " + std::to_string(v) + " " + rule;
}

template <typename Acc>
Status bwd(const IndexerBwdParams& p) {
  const bool post = p.dq_post.present();  // the transforms-only form (validated: all three)
  const int64_t s_q = post ? p.dq_post.shape[0] : p.q.shape[0];
  const int64_t s_kv = post ? p.dk_post.shape[0] : p.k.shape[0];
  const int64_t max_pos = p.rope_cos.shape[0];
  const bool sparse = p.grad_indices.present();
  const int64_t k_sel = sparse ? p.grad_indices.shape[1] : 0;

  // Values first: nothing is written when a value is rejected.
  for (int64_t t = 0; t < s_q; ++t) {
    const int32_t pos = at<int32_t>(p.q_positions, t);
    if (pos < 0 || pos >= max_pos)
      return Status(StatusCode::kInvalidArgument,
                    range_error("q_positions", t, pos, ("is out of range [0, max_pos = " + std::to_string(max_pos) + ")").c_str()));
    if (sparse || post) continue;
    const int64_t ks = p.ks.present() ? at<int32_t>(p.ks, t) : 0;
    const int64_t ke = p.ke.present() ? at<int32_t>(p.ke, t) : s_kv;
    if (ks < 0 || ks > s_kv)
      return Status(StatusCode::kInvalidArgument,
                    range_error("ks", t, ks, ("is out of range [0, s_kv = " + std::to_string(s_kv) + "]").c_str()));
    if (ke < ks || ke > s_kv)
      return Status(StatusCode::kInvalidArgument,
                    range_error("ke", t, ke, ("is out of range [ks = " + std::to_string(ks) + ", s_kv = " +
                                              std::to_string(s_kv) + "]").c_str()));
  }
  for (int64_t s = 0; s < s_kv; ++s) {
    const int32_t pos = at<int32_t>(p.k_positions, s);
    if (pos < 0 || pos >= max_pos)
      return Status(StatusCode::kInvalidArgument,
                    range_error("k_positions", s, pos, ("is out of range [0, max_pos = " + std::to_string(max_pos) + ")").c_str()));
  }
  if (post) {
    transforms_only<Acc>(p);
    return Status();
  }
  const int64_t h = p.q.shape[1];
  auto row_range = [&](int64_t t, int64_t* ks, int64_t* ke) {
    *ks = p.ks.present() ? at<int32_t>(p.ks, t) : 0;
    *ke = p.ke.present() ? at<int32_t>(p.ke, t) : s_kv;
  };
  auto load_q = [&](int64_t t, Mat<Acc>& Q) {
    for (int64_t j = 0; j < h; ++j)
      for (int d = 0; d < kDim; ++d) Q(j, d) = load_float(p.q, offset(p.q, t, j, d));
  };

  // ---- pass 1: dw_raw and dq_raw, one token per thread ---------------------------------------
  // Sparse form: each token also leaves its dk contributions dZᵀ·Q_t [n, 128] (a GEMM) in a block
  // buffer, which is then scattered deterministically: each thread owns a range of key rows and
  // adds in (t, slot) order. Dense form: dk comes from the transposed pass 2 below.
  const int64_t per_token = std::max<int64_t>(1, k_sel * kDim * static_cast<int64_t>(sizeof(Acc)));
  // About 64 MiB of scratch, at least one token per thread; the results do not depend on it.
  const int64_t block =
      sparse ? std::max<int64_t>(1, std::min<int64_t>(s_q, std::max<int64_t>(num_threads(),
                                                                        std::min<int64_t>(64, (int64_t{64} << 20) / per_token))))
             : std::max<int64_t>(1, s_q);
  std::vector<Acc> dk_acc, stash;
  std::vector<int32_t> stash_cols;
  std::vector<int64_t> stash_n;
  if (sparse) {
    dk_acc.assign(static_cast<size_t>(s_kv * kDim), Acc(0));
    stash.resize(static_cast<size_t>(block * k_sel * kDim));
    stash_cols.resize(static_cast<size_t>(block * k_sel));
    stash_n.resize(static_cast<size_t>(block));
  }
  for (int64_t tb = 0; tb < s_q; tb += block) {
    const int64_t nb = std::min(block, s_q - tb);
    parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
      Mat<Acc> Q(h, kDim), K, Z, dQ;
      Vec<Acc> g, w(h), dw;
      std::vector<int64_t> cols;
      std::vector<Acc> gv;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t t = tb + b;
        cols.clear();
        gv.clear();
        if (sparse) {
          for (int64_t i = 0; i < k_sel; ++i) {
            const int32_t c = at<int32_t>(p.grad_indices, t, i);
            if (c < 0 || c >= s_kv) continue;
            cols.push_back(c);
            gv.push_back(static_cast<Acc>(at<float>(p.grad, t, i)));
          }
        } else {
          int64_t ks, ke;
          row_range(t, &ks, &ke);
          for (int64_t c = ks; c < ke; ++c) {
            cols.push_back(c);
            gv.push_back(static_cast<Acc>(at<float>(p.grad, t, c)));
          }
        }
        const int64_t n = static_cast<int64_t>(cols.size());
        load_q(t, Q);
        for (int64_t j = 0; j < h; ++j) w(j) = at<float>(p.weights, t, j);
        K.resize(n, kDim);
        g.resize(n);
        for (int64_t i = 0; i < n; ++i) {
          g(i) = gv[i];
          for (int d = 0; d < kDim; ++d) K(i, d) = load_float(p.k, offset(p.k, cols[i], d));
        }
        Z.noalias() = Q * K.transpose();  // [h, n]
        dw.setZero(h);
        for (int64_t j = 0; j < h; ++j) {
          Acc sum = 0;
          for (int64_t i = 0; i < n; ++i) {
            const Acc z = Z(j, i);
            sum += g(i) * (z > 0 ? z : Acc(0));
            Z(j, i) = z > 0 ? g(i) * w(j) : Acc(0);  // Z now holds dZ (ReLU′(0) = 0)
          }
          dw(j) = sum;
        }
        dQ.noalias() = Z * K;  // [h, 128]
        if (sparse) {
          Eigen::Map<Mat<Acc>> dK(stash.data() + b * k_sel * kDim, n, kDim);
          dK.noalias() = Z.transpose() * Q;
          for (int64_t i = 0; i < n; ++i) stash_cols[b * k_sel + i] = static_cast<int32_t>(cols[i]);
          stash_n[b] = n;
        }
        emit_token(p, t, h, dw.data(), dQ.data());  // dQ is row-major [h, 128]
      }
    });
    if (!sparse) continue;
    parallel_for(s_kv, 64, [&](int64_t r0, int64_t r1) {
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t i = 0; i < stash_n[b]; ++i) {
          const int64_t s = stash_cols[b * k_sel + i];
          if (s < r0 || s >= r1) continue;
          const Acc* src = stash.data() + (b * k_sel + i) * kDim;
          Acc* dst = dk_acc.data() + s * kDim;
          for (int d = 0; d < kDim; ++d) dst[d] += src[d];
        }
    });
  }

  // ---- pass 2: dk_raw, one range of key rows per thread ---------------------------------------
  // Dense form: each key block recomputes z against the queries whose range covers it, in t
  // order (no atomics; the sum order is fixed by the problem, not by the threads).
  constexpr int64_t kKeyBlock = 64;  // fixed: results do not depend on the thread count
  const int64_t key_blocks = (s_kv + kKeyBlock - 1) / kKeyBlock;
  parallel_for(key_blocks, 1, [&](int64_t kb0, int64_t kb1) {
    Mat<Acc> Q(h, kDim), K, Z, dK(kKeyBlock, kDim);
    Vec<Acc> w(h);
    for (int64_t kb = kb0; kb < kb1; ++kb) {
      const int64_t s0 = kb * kKeyBlock, s1 = std::min(s_kv, s0 + kKeyBlock), m = s1 - s0;
      if (sparse) {
        for (int64_t s = s0; s < s1; ++s)
          for (int d = 0; d < kDim; ++d) dK(s - s0, d) = dk_acc[s * kDim + d];
      } else {
        dK.setZero();
        K.resize(m, kDim);
        for (int64_t s = s0; s < s1; ++s)
          for (int d = 0; d < kDim; ++d) K(s - s0, d) = load_float(p.k, offset(p.k, s, d));
        for (int64_t t = 0; t < s_q; ++t) {
          int64_t ks, ke;
          row_range(t, &ks, &ke);
          const int64_t lo = std::max(ks, s0), hi = std::min(ke, s1);
          if (lo >= hi) continue;
          load_q(t, Q);
          for (int64_t j = 0; j < h; ++j) w(j) = at<float>(p.weights, t, j);
          Z.noalias() = Q * K.middleRows(lo - s0, hi - lo).transpose();  // [h, hi − lo]
          for (int64_t j = 0; j < h; ++j)
            for (int64_t i = 0; i < hi - lo; ++i) {
              const Acc g = at<float>(p.grad, t, lo + i);
              Z(j, i) = Z(j, i) > 0 ? g * w(j) : Acc(0);
            }
          dK.middleRows(lo - s0, hi - lo).noalias() += Z.transpose() * Q;
        }
      }
      for (int64_t s = s0; s < s1; ++s) emit_key(p, s, dK.data() + (s - s0) * kDim);  // row-major
    }
  });
  return Status();
}

}  // namespace

Status reference(const IndexerBwdParams& p, Accum accum) {
  return accum == Accum::kF64 ? bwd<double>(p) : bwd<float>(p);
}

}  // namespace dsa::detail
