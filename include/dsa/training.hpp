// dsa/training.hpp — params and entry points of the training ops (SPEC §6.5, §8.4): sparse MLA
// backward and the indexer backward. The indexer losses are in dsa/training_loss.hpp.
// Included by dsa/ops.hpp.
#pragma once

#include "dsa/types.hpp"
#include "dsa/training_loss.hpp"

namespace dsa {
// (filled by the training-path work: issue 3)
}  // namespace dsa
