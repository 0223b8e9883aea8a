// dsa/training.hpp — params and entry points of the training ops (SPEC §6.5, §8.4): sparse MLA
// backward and the indexer backward. The indexer losses are in dsa/training_loss.hpp.
// Included by dsa/ops.hpp. See docs/training_backward.md for the full contracts.
#pragma once

#include "dsa/types.hpp"
#include "dsa/training_loss.hpp"

namespace dsa {

// ---- OP-SMLA-BWD ---------------------------------------------------------------------------------

// Sparse MLA backward, MQA mode (SPEC §6.5), exact mode on bf16 (or f32) KV. Slot i of row t is
// valid iff i < topk_length[t] (when given) and 0 ≤ indices[t, i] < s_kv, exactly as in the forward;
// invalid slots contribute nothing and are never read. Duplicate valid indices follow index-list
// semantics (SPEC §6.2): every occurrence counts, as a separate softmax slot, in dq and in dkv.
//   D = Σ_{d<d_v} out·dout,  P_i = exp(τ·q·kv_i − lse),  dZ_i = P_i·(dout·v_i − D)
//   dq = τ·Σ_i dZ_i·kv_i,    dkv_s += τ·dZ_i·q (all d_qk dims) + P_i·dout (dims [0, d_v))
// fp32 accumulation; dkv is accumulated in fp32 and cast once at the end. dkv is deterministic:
// every row adds its per-(t, slot) contributions in (t, slot) order, independent of the thread
// count (bitwise reproducible). A row
// whose lse is +∞ (no valid slot in the forward) gets dq = 0; rows of dkv no slot refers to get 0.
// d_qk = 576, d_v = 512 in V3.2 (the CUDA fast path); the CPU reference takes any d_v ≤ d_qk.
struct SparseMlaBwdParams {
  TensorView q;            // [s_q, h_q, d_qk] bf16 | f32
  TensorView kv;           // [s_kv, d_qk] bf16 | f32
  TensorView indices;      // [s_q, topk] i32
  TensorView topk_length;  // [s_q] i32, optional; 0 ≤ topk_length[t] ≤ topk
  TensorView attn_sink;    // [h_q] f32 — must be absent: the sink is not supported in backward (v1)
  TensorView out;          // [s_q, h_q, d_v] bf16 | f32 — the forward's stored output
  TensorView lse;          // [s_q, h_q] f32 — the forward's lse (+∞ for a row without valid slots)
  TensorView dout;         // [s_q, h_q, d_v] bf16 | f32 — dL/dout
  TensorView dq;           // [s_q, h_q, d_qk] bf16 | f32, out
  TensorView dkv;          // [s_kv, d_qk] bf16 | f32, out (every row written; unreferenced rows 0)
  float sm_scale = 0.0f;   // required (> 0, finite); V3.2: kSoftmaxScaleV32
  LseBase lse_base = LseBase::kNatural;  // the base `lse` was written in
};

// ---- OP-IDX-BWD ----------------------------------------------------------------------------------

// Indexer backward, exact mode (SPEC §8.4): from G = dL/dI to the raw indexer inputs.
// Forward being differentiated (SPEC §4.6): I[t, s] = Σ_j w[t, j]·ReLU(z), z = q[t, j]·k[s], where
// q and k are post-RoPE (and post-Hadamard when `hadamard`) and w = w_raw·2⁻³·fl32(128^-0.5).
//   dw[t, j] = Σ_s G·ReLU(z);  dz = G·w·1[z > 0] (ReLU′(0) = 0);
//   dq[t, j] = Σ_s dz·k[s];    dk[s] = Σ_{t, j} dz·q[t, j]
// then dw_raw = dw·2⁻³·fl32(128^-0.5); dq, dk ← scaled Hadamard (its own transpose) when
// `hadamard`; then the inverse non-interleaved RoPE (rotation by −θ) on dims [0, 64); dims
// [64, 128) pass through. All math in fp32 (fp64 with Accum::kF64); dk is deterministic (each key
// row has one owner thread and a fixed summation order: bitwise independent of the thread count).
//
// G comes in one of two forms:
//   dense  (grad_indices absent): grad [s_q, s_kv]; row t uses columns [ks[t], ke[t]) only (ks/ke
//          optional, default 0 and s_kv); entries outside the range are never read.
//   sparse (grad_indices present): grad [s_q, k] values at columns grad_indices [s_q, k] — e.g.
//          the top-k indices the sparse loss used. A slot is used iff 0 ≤ grad_indices[t, i] < s_kv
//          (−1 and every other out-of-range value are skipped, never read); duplicate columns
//          follow index-list semantics (every occurrence counts). ks/ke must be absent.
//
// Transforms-only form (dq_post, dk_post, dw_post given): the caller already has the gradients
// w.r.t. the post-transform q, k and the folded w — e.g. the dq_idx, dk_idx, dweights of
// OP-LOSS-DENSE / OP-LOSS-SPARSE (f32 outputs). The score-gradient stage is skipped and only the
// back-transforms above run (the same code as the G form's second half): dw_raw = dw_post·2⁻³·
// fl32(128^-0.5); dq_post, dk_post → scaled Hadamard (if `hadamard`) → RoPE by −θ. All three must
// be given; grad, grad_indices, ks and ke must be absent; q, k and weights are not read and may be
// absent (when given, their shapes must agree). Positions and tables as in the G form.
struct IndexerBwdParams {
  TensorView q;             // [s_q, h_idx, 128] bf16 | f32 — post-RoPE (post-Hadamard) indexer q
                            //   (optional in the transforms-only form, as are k and weights)
  TensorView k;             // [s_kv, 128] bf16 | f32 — post-RoPE (post-Hadamard) indexer k
  TensorView weights;       // [s_q, h_idx] f32 — folded weights w (OP-IDXPREP weights_out)
  TensorView grad;          // [s_q, s_kv] (dense) | [s_q, k] (sparse) f32 — G = dL/dI
                            //   (must be absent in the transforms-only form)
  TensorView grad_indices;  // [s_q, k] i32, optional — selects the sparse form
  TensorView ks;            // [s_q] i32, optional (dense form only; default 0)
  TensorView ke;            // [s_q] i32, optional (dense form only; default s_kv)
  TensorView q_positions;   // [s_q] i32 absolute positions of the queries (rows of the tables)
  TensorView k_positions;   // [s_kv] i32 absolute positions of the keys
  TensorView rope_cos;      // [max_pos, 32] f32 (OP-ROPE table, the one the forward used)
  TensorView rope_sin;      // [max_pos, 32] f32
  bool hadamard = false;    // the forward applied the Hadamard to q and k (exact-mode option)

