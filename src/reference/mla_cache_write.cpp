// PLACEHOLDER — replaced by the real CPU reference of mla_cache_write.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const MlaCacheWriteParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "mla_cache_write: CPU reference not written yet");
}
}  // namespace dsa::detail
