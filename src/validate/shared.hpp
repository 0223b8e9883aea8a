// src/validate/shared.hpp — validator pieces shared by ops that combine others (indexer_topk):
// the rules live in one place, and a fused op's messages name its own arguments.
#pragma once

#include "common/op_list.hpp"

namespace dsa::detail {

// OP-IDXLOGITS's rules for q, k, k_scale, weights, ks, ke (binds s_q, h_idx, d_idx, s_kv); the
// logits view is checked by the caller.
void validate_indexer_logits_inputs(const IndexerLogitsParams& p, ArgCheck& c);

// OP-TOPK's rules for indices, out_scores, k_eff and the index domain, with the row count bound
// to the symbol `rows` (binds k).
void validate_topk_outputs(const TopKParams& p, const char* rows, ArgCheck& c);

}  // namespace dsa::detail
