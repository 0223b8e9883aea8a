// PLACEHOLDER — replaced by the real validator of sparse_mla_fwd.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const SparseMlaFwdParams&, ArgCheck&) {}
}  // namespace dsa::detail
