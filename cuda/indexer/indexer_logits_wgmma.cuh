// cuda/indexer/indexer_logits_wgmma.cuh — the sm_90a wgmma path of OP-IDXLOGITS prefill (FP8,
// h_idx = 64, d_idx = 128); see indexer_logits_wgmma.cu. Also the paged decode one (P a multiple of
// 64, next_n 1…4; see indexer_paged_wgmma.cu). Used by indexer_logits.cu only.
#pragma once

#include <cstdint>

#include "dsa/params.hpp"
#include "dsa/types.hpp"

namespace dsa::cuda_backend {

// Byte strides for q and k; element strides for the rest (as FastArgs in indexer_logits.cu).
struct WgmmaLogitsArgs {
  const uint8_t* q;      // token r, head j, byte x at q + r·q_s0 + 128·j + x
  int64_t q_s0;
  const uint8_t* k;      // key s at k + s·k_s0 (128 bytes)
  int64_t k_s0;
  const float* k_scale;  // [s_kv]
  int64_t sc_s0;
  const float* w;        // [rows, 64]
  int64_t w_s0, w_s1;
  const int32_t* ks;
  const int32_t* ke;
  int64_t ks_s0, ke_s0;
  float* out;            // [rows, cols]
  int64_t out_s0;
  int64_t rows, cols;
  bool clean;
  int64_t ntb, chunk;    // set by the launcher: token blocks, keys per work item
};

// True when the wgmma kernel may run on the current device: cc 9.0, an sm_90a image of the
// kernel in this binary, and not switched off (DSA_INDEXER_WGMMA=0 or the test hook).
bool indexer_wgmma_usable();

// Launches the wgmma kernel (the caller checked the shape conditions and indexer_wgmma_usable()).
Status launch_indexer_logits_wgmma(WgmmaLogitsArgs a, Stream stream);

// indexer_logits.cu: whether a prefill call takes the wgmma kernel (FP8, h_idx 64, d_idx 128, a
// token's heads contiguous, 16-byte aligned rows, indexer_wgmma_usable()), and its arguments.
bool wgmma_logits_applies(const IndexerLogitsParams& p);
WgmmaLogitsArgs wgmma_logits_args(const IndexerLogitsParams& p);

// ---- fused indexer → top-k (the same file): the kernel above over whole rows, each score admitted
// into a per-token candidate buffer in shared memory instead of stored (topk/topk_stream.cuh) ----

// The selection half of the fused kernel's arguments (element strides).
struct WgmmaSelectArgs {
  int32_t* idx;    // [rows, k]
  int64_t idx_s0;
  float* osc;      // [rows, k] or null
  int64_t osc_s0;
  int32_t* keff;   // [rows] or null
  int64_t keff_s0;
  int32_t k;
  bool relative;   // IndexDomain::kRelative: column − ks (clamped)
  bool sorted;
};

// The largest k the streaming kernel takes (its final sort holds 256 × 8 entries).
constexpr int64_t kIndexerTopKStreamMaxK = 2048;

// Room for the kernel's shared memory on the current device (the rest of the question is
// wgmma_logits_applies(), which the caller asks too).
bool indexer_topk_wgmma_fits();

// Launches it: WgmmaLogitsArgs as for the logits kernel (out, clean and the work split are set
// here), 1 ≤ k ≤ kIndexerTopKStreamMaxK, s_kv < 2^31.
Status launch_indexer_topk_wgmma(WgmmaLogitsArgs a, const WgmmaSelectArgs& sel, Stream stream);

// ---- paged decode (indexer_paged_wgmma.cu) ----

// Byte strides for q and the cache; element strides for the rest.
struct WgmmaPagedArgs {
  const uint8_t* q;        // request r, token t, head j, byte x at q + r·q_s0 + t·q_s1 + 128·j + x
  int64_t q_s0, q_s1;
  const uint8_t* cache;    // page p at cache + p·page_stride: P·128 codes, then P fp32 scales
  int64_t page_stride, P, num_blocks;
  const int32_t* bt;       // [b, max_blocks]
  int64_t bt_s0, bt_s1, max_blocks;
  const int32_t* lens;     // [b] or [b, next_n]
  int64_t lens_s0, lens_s1;
  bool lens_2d;
  const float* w;          // [b·next_n, 64]
  int64_t w_s0, w_s1;
  float* out;              // [b·next_n, cols]
  int64_t out_s0;
  int64_t b, next_n, cols;
  int64_t cap;             // set by the launcher: min(cols, max_blocks·P), the length clamp
};

// True when the paged wgmma kernel may run on the current device: cc 9.0, an sm_90a image of the
// kernel in this binary, and not switched off (DSA_INDEXER_PAGED_WGMMA=0 or the test hook).
bool indexer_paged_wgmma_usable();

// Launches it (the caller checked the shape conditions and indexer_paged_wgmma_usable()).
Status launch_indexer_paged_wgmma(WgmmaPagedArgs a, Stream stream);

}  // namespace dsa::cuda_backend
