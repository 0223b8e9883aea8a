// PLACEHOLDER — replaced by the real CPU reference of indexer_logits.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const IndexerLogitsParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "indexer_logits: CPU reference not written yet");
}
}  // namespace dsa::detail
