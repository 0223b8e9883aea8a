// CUDA OP-HAD (SPEC §4.5): y = bf16(fl32(128^-0.5) · H128 · x), one warp per row, the butterfly of
// cuda/common/cuda_common.cuh (bitwise the reference's order). In place is allowed: each warp
// reads its whole row into registers before it writes.
#include "common/cuda_common.cuh"
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

namespace {

constexpr int kWarps = 8;

struct HadamardArgs {
  const uint16_t* x;
  uint16_t* out;
  int64_t x_stride, out_stride;
  int64_t rows;
};

__global__ void __launch_bounds__(kWarps * 32) hadamard_kernel(const __grid_constant__ HadamardArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < a.rows; r += step) {
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = cuda::bf16_bits_to_float(a.x[r * a.x_stride + lane * 4 + i]);
    cuda::warp_hadamard128(v, lane);
#pragma unroll
    for (int i = 0; i < 4; ++i) a.out[r * a.out_stride + lane * 4 + i] = float_to_bf16(v[i]).bits;
  }
}

}  // namespace

Status supports(const HadamardParams&) { return Status(); }
size_t workspace_size(const HadamardParams&) { return 0; }

Status run(const HadamardParams& p, void*, size_t, Stream stream) {
  HadamardArgs a;
  a.x = static_cast<const uint16_t*>(p.x.data);
  a.out = static_cast<uint16_t*>(p.out.data);
  a.x_stride = p.x.stride[0];
  a.out_stride = p.out.stride[0];
  a.rows = p.x.shape[0];
  if (a.rows == 0) return Status();
  hadamard_kernel<<<cuda::grid_for(a.rows, kWarps), kWarps * 32, 0, stream>>>(a);
  return cuda::launch_status("hadamard", "hadamard_kernel");
}

}  // namespace dsa::cuda_backend
