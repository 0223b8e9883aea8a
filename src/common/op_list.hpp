// src/common/op_list.hpp — the list of ops and the pieces each one provides.
//
// Adding an op: a params struct in include/dsa/params.hpp, one line here and in the
// DSA_DECLARE lists of include/dsa/ops.hpp, a validator in src/validate/<op>.cpp, a reference in
// src/reference/<op>.cpp, and its C ABI mirror in src/c_api/. Everything else (supports,
// workspace_size, run, ref::run, device dispatch, last-error) is generated from this list.
#pragma once

#include "common/check.hpp"
#include "dsa/numerics.hpp"
#include "dsa/ops.hpp"
#include "common/op_list_training.hpp"

// X(Params, op_name)
#define DSA_FOR_EACH_OP(X)                         \
  X(RopeTableParams, rope_table)                   \
  X(RopeParams, rope)                              \
  X(HadamardParams, hadamard)                      \
  X(QuantizeParams, quantize)                      \
  X(DequantizeParams, dequantize)                  \
  X(IndexerPrepParams, indexer_prep)               \
  X(IndexerLogitsParams, indexer_logits)           \
  X(IndexerPagedLogitsParams, indexer_paged_logits) \
  X(TopKParams, topk)                              \
  X(MlaCacheWriteParams, mla_cache_write)          \
  X(SparseMlaFwdParams, sparse_mla_fwd)            \
  X(SparseMlaDecodeParams, sparse_mla_decode)      \
  X(DenseMlaFwdParams, dense_mla_fwd)            \
  X(IndexerTopKParams, indexer_topk)               \
  DSA_FOR_EACH_TRAINING_OP(X)

namespace dsa::detail {

// Per op, defined in src/validate/<op>.cpp: every shape/dtype/stride/pointer rule that holds for all
// backends. Failures go into `c`; validate never reads tensor contents (they may be on a GPU).
#define DSA_DECLARE_VALIDATE(P, name) void validate(const P& p, ArgCheck& c);
DSA_FOR_EACH_OP(DSA_DECLARE_VALIDATE)
#undef DSA_DECLARE_VALIDATE

// Per op, defined in src/reference/<op>.cpp: the CPU reference on validated host tensors. It may
// read tensor contents and reject bad values (e.g. a block_table entry out of range).
#define DSA_DECLARE_REFERENCE(P, name) Status reference(const P& p, Accum accum);
DSA_FOR_EACH_OP(DSA_DECLARE_REFERENCE)
#undef DSA_DECLARE_REFERENCE

}  // namespace dsa::detail

// The CUDA backend of each op (cuda/; stubs where a kernel has not landed, and in CPU-only
// builds src/dispatch/cuda_absent.cpp). Called only with validated device pointers.
namespace dsa::cuda_backend {
#define DSA_DECLARE_CUDA(P, name)                   \
  Status supports(const P& p);                      \
  size_t workspace_size(const P& p);                \
  Status run(const P& p, void* workspace, size_t workspace_bytes, Stream stream);
DSA_FOR_EACH_OP(DSA_DECLARE_CUDA)
#undef DSA_DECLARE_CUDA
}  // namespace dsa::cuda_backend

namespace dsa::detail {
enum class Backend { kHost, kCuda };
// Where the declared tensors live. All must be host memory (pageable or pinned) or all device
// memory of one GPU; anything else is an error naming two disagreeing arguments.
Status locate(const ArgCheck& c, Backend* backend);
}  // namespace dsa::detail
