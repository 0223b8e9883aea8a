// dsa/training.hpp — params and entry points of the training ops (SPEC §6.5, §8): sparse MLA
// backward, the indexer KL losses and the indexer backward. Included by dsa/ops.hpp.
#pragma once

#include "dsa/types.hpp"

namespace dsa {
// (filled by the training-path work: issue 3)
}  // namespace dsa
