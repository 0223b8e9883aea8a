// PLACEHOLDER — replaced by the real CPU reference of hadamard.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const HadamardParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "hadamard: CPU reference not written yet");
}
}  // namespace dsa::detail
