// PLACEHOLDER — replaced by the real validator of sparse_mla_decode.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const SparseMlaDecodeParams&, ArgCheck&) {}
}  // namespace dsa::detail
