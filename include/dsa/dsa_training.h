/* dsa/dsa_training.h — C ABI of the training ops (C++: dsa/training.hpp): the sparse MLA backward
 * (OP-SMLA-BWD, SPEC §6.5) and the indexer backward (OP-IDX-BWD, SPEC §8.4); the losses are in
 * dsa/dsa_loss.h. Included at the end of dsa/dsa.h; including it alone pulls in dsa/dsa.h.
 * Conventions as in dsa/dsa.h: fields in the order of the C++ struct, dsa_<op>_params_init()
 * first, five calls per op (params_init, supports, workspace_size, run, run_reference). */
#ifndef DSA_DSA_TRAINING_H_
#define DSA_DSA_TRAINING_H_

#include "dsa/dsa.h"

#ifdef __cplusplus
extern "C" {
#endif

/* OP-SMLA-BWD: dq and dkv of the sparse MLA forward (MQA mode). Slot validity as in the forward;
 * duplicates count once per occurrence; dkv accumulated in fp32 (deterministic) and cast once. */
typedef struct dsa_sparse_mla_bwd_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;           /* [s_q, h_q, d_qk] bf16 | f32 */
  dsa_tensor kv;          /* [s_kv, d_qk] bf16 | f32 */
  dsa_tensor indices;     /* [s_q, topk] i32 */
  dsa_tensor topk_length; /* [s_q] i32, optional; 0 <= topk_length[t] <= topk */
  dsa_tensor attn_sink;   /* must be absent (all zero): no sink in backward (v1) */
  dsa_tensor out;         /* [s_q, h_q, d_v] bf16 | f32, the forward's output */
  dsa_tensor lse;         /* [s_q, h_q] f32, the forward's lse (+inf for empty rows) */
  dsa_tensor dout;        /* [s_q, h_q, d_v] bf16 | f32 */
  dsa_tensor dq;          /* [s_q, h_q, d_qk] bf16 | f32, out */
  dsa_tensor dkv;         /* [s_kv, d_qk] bf16 | f32, out */
  float sm_scale;         /* 0: required (> 0) */
  dsa_lse_base lse_base;  /* DSA_LSE_BASE_NATURAL */
} dsa_sparse_mla_bwd_params;

/* OP-IDX-BWD: G = dL/dI → dq_raw, dk_raw, dw_raw through the weight fold, the Hadamard (if
 * `hadamard`) and the inverse RoPE. Dense G ([s_q, s_kv] with optional ks/ke) when grad_indices
 * is absent; sparse G ([s_q, k] values at grad_indices [s_q, k]) when it is given; or the
 * transforms-only form (dq_post, dk_post, dw_post given, no G). */
typedef struct dsa_indexer_bwd_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;            /* [s_q, h_idx, 128] bf16 | f32, post-RoPE (post-Hadamard) */
  dsa_tensor k;            /* [s_kv, 128] bf16 | f32, post-RoPE (post-Hadamard) */
  dsa_tensor weights;      /* [s_q, h_idx] f32, folded */
  dsa_tensor grad;         /* [s_q, s_kv] (dense) | [s_q, k] (sparse) f32 */
  dsa_tensor grad_indices; /* [s_q, k] i32, optional: selects the sparse form */
  dsa_tensor ks;           /* [s_q] i32, optional, dense form only (default 0) */
  dsa_tensor ke;           /* [s_q] i32, optional, dense form only (default s_kv) */
  dsa_tensor q_positions;  /* [s_q] i32 */
  dsa_tensor k_positions;  /* [s_kv] i32 */
  dsa_tensor rope_cos;     /* [max_pos, 32] f32 */
  dsa_tensor rope_sin;     /* [max_pos, 32] f32 */
  uint8_t hadamard;        /* 0 */
  dsa_tensor dq_raw;       /* [s_q, h_idx, 128] f32 | bf16, out */
  dsa_tensor dk_raw;       /* [s_kv, 128] f32 | bf16, out */
  dsa_tensor dw_raw;       /* [s_q, h_idx] f32 | bf16, out */
  /* ABI 1.1: the transforms-only form (all three given, grad absent): the loss ops' post-transform
   * gradients → dq_raw, dk_raw, dw_raw through the fold, Hadamard and inverse RoPE only. The
   * minimal struct_size stays the ABI 1.0 one (ends after dw_raw): older callers get them absent. */
  dsa_tensor dq_post;      /* [s_q, h_idx, 128] f32, optional */
  dsa_tensor dk_post;      /* [s_kv, 128] f32, optional */
  dsa_tensor dw_post;      /* [s_q, h_idx] f32, optional (w.r.t. the folded weights) */
} dsa_indexer_bwd_params;

DSA_API dsa_status dsa_sparse_mla_bwd_params_init(dsa_sparse_mla_bwd_params* params);
DSA_API dsa_status dsa_sparse_mla_bwd_supports(const dsa_sparse_mla_bwd_params* params);
DSA_API dsa_status dsa_sparse_mla_bwd_workspace_size(const dsa_sparse_mla_bwd_params* params, size_t* bytes);
DSA_API dsa_status dsa_sparse_mla_bwd_run(const dsa_sparse_mla_bwd_params* params, void* workspace,
                                          size_t workspace_bytes, void* stream);
DSA_API dsa_status dsa_sparse_mla_bwd_run_reference(const dsa_sparse_mla_bwd_params* params, dsa_accum accum);

DSA_API dsa_status dsa_indexer_bwd_params_init(dsa_indexer_bwd_params* params);
DSA_API dsa_status dsa_indexer_bwd_supports(const dsa_indexer_bwd_params* params);
DSA_API dsa_status dsa_indexer_bwd_workspace_size(const dsa_indexer_bwd_params* params, size_t* bytes);
DSA_API dsa_status dsa_indexer_bwd_run(const dsa_indexer_bwd_params* params, void* workspace,
                                       size_t workspace_bytes, void* stream);
DSA_API dsa_status dsa_indexer_bwd_run_reference(const dsa_indexer_bwd_params* params, dsa_accum accum);

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "dsa/dsa_loss.h"

#endif /* DSA_DSA_TRAINING_H_ */
