// Validator of OP-HAD (SPEC §4.5): bf16 [n, 128] in and out; in place allowed.
#include "common/op_list.hpp"

namespace dsa::detail {

void validate(const HadamardParams& p, ArgCheck& c) {
  c.tensor("x", p.x, {"n", "128"}, kBF16);
  c.tensor("out", p.out, {"n", "128"}, kBF16);
  require_no_overlap(c, "out", p.out, "x", p.x, /*in_place_ok=*/true);
  require_distinct_elements(c, "out", p.out);
}

}  // namespace dsa::detail
