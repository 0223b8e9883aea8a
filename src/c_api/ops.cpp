// src/c_api/ops.cpp — the C ABI of the inference ops (dsa/dsa.h). One field list per op, in the
// order of its struct in dsa/params.hpp; abi.hpp checks both layouts and defines the entry points.
#include "c_api/abi.hpp"

#define DSA_C_FIELDS_rope_table(F) \
  F(cos) F(sin) F(rope_dim) F(base) F(yarn_factor) F(original_max_position) F(beta_fast) F(beta_slow)
#define DSA_C_FIELDS_rope(F) \
  F(x) F(out) F(positions) F(cos) F(sin) F(style) F(rope_offset) F(rope_dim) F(inverse)
#define DSA_C_FIELDS_hadamard(F) F(x) F(out)
#define DSA_C_FIELDS_quantize(F) F(x) F(codes) F(scales) F(scale_format)
#define DSA_C_FIELDS_dequantize(F) F(codes) F(scales) F(out)
#define DSA_C_FIELDS_indexer_prep(F)                                                            \
  F(q) F(weights) F(k) F(positions) F(rope_cos) F(rope_sin) F(mode) F(hadamard) F(scale_format) \
  F(q_out) F(weights_out) F(k_out) F(k_scale_out) F(k_cache) F(slot_mapping) F(page_block_size)
#define DSA_C_FIELDS_indexer_logits(F) \
  F(q) F(k) F(k_scale) F(weights) F(ks) F(ke) F(logits) F(clean_logits)
#define DSA_C_FIELDS_indexer_paged_logits(F) \
  F(q) F(k_cache) F(weights) F(context_lens) F(block_table) F(logits) F(page_block_size)
#define DSA_C_FIELDS_topk(F)                                                                  \
  F(scores) F(ks) F(ke) F(indices) F(out_scores) F(k_eff) F(domain) F(block_table) F(rows_per_batch) \
  F(page_block_size) F(sorted)
#define DSA_C_FIELDS_mla_cache_write(F) F(kv) F(slot_mapping) F(cache) F(scale_format)
#define DSA_C_FIELDS_sparse_mla_fwd(F) \
  F(q) F(kv) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(max_logits) F(sm_scale) F(lse_base)
#define DSA_C_FIELDS_sparse_mla_decode(F) \
  F(q) F(cache) F(indices) F(topk_length) F(attn_sink) F(out) F(lse) F(sm_scale) F(lse_base) F(num_splits)
#define DSA_C_FIELDS_dense_mla_fwd(F) \
  F(q) F(kv) F(ks) F(ke) F(out) F(lse) F(max_logits) F(sm_scale) F(lse_base)
#define DSA_C_FIELDS_indexer_topk(F)                                                                 \
  F(q) F(k) F(k_scale) F(weights) F(ks) F(ke) F(indices) F(out_scores) F(k_eff) F(domain) F(sorted) \
  F(chunk_rows)

DSA_C_DEFINE_OP(dsa::RopeTableParams, rope_table)
DSA_C_DEFINE_OP(dsa::RopeParams, rope)
DSA_C_DEFINE_OP(dsa::HadamardParams, hadamard)
DSA_C_DEFINE_OP(dsa::QuantizeParams, quantize)
DSA_C_DEFINE_OP(dsa::DequantizeParams, dequantize)
DSA_C_DEFINE_OP(dsa::IndexerPrepParams, indexer_prep)
DSA_C_DEFINE_OP(dsa::IndexerLogitsParams, indexer_logits)
DSA_C_DEFINE_OP(dsa::IndexerPagedLogitsParams, indexer_paged_logits)
DSA_C_DEFINE_OP(dsa::TopKParams, topk)
DSA_C_DEFINE_OP(dsa::MlaCacheWriteParams, mla_cache_write)
DSA_C_DEFINE_OP(dsa::SparseMlaFwdParams, sparse_mla_fwd)
DSA_C_DEFINE_OP(dsa::SparseMlaDecodeParams, sparse_mla_decode)
DSA_C_DEFINE_OP(dsa::DenseMlaFwdParams, dense_mla_fwd)
DSA_C_DEFINE_OP(dsa::IndexerTopKParams, indexer_topk)
