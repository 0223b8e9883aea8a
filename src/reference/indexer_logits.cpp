// CPU reference of OP-IDXLOGITS prefill (SPEC §4.2 step 7, §4.3, §4.6, §12.3):
//   logits[t, s] = σ_k[s] · Σ_j w[t, j] · ReLU(q[t, j] · k[s])   for ks[t] ≤ s < ke[t].
// FP8 mode: q and k are e4m3 codes (q's scale is folded into w), dequantized to the accumulator
// type once; the dot products are accumulated in Acc, then ReLU, × w, the head sum in head
// order, and × σ_k last. Exact mode: bf16/f32 q and k, no σ_k.
//
// Work: blocks of kRowBlock query rows × tiles of kKeyTile keys; one Eigen GEMM per pair gives the
// (row, head) × key dot products. Block and tile boundaries depend only on the inputs (never on
// the thread count), and each block is computed by one thread, so the output is bitwise
// independent of DSA_NUM_THREADS.
// GCC 12 reports false -Wmaybe-uninitialized inside Eigen's AVX-512 GEMM kernels (-march=native).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Core>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {
namespace {

constexpr int64_t kRowBlock = 8;
constexpr int64_t kKeyTile = 256;

template <typename Acc>
using RowMat = Eigen::Matrix<Acc, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Status range_error(const char* fmt, long long t, long long a, long long b) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), fmt, t, a, t, b);
  return Status(StatusCode::kInvalidArgument, std::string("indexer_logits: ") + buf);
}

// Reads and checks every row's [ks, ke) before anything is written.
Status read_ranges(const IndexerLogitsParams& p, std::vector<int32_t>& ks, std::vector<int32_t>& ke) {
  const int64_t s_q = p.q.shape[0], s_kv = p.k.shape[0];
  ks.resize(s_q);
  ke.resize(s_q);
  for (int64_t t = 0; t < s_q; ++t) {
    ks[t] = at<int32_t>(p.ks, t);
    ke[t] = at<int32_t>(p.ke, t);
    if (ks[t] < 0)
      return range_error("ks[%lld] = %lld is negative (need 0 <= ks[%lld] <= ke <= s_kv = %lld)", t, ks[t], s_kv);
    if (ke[t] < ks[t])
      return range_error("ke[%lld] = %lld is less than ks[%lld] = %lld", t, ke[t], ks[t]);
    if (ke[t] > s_kv)
      return range_error("ke[%lld] = %lld exceeds s_kv (need ke[%lld] <= s_kv = %lld)", t, ke[t], s_kv);
  }
  return Status();
}

template <typename Acc>
void compute(const IndexerLogitsParams& p, const std::vector<int32_t>& ks, const std::vector<int32_t>& ke) {
  const int64_t s_q = p.q.shape[0], h = p.q.shape[1], d = p.q.shape[2], s_kv = p.k.shape[0];
  const bool fp8 = p.q.dtype == DType::kE4M3;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  // The keys any row uses, dequantized once.
  int64_t lo = s_kv, hi = 0;
  for (int64_t t = 0; t < s_q; ++t)
    if (ks[t] < ke[t]) {
      lo = std::min<int64_t>(lo, ks[t]);
      hi = std::max<int64_t>(hi, ke[t]);
    }
  const int64_t n_keys = std::max<int64_t>(0, hi - lo);
  RowMat<Acc> keys(n_keys, d);
  std::vector<Acc> sigma(fp8 ? n_keys : 0);
  parallel_for(n_keys, 256, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int64_t x = 0; x < d; ++x) keys(i, x) = static_cast<Acc>(load_float(p.k, offset(p.k, lo + i, x)));
      if (fp8) sigma[i] = static_cast<Acc>(at<float>(p.k_scale, lo + i));
    }
  });

  const int64_t blocks = (s_q + kRowBlock - 1) / kRowBlock;
  parallel_for(blocks, 1, [&](int64_t b_begin, int64_t b_end) {
    RowMat<Acc> q(kRowBlock * h, d), dots;
    std::vector<Acc> acc(kKeyTile);
    for (int64_t blk = b_begin; blk < b_end; ++blk) {
      const int64_t r0 = blk * kRowBlock, r1 = std::min(s_q, r0 + kRowBlock), nr = r1 - r0;
      int64_t blo = s_kv, bhi = 0;
      for (int64_t t = r0; t < r1; ++t) {
        if (p.clean_logits && s_kv > 0) {
          float* row = &at<float>(p.logits, t, 0);
          for (int64_t s = 0; s < ks[t]; ++s) row[s] = kNegInf;
          for (int64_t s = ke[t]; s < s_kv; ++s) row[s] = kNegInf;
        }
        if (ks[t] < ke[t]) {
          blo = std::min<int64_t>(blo, ks[t]);
          bhi = std::max<int64_t>(bhi, ke[t]);
        }
      }
      if (bhi <= blo) continue;
      for (int64_t t = r0; t < r1; ++t)
        for (int64_t j = 0; j < h; ++j)
          for (int64_t x = 0; x < d; ++x)
            q((t - r0) * h + j, x) = static_cast<Acc>(load_float(p.q, offset(p.q, t, j, x)));
      for (int64_t ts = blo / kKeyTile * kKeyTile; ts < bhi; ts += kKeyTile) {
        const int64_t c0 = std::max(ts, blo), c1 = std::min(ts + kKeyTile, bhi);
        bool used = false;
        for (int64_t t = r0; t < r1; ++t) used |= ks[t] < c1 && ke[t] > c0;
        if (!used) continue;
        dots.noalias() = q.topRows(nr * h) * keys.middleRows(c0 - lo, c1 - c0).transpose();
        for (int64_t t = r0; t < r1; ++t) {
          const int64_t a = std::max<int64_t>(ks[t], c0) - c0, e = std::min<int64_t>(ke[t], c1) - c0;
          if (a >= e) continue;
          std::fill(acc.begin() + a, acc.begin() + e, Acc(0));
          for (int64_t j = 0; j < h; ++j) {
            const Acc w = static_cast<Acc>(at<float>(p.weights, t, j));
            const Acc* dot = dots.row((t - r0) * h + j).data();
            for (int64_t c = a; c < e; ++c) {
              const Acc relu = dot[c] < Acc(0) ? Acc(0) : dot[c];  // NaN propagates
              acc[c] += w * relu;
            }
          }
          float* row = &at<float>(p.logits, t, c0);
          if (fp8) {
            const Acc* sg = sigma.data() + (c0 - lo);
            for (int64_t c = a; c < e; ++c) row[c] = static_cast<float>(acc[c] * sg[c]);
          } else {
            for (int64_t c = a; c < e; ++c) row[c] = static_cast<float>(acc[c]);
          }
        }
      }
    }
  });
}

}  // namespace

Status reference(const IndexerLogitsParams& p, Accum accum) {
  std::vector<int32_t> ks, ke;
  Status s = read_ranges(p, ks, ke);
  if (!s.ok()) return s;
  if (accum == Accum::kF64)
    compute<double>(p, ks, ke);
  else
    compute<float>(p, ks, ke);
  return Status();
}

}  // namespace dsa::detail
