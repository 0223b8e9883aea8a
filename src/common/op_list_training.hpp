// src/common/op_list_training.hpp — the training ops' entries of DSA_FOR_EACH_OP (issue 3).
#pragma once

#include "dsa/training.hpp"

// X(Params, op_name)
#define DSA_FOR_EACH_TRAINING_OP(X)
