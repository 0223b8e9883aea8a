// src/validate/shared.hpp — validator pieces shared by ops that combine others (indexer_topk):
// the rules live in one place, and a fused op's messages name its own arguments.
//
// These take the caller's own params (any struct with the named fields), so a fused op's
// validator declares its own views without copying them into the other ops' params structs.
#pragma once

#include "common/op_list.hpp"

namespace dsa::detail {

// OP-IDXLOGITS's rules for q, k, k_scale, weights, ks, ke (binds s_q, h_idx, d_idx, s_kv); the
// logits view is checked by the caller.
template <class P>
void validate_indexer_logits_inputs(const P& p, ArgCheck& c) {
  c.tensor("q", p.q, {"s_q", "h_idx", "d_idx"}, kE4M3 | kBF16 | kF32);
  c.tensor("k", p.k, {"s_kv", "d_idx"}, kE4M3 | kBF16 | kF32);
  if (!c.ok()) return;
  const bool fp8 = p.q.dtype == DType::kE4M3;
  c.require(fp8 == (p.k.dtype == DType::kE4M3), StatusCode::kUnsupportedDtype,
            "q.dtype = %s and k.dtype = %s: FP8 mode needs both e4m3, exact mode both bf16 or f32",
            dtype_name(p.q.dtype), dtype_name(p.k.dtype));
  c.require(c.dim("h_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[1] = h_idx = %lld, expected >= 1",
            (long long)c.dim("h_idx"));
  c.require(c.dim("d_idx") >= 1, StatusCode::kUnsupportedShape, "q.shape[2] = d_idx = %lld, expected >= 1",
            (long long)c.dim("d_idx"));
  c.require(c.dim("s_kv") <= INT32_MAX, StatusCode::kUnsupportedShape,
            "k.shape[0] = s_kv = %lld exceeds the int32 key ranges", (long long)c.dim("s_kv"));
  if (fp8) {
    c.tensor("k_scale", p.k_scale, {"s_kv"}, kF32);
  } else {
    c.require(!p.k_scale.present(), StatusCode::kInvalidArgument,
              "k_scale is given but q and k are %s/%s (exact mode takes no key scale; FP8 mode needs e4m3)",
              dtype_name(p.q.dtype), dtype_name(p.k.dtype));
  }
  c.tensor("weights", p.weights, {"s_q", "h_idx"}, kF32);
  c.tensor("ks", p.ks, {"s_q"}, kI32);
  c.tensor("ke", p.ke, {"s_q"}, kI32);
}

// OP-TOPK's rules for indices, out_scores, k_eff and the index domain, with the row count bound
// to the symbol `rows` (binds k). The paged-slot domain's own arguments are checked by OP-TOPK.
template <class P>
void validate_topk_outputs(const P& p, const char* rows_sym, ArgCheck& c) {
  c.tensor("indices", p.indices, {rows_sym, "k"}, kI32);
  c.tensor("out_scores", p.out_scores, {rows_sym, "k"}, kF32, Need::kOptional);
  c.tensor("k_eff", p.k_eff, {rows_sym}, kI32, Need::kOptional);
  c.require(p.domain == IndexDomain::kAbsolute || p.domain == IndexDomain::kRelative ||
                p.domain == IndexDomain::kPagedSlot,
            StatusCode::kInvalidArgument, "domain = %d is not an IndexDomain", (int)p.domain);
}

}  // namespace dsa::detail
