// PLACEHOLDER — replaced by the real CPU reference of rope_table.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const RopeTableParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "rope_table: CPU reference not written yet");
}
}  // namespace dsa::detail
