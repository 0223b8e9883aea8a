// cuda/attention/sparse_mla_wgmma.cuh — the sm_90a wgmma path of OP-SMLA-FWD and OP-SMLA-DEC (h_q a
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

// OP-SMLA-DEC on the same kernel (FP8 656-byte or bf16 paged cache rows gathered into the same
// tiles): true when p (already accepted by supports()) qualifies — h_q % 64 == 0, bf16 q, 16-byte
// aligned q rows / heads and cache rows, last dims contiguous — and sparse_mla_wgmma_usable().
bool sparse_mla_wgmma_decode_applies(const SparseMlaDecodeParams& p);

// Launches it. n_split ≤ 1: final out / lse. n_split > 1: the split partials (part_o, part_ml, in
// sparse_mla.cu's format, split_chunks 32-slot chunks per split); the caller then runs its combine.
Status run_sparse_mla_wgmma_decode(const SparseMlaDecodeParams& p, int n_split, int split_chunks, float* part_o,
                                   float* part_ml, Stream stream);

}  // namespace dsa::cuda_backend
