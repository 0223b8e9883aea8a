// PLACEHOLDER — replaced by the real CPU reference of sparse_mla_fwd.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const SparseMlaFwdParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "sparse_mla_fwd: CPU reference not written yet");
}
}  // namespace dsa::detail
