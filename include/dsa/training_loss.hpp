// dsa/training_loss.hpp — params and entry points of the indexer KL losses (SPEC §8):
// dense warm-up (OP-LOSS-DENSE) and sparse stage (OP-LOSS-SPARSE).
#pragma once

#include "dsa/types.hpp"

namespace dsa {
// (filled by the training-path work: issue 3)
}  // namespace dsa
