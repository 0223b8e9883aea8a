// PLACEHOLDER — replaced by the real CPU reference of indexer_paged_logits.
#include "common/op_list.hpp"

namespace dsa::detail {
Status reference(const IndexerPagedLogitsParams&, Accum) {
  return Status(StatusCode::kNotImplemented, "indexer_paged_logits: CPU reference not written yet");
}
}  // namespace dsa::detail
