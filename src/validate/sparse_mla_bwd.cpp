// Validator of OP-SMLA-BWD, the sparse MLA backward (SPEC §6.5). Shapes, dtypes, strides and
// scalars only; the CPU reference checks the values (topk_length, lse).
#include <cmath>

#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const SparseMlaBwdParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"s_q", "h_q", "d_qk"}, kBF16 | kF32);
  c.tensor("kv", p.kv, {"s_kv", "d_qk"}, kBF16 | kF32);
  c.tensor("indices", p.indices, {"s_q", "topk"}, kI32);
  c.tensor("topk_length", p.topk_length, {"s_q"}, kI32, Need::kOptional);
  c.require(!p.attn_sink.present(), StatusCode::kInvalidArgument,
            "attn_sink is given, but the attention sink is not supported in backward (v1, SPEC §6.5); "
            "leave it absent");
  c.tensor("out", p.out, {"s_q", "h_q", "d_v"}, kBF16 | kF32);
  c.tensor("lse", p.lse, {"s_q", "h_q"}, kF32);
  c.tensor("dout", p.dout, {"s_q", "h_q", "d_v"}, kBF16 | kF32);
  c.tensor("dq", p.dq, {"s_q", "h_q", "d_qk"}, kBF16 | kF32);
  c.tensor("dkv", p.dkv, {"s_kv", "d_qk"}, kBF16 | kF32);
  if (c.ok()) {
    c.require(c.dim("d_v") <= c.dim("d_qk"), StatusCode::kUnsupportedShape,
              "out.shape[2] = d_v = %lld exceeds d_qk = %lld (v is the first d_v dims of kv)",
              (long long)c.dim("d_v"), (long long)c.dim("d_qk"));
    c.require(c.dim("d_v") >= 1, StatusCode::kUnsupportedShape, "out.shape[2] = d_v = %lld must be ≥ 1",
              (long long)c.dim("d_v"));
  }
  c.require(std::isfinite(p.sm_scale) && p.sm_scale > 0.0f, StatusCode::kInvalidArgument,
            "sm_scale = %g must be finite and > 0 (V3.2: 0.1352337789, SPEC §3.2)", (double)p.sm_scale);
  c.require(p.lse_base == LseBase::kNatural || p.lse_base == LseBase::kBase2, StatusCode::kInvalidArgument,
            "lse_base = %d is not an LseBase", (int)p.lse_base);
  // Outputs: distinct elements, and no aliasing of any input or of each other.
  require_distinct_elements(c, "dq", p.dq);
  require_distinct_elements(c, "dkv", p.dkv);
  const char* in_names[] = {"q", "kv", "indices", "topk_length", "out", "lse", "dout"};
  const TensorView* ins[] = {&p.q, &p.kv, &p.indices, &p.topk_length, &p.out, &p.lse, &p.dout};
  for (int i = 0; i < 7; ++i) {
    require_no_overlap(c, "dq", p.dq, in_names[i], *ins[i]);
    require_no_overlap(c, "dkv", p.dkv, in_names[i], *ins[i]);
  }
  require_no_overlap(c, "dkv", p.dkv, "dq", p.dq);
}

}  // namespace dsa::detail
