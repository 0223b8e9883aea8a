// dsa/ops.hpp — the three calls every op has.
//
//   Status supports(params)                       — checks shapes, dtypes, strides, pointers and
//                                                   whether the backend implements the config;
//                                                   the message names the argument and the rule.
//   size_t workspace_size(params)                 — bytes of caller-owned scratch run() needs.
//   Status run(params, workspace, bytes, stream)  — validates, then runs. Host pointers run the
//                                                   CPU reference (stream ignored); CUDA device
//                                                   pointers run the CUDA kernels on `stream`.
//
// Mixed host/device pointers are rejected. An empty problem returns kOk without work. No call
// throws; a failing call also stores its message in the thread's last error (last_error()).
#pragma once

#include "dsa/params.hpp"
#include "dsa/training.hpp"

namespace dsa {

#define DSA_DECLARE_OP(Params)                                                              \
  DSA_API Status supports(const Params& params);                                            \
  DSA_API size_t workspace_size(const Params& params);                                      \
  DSA_API Status run(const Params& params, void* workspace = nullptr, size_t workspace_bytes = 0, \
                     Stream stream = nullptr);

DSA_DECLARE_OP(RopeTableParams)
DSA_DECLARE_OP(RopeParams)
DSA_DECLARE_OP(HadamardParams)
DSA_DECLARE_OP(QuantizeParams)
DSA_DECLARE_OP(DequantizeParams)
DSA_DECLARE_OP(IndexerPrepParams)
DSA_DECLARE_OP(IndexerLogitsParams)
DSA_DECLARE_OP(IndexerPagedLogitsParams)
DSA_DECLARE_OP(TopKParams)
DSA_DECLARE_OP(MlaCacheWriteParams)
DSA_DECLARE_OP(SparseMlaFwdParams)
DSA_DECLARE_OP(SparseMlaDecodeParams)
DSA_DECLARE_OP(DenseMlaFwdParams)
DSA_DECLARE_OP(IndexerTopKParams)

#undef DSA_DECLARE_OP

// The message of the last failing call on this thread ("" if none).
DSA_API const char* last_error();

// The CPU reference, callable directly on host pointers (same validation, no device dispatch).
// `accum` selects fp32 (the default, as kernels accumulate) or fp64 accumulation, for oracles.
namespace ref {
#define DSA_DECLARE_REF(Params) DSA_API Status run(const Params& params, Accum accum = Accum::kF32);
DSA_DECLARE_REF(RopeTableParams)
DSA_DECLARE_REF(RopeParams)
DSA_DECLARE_REF(HadamardParams)
DSA_DECLARE_REF(QuantizeParams)
DSA_DECLARE_REF(DequantizeParams)
DSA_DECLARE_REF(IndexerPrepParams)
DSA_DECLARE_REF(IndexerLogitsParams)
DSA_DECLARE_REF(IndexerPagedLogitsParams)
DSA_DECLARE_REF(TopKParams)
DSA_DECLARE_REF(MlaCacheWriteParams)
DSA_DECLARE_REF(SparseMlaFwdParams)
DSA_DECLARE_REF(SparseMlaDecodeParams)
DSA_DECLARE_REF(DenseMlaFwdParams)
DSA_DECLARE_REF(IndexerTopKParams)
#undef DSA_DECLARE_REF
}  // namespace ref

}  // namespace dsa
