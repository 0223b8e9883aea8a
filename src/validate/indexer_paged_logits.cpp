// PLACEHOLDER — replaced by the real validator of indexer_paged_logits.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const IndexerPagedLogitsParams&, ArgCheck&) {}
}  // namespace dsa::detail
