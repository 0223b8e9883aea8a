// PLACEHOLDER — replaced by the real CPU reference of indexer_prep.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const IndexerPrepParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "indexer_prep: CPU reference not written yet");
}
}  // namespace dsa::detail
