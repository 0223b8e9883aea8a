// PLACEHOLDER — replaced by the real validator of rope_table.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const RopeTableParams&, ArgCheck&) {}
}  // namespace dsa::detail
