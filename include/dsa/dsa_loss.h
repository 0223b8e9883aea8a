/* dsa/dsa_loss.h — C ABI of the indexer KL losses (SPEC §8; C++: dsa/training_loss.hpp).
 * Included by dsa/dsa_training.h (itself included at the end of dsa/dsa.h); including it alone
 * pulls in dsa/dsa.h. Conventions as in dsa/dsa.h: fields in the order of the C++ struct,
 * dsa_<op>_params_init() first, five calls per op. */
#ifndef DSA_DSA_LOSS_H_
#define DSA_DSA_LOSS_H_

#include "dsa/dsa.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t dsa_loss_reduction; /* dsa::LossReduction (SPEC D4) */
#define DSA_LOSS_REDUCTION_SUM 0    /* L = c·Σ_t KL_t (default) */
#define DSA_LOSS_REDUCTION_MEAN 1   /* L = (c/N)·Σ_t KL_t, N = valid rows (≥ 1) */

typedef int32_t dsa_sparse_teacher;          /* dsa::SparseTeacher (SPEC D8, §8.3) */
#define DSA_SPARSE_TEACHER_SPARSE_HEAD_MEAN 0    /* D8 (default) */
#define DSA_SPARSE_TEACHER_DENSE_RENORMALIZED 1  /* reserved: DSA_STATUS_NOT_IMPLEMENTED */

/* OP-LOSS-DENSE: dense warm-up KL loss and its gradients w.r.t. the post-RoPE indexer q/k and
 * the folded weights. */
typedef struct dsa_indexer_loss_dense_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;                 /* [s_q, h_q, d_qk] bf16 | f32 (teacher, detached) */
  dsa_tensor kv;                /* [s_kv, d_qk] bf16 | f32 */
  dsa_tensor lse;               /* [s_q, h_q] f32, the dense forward's lse */
  float sm_scale;               /* 0: required (> 0) */
  dsa_lse_base lse_base;        /* DSA_LSE_BASE_NATURAL */
  dsa_tensor q_idx;             /* [s_q, h_idx, d_idx] bf16 | f32 */
  dsa_tensor k_idx;             /* [s_kv, d_idx] bf16 | f32 */
  dsa_tensor weights;           /* [s_q, h_idx] f32 (folded) */
  dsa_tensor ks;                /* [s_q] i32 */
  dsa_tensor ke;                /* [s_q] i32 */
  dsa_tensor row_mask;          /* [s_q] u8 | i32, optional (0 = padding row) */
  dsa_loss_reduction reduction; /* DSA_LOSS_REDUCTION_SUM */
  float coefficient;            /* 1 */
  dsa_tensor loss;              /* [1] f32 | f64, out */
  dsa_tensor row_kl;            /* [s_q] f32 | f64, out, optional */
  dsa_tensor dq_idx;            /* [s_q, h_idx, d_idx] f32 | f64, out, optional */
  dsa_tensor dk_idx;            /* [s_kv, d_idx] f32 | f64, out, optional */
  dsa_tensor dweights;          /* [s_q, h_idx] f32 | f64, out, optional */
} dsa_indexer_loss_dense_params;

/* OP-LOSS-SPARSE: the same over the selected set S_t (indices as in the sparse forward). */
typedef struct dsa_indexer_loss_sparse_params {
  uint32_t struct_size;
  uint32_t abi_version;
  dsa_tensor q;                 /* [s_q, h_q, d_qk] bf16 | f32 */
  dsa_tensor kv;                /* [s_kv, d_qk] bf16 | f32 */
  dsa_tensor lse;               /* [s_q, h_q] f32, the sparse forward's lse */
  float sm_scale;               /* 0: required (> 0) */
  dsa_lse_base lse_base;        /* DSA_LSE_BASE_NATURAL */
  dsa_tensor indices;           /* [s_q, topk] i32; −1 / out of range = invalid slot */
  dsa_tensor topk_length;       /* [s_q] i32, optional */
  dsa_sparse_teacher teacher;   /* DSA_SPARSE_TEACHER_SPARSE_HEAD_MEAN */
  dsa_tensor q_idx;             /* [s_q, h_idx, d_idx] bf16 | f32 */
  dsa_tensor k_idx;             /* [s_kv, d_idx] bf16 | f32 */
  dsa_tensor weights;           /* [s_q, h_idx] f32 */
  dsa_tensor row_mask;          /* [s_q] u8 | i32, optional */
  dsa_loss_reduction reduction; /* DSA_LOSS_REDUCTION_SUM */
  float coefficient;            /* 1 */
  dsa_tensor loss;              /* [1] f32 | f64, out */
  dsa_tensor row_kl;            /* [s_q] f32 | f64, out, optional */
  dsa_tensor dq_idx;            /* [s_q, h_idx, d_idx] f32 | f64, out, optional */
  dsa_tensor dk_idx;            /* [s_kv, d_idx] f32 | f64, out, optional */
  dsa_tensor dweights;          /* [s_q, h_idx] f32 | f64, out, optional */
} dsa_indexer_loss_sparse_params;

DSA_DECLARE_C_OP(indexer_loss_dense)
DSA_DECLARE_C_OP(indexer_loss_sparse)

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* DSA_DSA_LOSS_H_ */
