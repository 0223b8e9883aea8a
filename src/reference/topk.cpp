// PLACEHOLDER — replaced by the real CPU reference of topk.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const TopKParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "topk: CPU reference not written yet");
}
}  // namespace dsa::detail
