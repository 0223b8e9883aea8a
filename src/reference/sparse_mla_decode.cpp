// PLACEHOLDER — replaced by the real CPU reference of sparse_mla_decode.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const SparseMlaDecodeParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "sparse_mla_decode: CPU reference not written yet");
}
}  // namespace dsa::detail