  TensorView dq_raw;        // [s_q, h_idx, 128] f32 | bf16, out — dL/dq_raw (pre-RoPE)
  TensorView dk_raw;        // [s_kv, 128] f32 | bf16, out — dL/dk_raw (pre-RoPE)
  TensorView dw_raw;        // [s_q, h_idx] f32 | bf16, out — dL/dw_raw (weights_proj output)

  // Appended (C ABI 1.1): the transforms-only form. Absent (all three) = the G form above.
  TensorView dq_post;       // [s_q, h_idx, 128] f32, optional — dL/dq, post-RoPE (post-Hadamard)
  TensorView dk_post;       // [s_kv, 128] f32, optional — dL/dk, post-RoPE (post-Hadamard)
  TensorView dw_post;       // [s_q, h_idx] f32, optional — dL/dw w.r.t. the folded weights
};

DSA_API Status supports(const SparseMlaBwdParams& params);
DSA_API size_t workspace_size(const SparseMlaBwdParams& params);
DSA_API Status run(const SparseMlaBwdParams& params, void* workspace = nullptr,
                   size_t workspace_bytes = 0, Stream stream = nullptr);

DSA_API Status supports(const IndexerBwdParams& params);
DSA_API size_t workspace_size(const IndexerBwdParams& params);
DSA_API Status run(const IndexerBwdParams& params, void* workspace = nullptr,
                   size_t workspace_bytes = 0, Stream stream = nullptr);

namespace ref {
DSA_API Status run(const SparseMlaBwdParams& params, Accum accum = Accum::kF32);
DSA_API Status run(const IndexerBwdParams& params, Accum accum = Accum::kF32);
}  // namespace ref

}  // namespace dsa
