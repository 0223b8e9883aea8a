// CUDA fused indexer → top-k, prefill (IndexerTopKParams): OP-IDXLOGITS then OP-TOPK without the
// [s_q, s_kv] logits tensor. Two paths, the same bits:
//
// Streaming (FP8, h_idx 64, d_idx 128, k ≤ 2048, sm_90a; indexer_logits_wgmma.cu): the scores never
// leave the SM. Each CTA computes 4 tokens' scores over their whole key ranges with the wgmma
// logits kernel's instruction sequence and admits each one into the token's candidate buffer in
// shared memory when it beats the k-th best so far; full buffers are compacted back to their k best
// by a radix select (topk/topk_stream.cuh); the end sorts and writes the k best. No workspace.
// Taken when chunk_rows = 0; DSA_INDEXER_TOPK=chunked forces the path below everywhere.
//
// Chunked (everything else). For each chunk of chunk_rows rows (automatic: ~256 MiB of fp32 logits, 512 rows at 128K keys —
// enough rows for full indexer waves and the many-row top-k kernel), the existing backends run back
// to back on the caller's stream:
//   run(IndexerLogitsParams) writes the chunk's logits into a scratch of the workspace (row stride
//   s_kv rounded up to 4 floats), then run(TopKParams) selects from that scratch.
// This is chunking, not register-level fusion: the scores still go through HBM, in a scratch that
// every chunk reuses. Memory is O(chunk_rows · s_kv + s_q · k) instead of O(s_q · s_kv). (An
// L2-sized 32 MiB chunk was tried first: 64-row chunks under-filled both kernels, 29.8 ms against
// 21.8 ms unfused at 4096 × 128K on the H200.)
//
// Results are bitwise those of the unfused pair on the same inputs: the logits kernels compute
// every element with the same instruction sequence whatever the row set (see indexer_logits.cu),
// the chunk views keep the q/k alignment that picks the fast path, and top-k handles each row
// from its own scores. clean_logits is off: top-k reads only [ks, ke) (clamped), so the −∞ fill
// outside the ranges would be wasted traffic.
//
// No allocation, no synchronization, no host read of device memory: the chunk loop depends only
// on shapes (CUDA-graph safe). workspace_size() = the logits scratch + the larger of the two
// sub-ops' own workspaces (256-byte aligned pieces).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/indexer_topk_plan.hpp"
#include "common/op_list.hpp"
#include "dsa/version.hpp"
#include "indexer/indexer_logits_wgmma.cuh"

namespace dsa {
namespace {
std::atomic<int> g_streaming_override{-1};  // −1: the environment decides; 0 off; 1 on
}
}  // namespace dsa

