// PLACEHOLDER — replaced by the real validator of dense_mla_fwd.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const DenseMlaFwdParams&, ArgCheck&) {}
}  // namespace dsa::detail
