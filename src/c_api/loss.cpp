// src/c_api/loss.cpp — the C ABI of the indexer KL losses (dsa/dsa_loss.h). Field lists in the
// order of dsa/training_loss.hpp; abi.hpp checks both layouts and defines the entry points.
#include "c_api/abi.hpp"

#define DSA_C_FIELDS_indexer_loss_dense(F)                                                       \
  F(q) F(kv) F(lse) F(sm_scale) F(lse_base) F(q_idx) F(k_idx) F(weights) F(ks) F(ke) F(row_mask) \
  F(reduction) F(coefficient) F(loss) F(row_kl) F(dq_idx) F(dk_idx) F(dweights)
#define DSA_C_FIELDS_indexer_loss_sparse(F)                                                  \
  F(q) F(kv) F(lse) F(sm_scale) F(lse_base) F(indices) F(topk_length) F(teacher) F(q_idx)   \
  F(k_idx) F(weights) F(row_mask) F(reduction) F(coefficient) F(loss) F(row_kl) F(dq_idx)    \
  F(dk_idx) F(dweights)

DSA_C_DEFINE_OP(dsa::IndexerLossDenseParams, indexer_loss_dense)
DSA_C_DEFINE_OP(dsa::IndexerLossSparseParams, indexer_loss_sparse)
