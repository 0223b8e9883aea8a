// Validator of OP-SMLA-DEC, sparse MLA decode from a paged cache (SPEC §6.4, §7.1).
#include <cmath>

#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const SparseMlaDecodeParams& p, ArgCheck& c) {
  c.tensor("q", p.q, {"b", "s_q", "h_q", "576"}, kBF16);
  const bool fp8 = p.cache.dtype == DType::kU8;
  if (fp8 || !p.cache.present())
    c.tensor("cache", p.cache, {"num_blocks", "P", "656"}, kU8 | kBF16);
  else
    c.tensor("cache", p.cache, {"num_blocks", "P", "576"}, kU8 | kBF16);
  c.require(c.dim("P") >= 1, StatusCode::kUnsupportedShape, "cache.shape[1] = P = %lld must be at least 1",
            (long long)c.dim("P"));
  c.tensor("indices", p.indices, {"b", "s_q", "topk"}, kI32);
  c.require(c.dim("topk") >= 1, StatusCode::kUnsupportedShape, "indices.shape[2] = topk = %lld must be at least 1",
            (long long)c.dim("topk"));
  c.tensor("topk_length", p.topk_length, {"b"}, kI32, Need::kOptional);
  c.tensor("attn_sink", p.attn_sink, {"h_q"}, kF32, Need::kOptional);
  c.tensor("out", p.out, {"b", "s_q", "h_q", "512"}, kBF16 | kF32);
  // lse [b, s_q, h_q] may use any non-overlapping strides, so FlashMLA's [b, h_q, s_q] storage
  // is expressible (SPEC §6.4).
  c.tensor("lse", p.lse, {"b", "s_q", "h_q"}, kF32, Need::kRequired, Layout::kAnyStrides);
  require_distinct_elements(c, "lse", p.lse);
  c.require(std::isfinite(p.sm_scale) && p.sm_scale > 0.0f, StatusCode::kInvalidArgument,
            "sm_scale = %g must be finite and > 0 (V3.2: 0.1352337789)", (double)p.sm_scale);
  c.require(p.lse_base == LseBase::kNatural || p.lse_base == LseBase::kBase2, StatusCode::kInvalidArgument,
            "lse_base = %d is not a LseBase", (int)p.lse_base);
  c.require(p.num_splits >= 0, StatusCode::kInvalidArgument,
            "num_splits = %d must be >= 0 (0 automatic, 1 never split, n >= 2 exactly n)", (int)p.num_splits);
}

}  // namespace dsa::detail
