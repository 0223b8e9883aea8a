// CUDA OP-ROPE apply (SPEC §3.3, §4.2 step 2), bit-exact with the CPU reference: for pair i of the
// slice [rope_offset, rope_offset + rope_dim), y_a = bf16(fl32(a·c) − fl32(b·s)) and
// y_b = bf16(fl32(a·s) + fl32(b·c)) with explicit round-to-nearest intrinsics (no FMA contraction);
// s → −s for the inverse. Every other dim passes through bf16 → fp32 → bf16, as the reference does.
//
// One thread per work item of a (token, head) row: the rope_dim/2 pairs (each thread reads both
// elements of its pair before writing them, so in place is safe) and the d − rope_dim pass-through
// dims. The CUDA path cannot report bad values without a host synchronization: a row whose
// position lies outside [0, max_pos) is written as bf16 NaN (the CPU reference rejects the call).
//
// The RoPE *table* (RopeTableParams) has no CUDA path: compute it with host pointers once (it is
// a constant of the model) and copy it to the device.
#include "common/cuda_common.cuh"
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

namespace {

struct RopeArgs {
  const uint16_t* x;
  uint16_t* out;
  const int32_t* positions;
  const float* cos;
  const float* sin;
  int64_t x_s0, x_s1, out_s0, out_s1, pos_s0, cos_s0, sin_s0;
  int64_t n, heads, d, max_pos;
  int32_t offset, half;
  int32_t items;  // half + (d − 2·half)
  bool interleaved, inverse;
};

__global__ void __launch_bounds__(256) rope_kernel(const __grid_constant__ RopeArgs a) {
  const int64_t total = a.n * a.heads * a.items;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t row = e / a.items;
    const int item = static_cast<int>(e % a.items);
    const int64_t t = row / a.heads, h = row % a.heads;
    const uint16_t* x = a.x + t * a.x_s0 + h * a.x_s1;
    uint16_t* out = a.out + t * a.out_s0 + h * a.out_s1;
    const int32_t pos = a.positions[t * a.pos_s0];
    const bool bad = pos < 0 || pos >= a.max_pos;
    constexpr uint16_t kNaN = 0x7FC0;
    if (item < a.half) {
      const int i = item;
      const int ia = a.offset + (a.interleaved ? 2 * i : i);
      const int ib = a.offset + (a.interleaved ? 2 * i + 1 : i + a.half);
      if (bad) {
        out[ia] = kNaN;
        out[ib] = kNaN;
        continue;
      }
      const float va = cuda::bf16_bits_to_float(x[ia]);
      const float vb = cuda::bf16_bits_to_float(x[ib]);
      const float c = a.cos[pos * a.cos_s0 + i];
      const float s0 = a.sin[pos * a.sin_s0 + i];
      const float s = a.inverse ? -s0 : s0;
      out[ia] = float_to_bf16(cuda::rope_first_out(va, vb, c, s)).bits;
      out[ib] = float_to_bf16(cuda::rope_second_out(va, vb, c, s)).bits;
    } else {
      const int j = item - a.half;
      const int64_t dim = j < a.offset ? j : j + 2 * a.half;
      out[dim] = bad ? kNaN : float_to_bf16(cuda::bf16_bits_to_float(x[dim])).bits;
    }
  }
}

}  // namespace

Status supports(const RopeParams&) { return Status(); }
size_t workspace_size(const RopeParams&) { return 0; }

Status run(const RopeParams& p, void*, size_t, Stream stream) {
  RopeArgs a;
  a.x = static_cast<const uint16_t*>(p.x.data);
  a.out = static_cast<uint16_t*>(p.out.data);
  a.positions = static_cast<const int32_t*>(p.positions.data);
  a.cos = static_cast<const float*>(p.cos.data);
  a.sin = static_cast<const float*>(p.sin.data);
  a.x_s0 = p.x.stride[0];
  a.x_s1 = p.x.stride[1];
  a.out_s0 = p.out.stride[0];
  a.out_s1 = p.out.stride[1];
  a.pos_s0 = p.positions.stride[0];
  a.cos_s0 = p.cos.stride[0];
  a.sin_s0 = p.sin.stride[0];
  a.n = p.x.shape[0];
  a.heads = p.x.shape[1];
  a.d = p.x.shape[2];
  a.max_pos = p.cos.shape[0];
  a.offset = p.rope_offset;
  a.half = p.rope_dim / 2;
  a.items = static_cast<int32_t>(a.half + (a.d - p.rope_dim));
  a.interleaved = p.style == RopeStyle::kInterleaved;
  a.inverse = p.inverse;
  const int64_t total = a.n * a.heads * a.items;
  if (total == 0) return Status();
  rope_kernel<<<cuda::grid_for(total, 256 * 4), 256, 0, stream>>>(a);
  return cuda::launch_status("rope", "rope_kernel");
}

}  // namespace dsa::cuda_backend
