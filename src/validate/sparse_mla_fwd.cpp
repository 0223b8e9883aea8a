// Validator of OP-SMLA-FWD, sparse MLA forward in MQA mode (SPEC §6.2–6.3).
#include <cmath>

#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const SparseMlaFwdParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"s_q", "h_q", "d_qk"}, kBF16 | kF32);
  c.tensor("kv", p.kv, {"s_kv", "d_qk"}, kBF16 | kF32);
  c.require(p.kv.dtype == p.q.dtype, StatusCode::kUnsupportedDtype, "kv.dtype = %s does not match q.dtype = %s",
            dtype_name(p.kv.dtype), dtype_name(p.q.dtype));
  c.require(c.dim("d_qk") >= 1, StatusCode::kUnsupportedShape, "q.shape[2] = d_qk = %lld must be at least 1",
            (long long)c.dim("d_qk"));
  c.tensor("indices", p.indices, {"s_q", "topk"}, kI32);
  c.require(c.dim("topk") >= 1, StatusCode::kUnsupportedShape, "indices.shape[1] = topk = %lld must be at least 1",
            (long long)c.dim("topk"));
  c.tensor("topk_length", p.topk_length, {"s_q"}, kI32, Need::kOptional);
  c.tensor("attn_sink", p.attn_sink, {"h_q"}, kF32, Need::kOptional);
  c.tensor("out", p.out, {"s_q", "h_q", "d_v"}, kBF16 | kF32);
  c.require(c.dim("d_v") >= 1 && c.dim("d_v") <= c.dim("d_qk"), StatusCode::kUnsupportedShape,
            "out.shape[2] = d_v = %lld must lie in [1, d_qk = %lld]", (long long)c.dim("d_v"),
            (long long)c.dim("d_qk"));
  c.tensor("lse", p.lse, {"s_q", "h_q"}, kF32);
  c.tensor("max_logits", p.max_logits, {"s_q", "h_q"}, kF32, Need::kOptional);
  c.require(std::isfinite(p.sm_scale) && p.sm_scale > 0.0f, StatusCode::kInvalidArgument,
            "sm_scale = %g must be finite and > 0 (V3.2: 0.1352337789)", (double)p.sm_scale);
  c.require(p.lse_base == LseBase::kNatural || p.lse_base == LseBase::kBase2, StatusCode::kInvalidArgument,
            "lse_base = %d is not a LseBase", (int)p.lse_base);
}

}  // namespace dsa::detail
