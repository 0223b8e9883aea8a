// dsa/params.hpp — one params struct per op (SPEC §1.1 IDs).
//
// Every tensor is a TensorView (pointer, dtype, shape, int64 element strides; innermost stride 1).
// Shapes are given in the comments with the field's shape letters; the op derives every size from
// the views and checks that they agree. Optional views are left default-constructed ("absent").
// The device of the pointers picks the backend: host pointers run the CPU reference, CUDA device
// pointers run the CUDA kernels (see dsa/ops.hpp).
#pragma once

#include "dsa/types.hpp"

namespace dsa {

// ---- OP-ROPE -------------------------------------------------------------------------------------

// YaRN cos/sin table (SPEC §3.3), fp32, indexed by absolute position and frequency i.
struct RopeTableParams {
  TensorView cos;  // [max_pos, rope_dim / 2] f32, out
  TensorView sin;  // [max_pos, rope_dim / 2] f32, out
  int32_t rope_dim = 64;
  float base = 10000.0f;
  float yarn_factor = 40.0f;              // 1 disables YaRN
  int64_t original_max_position = 4096;
  float beta_fast = 32.0f;
  float beta_slow = 1.0f;
};

// RoPE apply on dims [rope_offset, rope_offset + rope_dim) of every head; the other dims pass
// through. Each output is bf16(fl32(a·cos) ∓ fl32(b·sin)) without FMA contraction (SPEC §4.2).
struct RopeParams {
  TensorView x;          // [n, heads, d] bf16
  TensorView out;        // [n, heads, d] bf16; may be the same memory as x (in place)
  TensorView positions;  // [n] i32, absolute positions (rows of the tables)
  TensorView cos;        // [max_pos, rope_dim / 2] f32
  TensorView sin;        // [max_pos, rope_dim / 2] f32
  RopeStyle style = RopeStyle::kNonInterleaved;
  int32_t rope_offset = 0;  // 0 for the indexer; 512 for the MLA q/kv rope part
  int32_t rope_dim = 64;
  bool inverse = false;     // rotate by −θ (the backward of RoPE)
};

// ---- OP-HAD --------------------------------------------------------------------------------------

// y = bf16(fl32(128^-0.5) · H128 · x), Sylvester order, butterfly strides 1..64 (SPEC §4.5).
struct HadamardParams {
  TensorView x;    // [n, 128] bf16
  TensorView out;  // [n, 128] bf16; may be the same memory as x
};

// ---- OP-QUANT ------------------------------------------------------------------------------------

// Block-128 FP8 quantization of each row (SPEC §4.4).
struct QuantizeParams {
  TensorView x;       // [n, d] bf16 | f32, d % 128 == 0
  TensorView codes;   // [n, d] e4m3, out
  TensorView scales;  // [n, d / 128] f32, out (dequantization scales)
  ScaleFormat scale_format = ScaleFormat::kUe8m0;
};

// x̃ = code · scale.
struct DequantizeParams {
  TensorView codes;   // [n, d] e4m3
  TensorView scales;  // [n, d / 128] f32
  TensorView out;     // [n, d] bf16 | f32, out
};

// ---- OP-IDXPREP ----------------------------------------------------------------------------------

// Indexer prepare (SPEC §4.2 steps 1–6): non-interleaved RoPE on dims [0, 64), Hadamard-128 (FP8
// mode, or exact mode with `hadamard`), FP8 quantization (FP8 mode), the weight fold, and the
// key-cache write. q and k may be prepared in separate calls (leave the other side absent), but
// the Hadamard flag applies to both sides of one model (SPEC §11.2): pass the same value.
struct IndexerPrepParams {
  TensorView q;          // [T, h_idx, 128] bf16 — wq_b(c^Q); optional (absent: k only)
  TensorView weights;    // [T, h_idx] f32 — weights_proj(x); required when q is present
  TensorView k;          // [T, 128] bf16 — LayerNorm(wk(x)); optional (absent: q only)
  TensorView positions;  // [T] i32 absolute positions
  TensorView rope_cos;   // [max_pos, 32] f32 (OP-ROPE table)
  TensorView rope_sin;   // [max_pos, 32] f32
  IndexerMode mode = IndexerMode::kFp8;
  bool hadamard = true;  // FP8 mode requires true; exact mode: optional (Megatron rotate option)
  ScaleFormat scale_format = ScaleFormat::kUe8m0;