namespace dsa::cuda_backend {

namespace {

constexpr size_t kAlign = 256;  // the dispatcher's workspace alignment, kept for each piece
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

struct Plan {
  int64_t s_q, s_kv, chunk, ld;
  size_t logits_bytes;  // the chunk's logits scratch, aligned
  size_t sub_bytes;     // max of the sub-ops' workspaces
};

// The chunk's logits view over `scratch` (may be null when only sizes are wanted).
TensorView chunk_logits(const Plan& pl, void* scratch, int64_t n) {
  return make_view(scratch, DType::kF32, {n, pl.s_kv}, {pl.ld, 1});
}

Plan make_plan(const IndexerTopKParams& p) {
  Plan pl{};
  pl.s_q = p.q.shape[0];
  pl.s_kv = p.k.shape[0];
  pl.chunk = detail::indexer_topk_chunk_rows(p);
  pl.ld = detail::indexer_topk_ld(pl.s_kv);
  pl.logits_bytes = align_up(static_cast<size_t>(pl.chunk * pl.ld) * sizeof(float));
  // The sub-ops' needs at a full chunk and at the tail chunk (sizes only; a non-null dummy
  // pointer keeps the views "present").
  pl.sub_bytes = 0;
  const int64_t tail = pl.s_q % pl.chunk;
  for (int64_t n : {pl.chunk, tail}) {
    if (n <= 0) continue;
    const TensorView lv = chunk_logits(pl, reinterpret_cast<void*>(kAlign), n);
    pl.sub_bytes = std::max(pl.sub_bytes, cuda_backend::workspace_size(detail::indexer_topk_logits_part(p, 0, n, lv, false)));
    pl.sub_bytes = std::max(pl.sub_bytes, cuda_backend::workspace_size(detail::indexer_topk_select_part(p, 0, n, lv)));
  }
  pl.sub_bytes = align_up(pl.sub_bytes);
  return pl;
}

// DSA_INDEXER_TOPK=chunked keeps the chunked path everywhere (read once); the test hook below
// overrides it.
bool streaming_allowed() {
  static const bool env_allowed = [] {
    const char* e = std::getenv("DSA_INDEXER_TOPK");
    return !(e && std::strcmp(e, "chunked") == 0);
  }();
  const int mode = g_streaming_override.load();
  return mode < 0 ? env_allowed : mode == 1;
}

// The logits half of the whole op (no logits tensor: the streaming kernel stores none).
IndexerLogitsParams whole_logits_part(const IndexerTopKParams& p) {
  return detail::indexer_topk_logits_part(p, 0, p.q.shape[0], TensorView{}, false);
}

// Whether run() takes the streaming kernel: chunk_rows = 0, a problem the wgmma logits kernel
// takes (indexer_logits.cu), k ≤ 2048 and columns that fit int32.
bool takes_streaming(const IndexerTopKParams& p) {
  const int64_t k = p.indices.shape[1];
  return streaming_allowed() && p.chunk_rows == 0 && k >= 1 && k <= kIndexerTopKStreamMaxK &&
         p.k.shape[0] <= INT32_MAX && wgmma_logits_applies(whole_logits_part(p)) && indexer_topk_wgmma_fits();
}

Status run_streaming(const IndexerTopKParams& p, Stream stream) {
  WgmmaSelectArgs sel{};
  sel.idx = static_cast<int32_t*>(p.indices.data);
  sel.idx_s0 = p.indices.stride[0];
  sel.osc = p.out_scores.present() ? static_cast<float*>(p.out_scores.data) : nullptr;
  sel.osc_s0 = p.out_scores.present() ? p.out_scores.stride[0] : 0;
  sel.keff = p.k_eff.present() ? static_cast<int32_t*>(p.k_eff.data) : nullptr;
  sel.keff_s0 = p.k_eff.present() ? p.k_eff.stride[0] : 0;
  sel.k = static_cast<int32_t>(p.indices.shape[1]);
  sel.relative = p.domain == IndexDomain::kRelative;
  sel.sorted = p.sorted;
  return launch_indexer_topk_wgmma(wgmma_logits_args(whole_logits_part(p)), sel, stream);
}

}  // namespace

Status supports(const IndexerTopKParams& p) {
  const int64_t s_q = p.q.shape[0], s_kv = p.k.shape[0];
  if (s_q == 0 || takes_streaming(p)) return Status();
  // A chunk's scratch must be addressable (only an explicit, huge chunk_rows can exceed this).
  const int64_t chunk = detail::indexer_topk_chunk_rows(p), ld = detail::indexer_topk_ld(s_kv);
  if (chunk > (INT64_MAX / 8) / ld)
    return Status(StatusCode::kUnsupportedShape, "indexer_topk: chunk_rows = " + std::to_string(chunk) +
                                                     " rows of s_kv = " + std::to_string(s_kv) +
                                                     " fp32 logits exceed the addressable workspace");
  // Each chunk must be something both backends run; their supports() depend on shapes and
  // flags only, so the first chunk speaks for all.
  const Plan pl = make_plan(p);
  const TensorView lv = chunk_logits(pl, reinterpret_cast<void*>(kAlign), pl.chunk);
  const Status sl = cuda_backend::supports(detail::indexer_topk_logits_part(p, 0, pl.chunk, lv, false));
  if (!sl.ok()) return Status(sl.code(), "indexer_topk: " + sl.message());
  const Status st = cuda_backend::supports(detail::indexer_topk_select_part(p, 0, pl.chunk, lv));
  if (!st.ok()) return Status(st.code(), "indexer_topk: " + st.message());
  return Status();
}

size_t workspace_size(const IndexerTopKParams& p) {
  if (p.q.shape[0] == 0 || takes_streaming(p) || !cuda_backend::supports(p).ok()) return 0;
  const Plan pl = make_plan(p);
  return pl.logits_bytes + pl.sub_bytes;
}

Status run(const IndexerTopKParams& p, void* workspace, size_t workspace_bytes, Stream stream) {
  if (p.q.shape[0] == 0) return Status();
  if (takes_streaming(p)) return run_streaming(p, stream);
  const Plan pl = make_plan(p);
  if (workspace_bytes < pl.logits_bytes + pl.sub_bytes)  // the dispatcher checks; direct callers too
    return Status(StatusCode::kWorkspaceTooSmall, "indexer_topk: workspace_bytes = " +
                                                      std::to_string(workspace_bytes) + " < " +
                                                      std::to_string(pl.logits_bytes + pl.sub_bytes));
  char* base = static_cast<char*>(workspace);
  void* sub_ws = pl.sub_bytes > 0 ? base + pl.logits_bytes : nullptr;
  for (int64_t r0 = 0; r0 < pl.s_q; r0 += pl.chunk) {
    const int64_t n = std::min(pl.chunk, pl.s_q - r0);
    const TensorView lv = chunk_logits(pl, base, n);
    const Status sl =
        cuda_backend::run(detail::indexer_topk_logits_part(p, r0, n, lv, /*clean=*/false), sub_ws, pl.sub_bytes, stream);
    if (!sl.ok()) return sl;
    const Status st = cuda_backend::run(detail::indexer_topk_select_part(p, r0, n, lv), sub_ws, pl.sub_bytes, stream);
    if (!st.ok()) return st;
  }
  return Status();
}

}  // namespace dsa::cuda_backend

namespace dsa {
// Test and benchmark hooks (declared where used, not in a public header): mode −1 follows
// DSA_INDEXER_TOPK, 0 forces the chunked path, 1 allows the streaming kernel where it applies.
DSA_API void indexer_topk_streaming_for_testing(int mode) { g_streaming_override.store(mode); }
// Whether run(p) on the current device takes the streaming kernel now.
DSA_API bool indexer_topk_streaming_taken(const IndexerTopKParams& p) { return cuda_backend::takes_streaming(p); }
}  // namespace dsa
