// PLACEHOLDER — replaced by the real validator of mla_cache_write.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const MlaCacheWriteParams&, ArgCheck&) {}
}  // namespace dsa::detail
