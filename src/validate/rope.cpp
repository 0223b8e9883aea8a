// Validator of OP-ROPE apply (SPEC §3.3, §4.2 step 2): bf16 x/out [n, heads, d], i32 positions,
// fp32 tables [max_pos, rope_dim / 2]; the rotated slice [rope_offset, rope_offset + rope_dim).
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const RopeParams& p, ArgCheck& c) {
  c.require(p.style == RopeStyle::kNonInterleaved || p.style == RopeStyle::kInterleaved,
            StatusCode::kInvalidArgument, "style = %d is not a RopeStyle", (int)p.style);
  c.require(p.rope_dim > 0 && p.rope_dim % 2 == 0, StatusCode::kInvalidArgument,
            "rope_dim = %d must be positive and even", p.rope_dim);
  c.require(p.rope_offset >= 0, StatusCode::kInvalidArgument, "rope_offset = %d is negative",
            p.rope_offset);
  c.tensor("x", p.x, {"n", "heads", "d"}, kBF16);
  c.require(c.dim("d") < 0 || (int64_t)p.rope_offset + p.rope_dim <= c.dim("d"),
            StatusCode::kInvalidArgument,
            "rope_offset + rope_dim = %d + %d exceeds the head dimension d = %lld (x.shape[2])",
            p.rope_offset, p.rope_dim, (long long)c.dim("d"));
  c.tensor("out", p.out, {"n", "heads", "d"}, kBF16);
  c.tensor("positions", p.positions, {"n"}, kI32);
  c.tensor("cos", p.cos, {"max_pos", "half"}, kF32);
  c.require(c.dim("half") < 0 || c.dim("half") * 2 == p.rope_dim, StatusCode::kInvalidArgument,
            "cos.shape[1] = %lld, expected rope_dim / 2 = %d", (long long)c.dim("half"), p.rope_dim / 2);
  c.tensor("sin", p.sin, {"max_pos", "half"}, kF32);
  require_no_overlap(c, "out", p.out, "x", p.x, /*in_place_ok=*/true);
  require_no_overlap(c, "out", p.out, "positions", p.positions);
  require_no_overlap(c, "out", p.out, "cos", p.cos);
  require_no_overlap(c, "out", p.out, "sin", p.sin);
  require_distinct_elements(c, "out", p.out);
}

}  // namespace dsa::detail