  TensorView q_out;        // [T, h_idx, 128] e4m3 (FP8) | bf16 (exact), out; with q
  TensorView weights_out;  // [T, h_idx] f32 folded weights, out; with q
  TensorView k_out;        // [T, 128] e4m3 (FP8) | bf16 (exact), out; optional
  TensorView k_scale_out;  // [T] f32, out; FP8 mode, with k_out
  TensorView k_cache;      // [num_blocks, page_bytes] u8 paged 132-B cache (SPEC §7.2); FP8, optional
  TensorView slot_mapping; // [T] i32 physical slot = page·P + offset; negative = skip; with k_cache
  int32_t page_block_size = 64;  // P; page_bytes (k_cache.shape[1]) must be ≥ 132·P
};

// ---- OP-IDXLOGITS --------------------------------------------------------------------------------

// Prefill scores over packed tokens (SPEC §4.2 step 7, §12.3):
//   logits[t, s] = σ_k[s] · Σ_j w[t, j] · ReLU(q[t, j] · k[s])   for ks[t] ≤ s < ke[t].
// FP8 mode when q and k are e4m3 (k_scale required); exact mode when both are bf16 or f32.
// A query chunk is simply a row slice of q, weights, ks, ke and logits.
struct IndexerLogitsParams {
  TensorView q;        // [s_q, h_idx, d_idx] e4m3 | bf16 | f32
  TensorView k;        // [s_kv, d_idx] e4m3 | bf16 | f32
  TensorView k_scale;  // [s_kv] f32 — FP8 mode only
  TensorView weights;  // [s_q, h_idx] f32 (scale already folded, OP-IDXPREP)
  TensorView ks;       // [s_q] i32 first key of the row's range
  TensorView ke;       // [s_q] i32 one past the last key
  TensorView logits;   // [s_q, s_kv] f32, out (row stride may exceed s_kv)
  bool clean_logits = true;  // write −∞ outside [ks, ke); false leaves those entries untouched
};

// Decode scores from the paged 132-byte key cache (SPEC §7.2, §12.4). Token j of request b sees
// the keys p < context_lens[b][j] (2-D form) or p < context_lens[b] − next_n + 1 + j (1-D form).
// Entries past the row's length are written −∞.
struct IndexerPagedLogitsParams {
  TensorView q;             // [b, next_n, h_idx, d_idx] e4m3
  TensorView k_cache;       // [num_blocks, page_bytes] u8, page_bytes ≥ 132·P
  TensorView weights;       // [b · next_n, h_idx] f32
  TensorView context_lens;  // [b, next_n] or [b] i32
  TensorView block_table;   // [b, max_blocks] i32 physical page ids
  TensorView logits;        // [b · next_n, max_context_len] f32, out
  int32_t page_block_size = 64;  // P
};

// ---- OP-TOPK -------------------------------------------------------------------------------------

// Top-k per row (SPEC §5, D7): the k_eff = min(k, |valid|) best columns of [ks, ke) by (score
// descending, column ascending); −∞ and NaN are not valid; slots past k_eff are −1.
struct TopKParams {
  TensorView scores;      // [rows, cols] f32
  TensorView ks;          // [rows] i32, optional (default 0)
  TensorView ke;          // [rows] i32, optional (default cols)
  TensorView indices;     // [rows, k] i32, out; k = indices.shape[1]
  TensorView out_scores;  // [rows, k] f32, out, optional (−∞ in padded slots)
  TensorView k_eff;       // [rows] i32, out, optional
  IndexDomain domain = IndexDomain::kAbsolute;
  TensorView block_table;    // [b, max_blocks] i32, for kPagedSlot
  int32_t rows_per_batch = 1;  // kPagedSlot: row r uses block_table[r / rows_per_batch]
  int32_t page_block_size = 64;
  bool sorted = true;  // false: any deterministic order of the same set
};

// ---- OP-MLACACHE ---------------------------------------------------------------------------------

// Writes MLA latent rows [c^KV (512) | k^R (64)] into a paged cache (SPEC §7.1).
struct MlaCacheWriteParams {
  TensorView kv;            // [n, 576] bf16
  TensorView slot_mapping;  // [n] i32 physical slot = page·P + offset; negative = skip
  TensorView cache;         // [num_blocks, P, 656] u8 (kFp8) | [num_blocks, P, 576] bf16 (kBf16)
  ScaleFormat scale_format = ScaleFormat::kUe8m0;  // kFp8 only
};

// ---- OP-SMLA-FWD ---------------------------------------------------------------------------------

// Sparse MLA forward, MQA mode (SPEC §6.2–6.3). Slot i of row t is valid iff i < topk_length[t]
// (when given) and 0 ≤ indices[t, i] < s_kv. out = Σ softmax(τ·q·kv) · kv[:, :d_v].
// A row without valid slots gives out 0, lse +∞, max_logits −∞.
struct SparseMlaFwdParams {
  TensorView q;            // [s_q, h_q, d_qk] bf16 | f32
  TensorView kv;           // [s_kv, d_qk] bf16 | f32
  TensorView indices;      // [s_q, topk] i32
  TensorView topk_length;  // [s_q] i32, optional
  TensorView attn_sink;    // [h_q] f32, optional (compatibility; V3.2 has none)
  TensorView out;          // [s_q, h_q, d_v] bf16 | f32, out
  TensorView lse;          // [s_q, h_q] f32, out
  TensorView max_logits;   // [s_q, h_q] f32, out, optional
  float sm_scale = 0.0f;   // required (> 0); V3.2: kSoftmaxScaleV32
  LseBase lse_base = LseBase::kNatural;
};

// ---- OP-SMLA-DEC ---------------------------------------------------------------------------------

// Sparse MLA decode from a paged cache (SPEC §6.4). Indices are physical slots page·P + offset;
// any value < 0 or ≥ num_blocks·P is invalid. lse has logical shape [b, s_q, h_q]; pass strides
// to write FlashMLA's [b, h_q, s_q] storage.
struct SparseMlaDecodeParams {
  TensorView q;            // [b, s_q, h_q, 576] bf16
  TensorView cache;        // [num_blocks, P, 656] u8 (FP8) | [num_blocks, P, 576] bf16
  TensorView indices;      // [b, s_q, topk] i32
  TensorView topk_length;  // [b] i32, optional
  TensorView attn_sink;    // [h_q] f32, optional
  TensorView out;          // [b, s_q, h_q, 512] bf16 | f32, out
  TensorView lse;          // [b, s_q, h_q] f32, out
  float sm_scale = 0.0f;
  LseBase lse_base = LseBase::kNatural;
  // Split-KV (CUDA; appended in C ABI 1.3). 1 = never split: a row's bits do not depend on the batch
  // (SPEC D11). n ≥ 2 = every row's topk slots are cut into n contiguous ranges of whole 32-key
  // chunks (fewer when topk has fewer chunks, so no split is empty; the count depends only on topk
  // and n): batch-invariant for a fixed n, bits differ from n = 1. 0 = automatic: splits only when
  // the grid is under half a wave (fastest for small batches, but a row's last bits then depend on
  // the batch size). Must be ≥ 0. The CPU reference ignores it (its result does not depend on it).
  int32_t num_splits = 1;
};

// ---- dense MLA forward (the warm-up teacher's input) ----------------------------------------------

// Dense MQA-mode attention over per-row key ranges [ks[t], ke[t]) of packed tokens; a ragged
// causal batch has ks[t] = start of t's sequence and ke[t] = t + 1 (see causal_ranges()).
struct DenseMlaFwdParams {
  TensorView q;           // [s_q, h_q, d_qk] bf16 | f32
  TensorView kv;          // [s_kv, d_qk] bf16 | f32
  TensorView ks;          // [s_q] i32
  TensorView ke;          // [s_q] i32
  TensorView out;         // [s_q, h_q, d_v] bf16 | f32, out
  TensorView lse;         // [s_q, h_q] f32, out
  TensorView max_logits;  // [s_q, h_q] f32, out, optional
  float sm_scale = 0.0f;
  LseBase lse_base = LseBase::kNatural;
};

// ---- fused indexer → top-k (prefill) -------------------------------------------------------------

// indexer_logits followed by topk on its logits, without the [s_q, s_kv] logits tensor. The result
// equals running IndexerLogitsParams (clean_logits) then TopKParams with the same ks, ke (SPEC §4.2
// step 7, §5, D7), bitwise on the CUDA backend. Two ways to run it:
//   - chunk_rows = 0 (default): streaming where the backend has it (CUDA: FP8, h_idx 64, d_idx 128,
//     k ≤ 2048, sm_90a) — each score is selected from where it is computed and never written to
//     memory; no workspace, device memory O(s_q · k) (the outputs);
//   - chunk_rows > 0, or no streaming kernel: rows in chunks of chunk_rows (0 = automatic, ~256 MiB
//     of logits), each chunk's fp32 logits in a workspace scratch read by the chunk's top-k; device
//     memory O(chunk_rows · s_kv) + the outputs. Faster than streaming on the H200 where both run
//     (docs/performance.md), at more memory.
struct IndexerTopKParams {
  TensorView q;           // [s_q, h_idx, d_idx] e4m3 | bf16 | f32
  TensorView k;           // [s_kv, d_idx] e4m3 | bf16 | f32
  TensorView k_scale;     // [s_kv] f32 — FP8 mode only
  TensorView weights;     // [s_q, h_idx] f32 (scale already folded, OP-IDXPREP)
  TensorView ks;          // [s_q] i32 first key of the row's range
  TensorView ke;          // [s_q] i32 one past the last key
  TensorView indices;     // [s_q, k] i32, out
  TensorView out_scores;  // [s_q, k] f32, out, optional (−∞ in padded slots)
  TensorView k_eff;       // [s_q] i32, out, optional
  IndexDomain domain = IndexDomain::kAbsolute;  // kAbsolute | kRelative (column − ks[t])
  bool sorted = true;      // false: any deterministic order of the same set
  int32_t chunk_rows = 0;  // 0: streaming where available, else automatic chunks; > 0: chunks of this many rows
};

}  // namespace dsa
