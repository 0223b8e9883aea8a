// PLACEHOLDER — replaced by the real CPU reference of dense_mla_fwd.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const DenseMlaFwdParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "dense_mla_fwd: CPU reference not written yet");
}
}  // namespace dsa::detail
