// PLACEHOLDER — replaced by the real validator of indexer_prep.
#include "common/op_list.hpp"

namespace dsa::detail {
void validate(const IndexerPrepParams&, ArgCheck&) {}
}  // namespace dsa::detail
