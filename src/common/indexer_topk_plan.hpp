// src/common/indexer_topk_plan.hpp — how the fused indexer → top-k splits its rows, shared by the
// CPU reference and the CUDA backend: the chunk size and the per-chunk sub-params of
// IndexerLogitsParams and TopKParams (row slices of every [s_q, ...] view).
#pragma once

#include <algorithm>
#include <cstdint>

#include "dsa/params.hpp"

namespace dsa::detail {

// Automatic chunks hold about this many bytes of fp32 logits: 512 rows at s_kv = 128K. Measured on
// the H200 (docs/performance.md): L2-sized 32 MiB chunks (64 rows) left both kernels under-filled
// (29.8 ms at 4096 × 128K against 21.8 ms unfused); 512-row chunks give the top-k its many-row
// kernel and the indexer full waves, at a bounded 256 MiB instead of the 2 GiB logits tensor.
inline constexpr int64_t kIndexerTopKChunkBytes = int64_t{256} << 20;

// Row stride (floats) of the chunk's logits scratch: s_kv rounded up to 4 floats, so each row
// starts 16-byte aligned.
inline int64_t indexer_topk_ld(int64_t s_kv) { return std::max<int64_t>(4, (s_kv + 3) / 4 * 4); }

// Rows per chunk: chunk_rows when given, else the largest count whose logits fit in
// kIndexerTopKChunkBytes (a multiple of 64 when that is ≥ 64), at least 1; never more than s_q.
inline int64_t indexer_topk_chunk_rows(const IndexerTopKParams& p) {
  const int64_t s_q = p.q.shape[0], s_kv = p.k.shape[0];
  int64_t rows = p.chunk_rows;
  if (rows <= 0) {
    rows = kIndexerTopKChunkBytes / (indexer_topk_ld(s_kv) * int64_t{4});
    if (rows >= 64) rows = rows / 64 * 64;
  }
  return std::max<int64_t>(1, std::min<int64_t>(rows, s_q));
}

// Rows [r0, r0 + n) of a view whose dim 0 is the row; an absent view stays absent.
inline TensorView indexer_topk_rows(const TensorView& v, int64_t r0, int64_t n) {
  if (!v.present()) return v;
  TensorView s = v;
  if (v.data != nullptr && n > 0)
    s.data = static_cast<char*>(v.data) + r0 * v.stride[0] * static_cast<int64_t>(dtype_size(v.dtype));
  s.shape[0] = n;
  return s;
}

// The logits half of rows [r0, r0 + n), writing into `logits` ([n, s_kv] f32).
inline IndexerLogitsParams indexer_topk_logits_part(const IndexerTopKParams& p, int64_t r0, int64_t n,
                                                    const TensorView& logits, bool clean) {
  IndexerLogitsParams l;
  l.q = indexer_topk_rows(p.q, r0, n);
  l.k = p.k;
  l.k_scale = p.k_scale;
  l.weights = indexer_topk_rows(p.weights, r0, n);
  l.ks = indexer_topk_rows(p.ks, r0, n);
  l.ke = indexer_topk_rows(p.ke, r0, n);
  l.logits = logits;
  l.clean_logits = clean;
  return l;
}

// The top-k half of rows [r0, r0 + n), reading `scores` (the chunk's logits).
inline TopKParams indexer_topk_select_part(const IndexerTopKParams& p, int64_t r0, int64_t n,
                                           const TensorView& scores) {
  TopKParams t;
  t.scores = scores;
  t.ks = indexer_topk_rows(p.ks, r0, n);
  t.ke = indexer_topk_rows(p.ke, r0, n);
  t.indices = indexer_topk_rows(p.indices, r0, n);
  t.out_scores = indexer_topk_rows(p.out_scores, r0, n);
  t.k_eff = indexer_topk_rows(p.k_eff, r0, n);
  t.domain = p.domain;
  t.sorted = p.sorted;
  return t;
}

}  // namespace dsa::detail
