// Validators of OP-IDXLOGITS prefill (SPEC §4.2 step 7, §4.6, §12.3). The key ranges [ks, ke) are
// values, checked by the reference (validate never reads contents).
#include "validate/shared.hpp"

namespace dsa::detail {

void validate(const IndexerLogitsParams& p, ArgCheck& c) {
  validate_indexer_logits_inputs(p, c);
  c.tensor("logits", p.logits, {"s_q", "s_kv"}, kF32);
}

}  // namespace dsa::detail
