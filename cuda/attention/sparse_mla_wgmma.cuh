// cuda/attention/sparse_mla_wgmma.cuh — the sm_90a wgmma path of OP-SMLA-FWD (bf16, h_q a
// multiple of 64); see sparse_mla_wgmma.cu. Used by sparse_mla.cu's run() only.
#pragma once

#include "dsa/params.hpp"
#include "dsa/types.hpp"

namespace dsa::cuda_backend {

// True when the wgmma kernel may run on the current device: cc 9.0, an sm_90a image of the
// kernel in this binary, and not switched off (DSA_SPARSE_MLA_WGMMA=0 or the test hook).
bool sparse_mla_wgmma_usable();

// True when p (already accepted by supports()) takes the wgmma kernel: shape / alignment
// conditions and sparse_mla_wgmma_usable().
bool sparse_mla_wgmma_applies(const SparseMlaFwdParams& p);

// Launches the wgmma kernel (the caller checked sparse_mla_wgmma_applies(p)).
Status run_sparse_mla_wgmma(const SparseMlaFwdParams& p, Stream stream);

}  // namespace dsa::cuda_backend
