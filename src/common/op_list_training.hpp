// src/common/op_list_training.hpp — the training ops' entries of DSA_FOR_EACH_OP (issue 3):
// sparse MLA backward, indexer backward, plus the loss ops of op_list_loss.hpp.
#pragma once

#include "common/op_list_loss.hpp"
#include "dsa/training.hpp"

// X(Params, op_name)
#define DSA_FOR_EACH_TRAINING_OP(X)          \
  X(SparseMlaBwdParams, sparse_mla_bwd)      \
  X(IndexerBwdParams, indexer_bwd)           \
  DSA_FOR_EACH_LOSS_OP(X)
