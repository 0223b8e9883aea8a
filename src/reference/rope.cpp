// PLACEHOLDER — replaced by the real CPU reference of rope.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const RopeParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "rope: CPU reference not written yet");
}
}  // namespace dsa::detail
