// src/c_api/training.cpp — the C ABI of the training ops (dsa/dsa_training.h): sparse MLA backward
// and indexer backward. One field list per op, in the order of its struct in dsa/training.hpp;
// abi.hpp checks both layouts at compile time and defines the five entry points.
#include "c_api/abi.hpp"

#define DSA_C_FIELDS_sparse_mla_bwd(F)                                                          \
  F(q) F(kv) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(dout) F(dq) F(dkv) F(sm_scale) \
  F(lse_base)
#define DSA_C_FIELDS_indexer_bwd(F)                                                                \
  F(q) F(k) F(weights) F(grad) F(grad_indices) F(ks) F(ke) F(q_positions) F(k_positions) F(rope_cos) \
  F(rope_sin) F(hadamard) F(dq_raw) F(dk_raw) F(dw_raw) F(dq_post) F(dk_post) F(dw_post)

// dq_post, dk_post, dw_post were appended in ABI 1.1: the minimal prefix stays the ABI 1.0 one,
// which ends after dw_raw (an older caller's struct; the new fields then default to absent).
namespace dsa::c_abi {
template <>
struct MinSizeCap<dsa_indexer_bwd_params> {
  static constexpr size_t value = offsetof(dsa_indexer_bwd_params, dw_raw) + sizeof(dsa_tensor);
};
}  // namespace dsa::c_abi

DSA_C_DEFINE_OP(dsa::SparseMlaBwdParams, sparse_mla_bwd)
DSA_C_DEFINE_OP(dsa::IndexerBwdParams, indexer_bwd)
