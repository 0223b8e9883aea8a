// Validator of the OP-ROPE table (SPEC §3.3): two fp32 outputs [max_pos, rope_dim / 2].
#include <cmath>

#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const RopeTableParams& p, ArgCheck& c) {
  c.require(p.rope_dim > 0 && p.rope_dim % 2 == 0, StatusCode::kInvalidArgument,
            "rope_dim = %d must be positive and even", p.rope_dim);
  c.tensor("cos", p.cos, {"max_pos", "half"}, kF32);
  c.require(c.dim("half") * 2 == p.rope_dim, StatusCode::kInvalidArgument,
            "cos.shape[1] = %lld, expected rope_dim / 2 = %d", (long long)c.dim("half"), p.rope_dim / 2);
  c.tensor("sin", p.sin, {"max_pos", "half"}, kF32);
  c.require(std::isfinite(p.base) && p.base > 1.0f, StatusCode::kInvalidArgument,
            "base = %g must be finite and > 1", (double)p.base);
  c.require(std::isfinite(p.yarn_factor) && p.yarn_factor >= 1.0f, StatusCode::kInvalidArgument,
            "yarn_factor = %g must be finite and >= 1 (1 disables YaRN)", (double)p.yarn_factor);
  if (p.yarn_factor != 1.0f) {
    c.require(p.original_max_position > 0, StatusCode::kInvalidArgument,
              "original_max_position = %lld must be positive", (long long)p.original_max_position);
    c.require(std::isfinite(p.beta_slow) && p.beta_slow > 0.0f, StatusCode::kInvalidArgument,
              "beta_slow = %g must be finite and > 0", (double)p.beta_slow);
    c.require(std::isfinite(p.beta_fast) && p.beta_fast > p.beta_slow, StatusCode::kInvalidArgument,
              "beta_fast = %g must be finite and > beta_slow = %g", (double)p.beta_fast,
              (double)p.beta_slow);
  }
  require_no_overlap(c, "sin", p.sin, "cos", p.cos);
  require_distinct_elements(c, "cos", p.cos);
  require_distinct_elements(c, "sin", p.sin);
}

}  // namespace dsa::detail
