// PLACEHOLDER — replaced by the real validator of indexer_logits.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const IndexerLogitsParams&, ArgCheck&) {}
}  // namespace dsa::detail
