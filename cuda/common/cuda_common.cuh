// cuda/common/cuda_common.cuh — helpers shared by the CUDA backend: launch checks that name the
// op, the per-device attribute cache, grid sizing, and small warp utilities. nvcc only.
//
// Rules every kernel here follows (CUDA-graph safe): run() never allocates, synchronizes or reads
// device memory on the host; kernels take their arguments by value; element offsets are int64;
// the largest grid dimension is gridDim.x.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "dsa/numerics.hpp"
#include "dsa/types.hpp"

namespace dsa::cuda {

// Status after a launch: kCudaError naming the op and the runtime's message, else Ok.
inline Status launch_status(const char* op, const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return Status();
  return Status(StatusCode::kCudaError, std::string(op) + ": launch of " + kernel + " failed: " +
                                            cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

// Set-up a launch site needs once per device, not per launch: kernel attributes (dynamic shared
// memory above 48 KB, cluster sizes, carveout) stay set for the device's context, and
// cudaFuncSetAttribute costs host time that small problems would otherwise pay on every call. One
// static instance per launch site (per kernel instantiation); run(setup) runs `setup` the first
// time on each device and returns its result then and afterwards (a failure also clears the
// runtime's last error, so the next launch check does not report it again).
class OncePerDevice {
 public:
  template <class Setup>
  cudaError_t run(Setup&& setup) {
    int dev = 0;
    const cudaError_t e = cudaGetDevice(&dev);
    if (e != cudaSuccess || dev < 0 || dev >= kMaxDevices) return checked(e != cudaSuccess ? e : setup());
    std::call_once(once_[dev], [&] { error_[dev] = checked(setup()); });
    return error_[dev];
  }

 private:
  static constexpr int kMaxDevices = 64;
  static cudaError_t checked(cudaError_t e) {
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
  }
  std::once_flag once_[kMaxDevices];
  cudaError_t error_[kMaxDevices] = {};
};

// Static per-device attributes, queried once per device (thread-safe) and cached.
struct DeviceInfo {
  int device = -1;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  int max_smem_optin = 0;  // bytes of shared memory per block with opt-in
};

// The attributes of the current device; a failed query comes back as kCudaError naming `op`.
Status device_info(const char* op, DeviceInfo* info);

// Blocks for `work` items of `per_block` each, clamped to the gridDim.x limit (kernels loop).
inline unsigned grid_for(int64_t work, int64_t per_block) {
  int64_t blocks = (work + per_block - 1) / per_block;
  if (blocks < 1) blocks = 1;
  if (blocks > 0x7fffffffLL) blocks = 0x7fffffffLL;
  return static_cast<unsigned>(blocks);
}

// Byte pointer arithmetic with int64 offsets.
__device__ __forceinline__ const uint8_t* byte_ptr(const void* p, int64_t bytes) {
  return static_cast<const uint8_t*>(p) + bytes;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Writes the 4 bytes of an fp32 (little-endian) at any byte address.
__device__ __forceinline__ void store_f32_bytes(uint8_t* dst, float v) {
  const uint32_t u = __float_as_uint(v);
  dst[0] = static_cast<uint8_t>(u);
  dst[1] = static_cast<uint8_t>(u >> 8);
  dst[2] = static_cast<uint8_t>(u >> 16);
  dst[3] = static_cast<uint8_t>(u >> 24);
}

// Hadamard-128 of one row held by a full warp, lane l owning elements 4l..4l+3 (SPEC §4.5):
// fp32 butterflies (u, w) → (u + w, u − w) with strides 1, 2 inside the lane, then 4 … 64 across
// lanes (lane distance 1 … 16), then × fl32(128^-0.5). The same operations, on the same operands,
// as the reference's loop, so the fp32 results are bitwise equal. The caller rounds to bf16.
__device__ __forceinline__ void warp_hadamard128(float v[4], int lane) {
  // stride 1: (0,1), (2,3)
  float u = v[0], w = v[1];
  v[0] = __fadd_rn(u, w);
  v[1] = __fsub_rn(u, w);
  u = v[2], w = v[3];
  v[2] = __fadd_rn(u, w);
  v[3] = __fsub_rn(u, w);
  // stride 2: (0,2), (1,3)
  u = v[0], w = v[2];
  v[0] = __fadd_rn(u, w);
  v[2] = __fsub_rn(u, w);
  u = v[1], w = v[3];
  v[1] = __fadd_rn(u, w);
  v[3] = __fsub_rn(u, w);
  // strides 4..64: partner lane = lane ^ m; the lane whose bit is clear holds u (the lower index).
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {
    const bool low = (lane & m) == 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, v[i], m);
      v[i] = low ? __fadd_rn(v[i], other) : __fsub_rn(other, v[i]);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) v[i] = __fmul_rn(v[i], kIndexerInvSqrtDim);
}

// One RoPE pair (SPEC §4.2 step 2): products rounded to fp32, then the sum; no FMA contraction.
// `s` is already negated for the inverse rotation (bitwise the same as flipping the signs).
__device__ __forceinline__ float rope_first_out(float a, float b, float c, float s) {
  return __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
}
__device__ __forceinline__ float rope_second_out(float a, float b, float c, float s) {
  return __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

__device__ __forceinline__ float bf16_bits_to_float(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}

}  // namespace dsa::cuda
