// src/common/op_list_loss.hpp — the indexer loss ops' entries of DSA_FOR_EACH_OP (issue 3).
#pragma once

#include "dsa/training_loss.hpp"

// X(Params, op_name)
#define DSA_FOR_EACH_LOSS_OP(X)                   \
  X(IndexerLossDenseParams, indexer_loss_dense)   \
  X(IndexerLossSparseParams, indexer_loss_sparse)
