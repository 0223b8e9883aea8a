// dsa/training_loss.hpp — params and entry points of the indexer KL losses (SPEC §8):
// dense warm-up (OP-LOSS-DENSE) and sparse stage (OP-LOSS-SPARSE).
//
// Both ops compute, in exact mode (SPEC §4.6), the KL divergence between the main attention's
// head-mean distribution p (the teacher, detached) and the indexer's softmax π over the row's
// valid set V_t, and its gradients with respect to the post-RoPE indexer q/k and the folded
// weights (SPEC §8.4). OP-IDX-BWD (dsa/training.hpp) maps those to the raw indexer inputs.
// The main-attention inputs receive no gradient. Results are bitwise deterministic and
// independent of the thread count (dk_idx is accumulated in a fixed order).
#pragma once

#include "dsa/types.hpp"

namespace dsa {

// Reduction of the per-row KL over query rows (SPEC D4): L = κ·Σ_t KL_t with κ = c (kSum) or
// κ = c/N (kMean), N = number of valid query rows (rows of row_mask, all rows without it), ≥ 1.
enum class LossReduction : int32_t {
  kSum = 0,   // the technical report's Σ_t (default)
  kMean = 1,  // Megatron-LM's kl.sum(-1).mean()·coeff
};

// The sparse-stage teacher (SPEC §8.3, D8).
enum class SparseTeacher : int32_t {
  kSparseHeadMean = 0,     // D8: (1/H)·Σ_h softmax over S_t of τ·q_h·kv, from the sparse lse
  kDenseRenormalized = 1,  // reserved (§8.3 alternative reading; needs the dense lse):
                           // answered with kNotImplemented
};

// ---- OP-LOSS-DENSE -------------------------------------------------------------------------------

// Dense warm-up loss (SPEC §8.2): V_t = [ks[t], ke[t]) (a ragged causal batch has
// ks[t] = start of t's sequence, ke[t] = t + 1); rows with ks ≥ ke have an empty set (KL 0).
//   teacher  p[t,s] = (1/h_q)·Σ_h exp(sm_scale·q[t,h]·kv[s] − lse[t,h])
//   student  I[t,s] = Σ_j weights[t,j]·ReLU(q_idx[t,j]·k_idx[s]),  π = softmax over V_t of I
//   KL_t = Σ_{s∈V_t} p·(ln p − ln π), 0·ln 0 = 0, no eps, no clipping
struct IndexerLossDenseParams {
  // Teacher (main attention, detached)
  TensorView q;         // [s_q, h_q, d_qk] bf16 | f32
  TensorView kv;        // [s_kv, d_qk] bf16 | f32
  TensorView lse;       // [s_q, h_q] f32, the dense forward's lse over V_t (OP dense_mla_fwd)
  float sm_scale = 0.0f;                 // required (> 0); V3.2: kSoftmaxScaleV32
  LseBase lse_base = LseBase::kNatural;  // base of `lse`
  // Student (lightning indexer, exact mode)
  TensorView q_idx;     // [s_q, h_idx, d_idx] bf16 | f32, post-RoPE (post-Hadamard if enabled)
  TensorView k_idx;     // [s_kv, d_idx] bf16 | f32, post-RoPE (post-Hadamard if enabled)
  TensorView weights;   // [s_q, h_idx] f32, folded weights (OP-IDXPREP weights_out)
  TensorView ks;        // [s_q] i32, first key of V_t (0 ≤ ks)
  TensorView ke;        // [s_q] i32, one past the last key (ke ≤ s_kv)
  TensorView row_mask;  // [s_q] u8 | i32, optional: 0 = padding row (no loss, no gradient,
                        // not counted in N)
  LossReduction reduction = LossReduction::kSum;
  float coefficient = 1.0f;  // c
  // Outputs (f32 | f64)
  TensorView loss;      // [1], out: L
  TensorView row_kl;    // [s_q], out, optional: KL_t (unscaled; 0 for masked and empty rows)
  TensorView dq_idx;    // [s_q, h_idx, d_idx], out, optional: ∂L/∂q_idx
  TensorView dk_idx;    // [s_kv, d_idx], out, optional: ∂L/∂k_idx
  TensorView dweights;  // [s_q, h_idx], out, optional: ∂L/∂weights
};

// ---- OP-LOSS-SPARSE ------------------------------------------------------------------------------

// Sparse-stage loss (SPEC §8.3): V_t = S_t, the valid slots of indices[t] exactly as in the sparse
// forward (slot i valid iff i < topk_length[t] when given and 0 ≤ indices[t,i] < s_kv; −1 and
// other out-of-range values are invalid). Duplicate valid indices follow index-list semantics
// (every occurrence counts, as in the sparse forward; top-k never produces them).
//   teacher (D8)  p[t,i] = (1/h_q)·Σ_h exp(sm_scale·q[t,h]·kv[idx_i] − lse[t,h]),
//                 lse = the sparse forward's lse over S_t (OP sparse_mla_fwd)
// Everything else as IndexerLossDenseParams.
struct IndexerLossSparseParams {
  TensorView q;            // [s_q, h_q, d_qk] bf16 | f32
  TensorView kv;           // [s_kv, d_qk] bf16 | f32
  TensorView lse;          // [s_q, h_q] f32, the sparse forward's lse over S_t
  float sm_scale = 0.0f;
  LseBase lse_base = LseBase::kNatural;
  TensorView indices;      // [s_q, topk] i32 absolute key rows
  TensorView topk_length;  // [s_q] i32, optional (0 ≤ topk_length[t] ≤ topk)
  SparseTeacher teacher = SparseTeacher::kSparseHeadMean;
  TensorView q_idx;        // [s_q, h_idx, d_idx] bf16 | f32
  TensorView k_idx;        // [s_kv, d_idx] bf16 | f32
  TensorView weights;      // [s_q, h_idx] f32
  TensorView row_mask;     // [s_q] u8 | i32, optional
  LossReduction reduction = LossReduction::kSum;
  float coefficient = 1.0f;
  TensorView loss;         // [1] f32 | f64, out
  TensorView row_kl;       // [s_q] f32 | f64, out, optional
  TensorView dq_idx;       // [s_q, h_idx, d_idx] f32 | f64, out, optional
  TensorView dk_idx;       // [s_kv, d_idx] f32 | f64, out, optional
  TensorView dweights;     // [s_q, h_idx] f32 | f64, out, optional
};

// The three calls (see dsa/ops.hpp) and the CPU reference.
#define DSA_DECLARE_LOSS_OP(Params)                                                         \
  DSA_API Status supports(const Params& params);                                            \
  DSA_API size_t workspace_size(const Params& params);                                      \
  DSA_API Status run(const Params& params, void* workspace = nullptr, size_t workspace_bytes = 0, \
                     Stream stream = nullptr);
DSA_DECLARE_LOSS_OP(IndexerLossDenseParams)
DSA_DECLARE_LOSS_OP(IndexerLossSparseParams)
#undef DSA_DECLARE_LOSS_OP

namespace ref {
DSA_API Status run(const IndexerLossDenseParams& params, Accum accum = Accum::kF32);
DSA_API Status run(const IndexerLossSparseParams& params, Accum accum = Accum::kF32);
}  // namespace ref

}  // namespace dsa
