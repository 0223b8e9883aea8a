// CUDA OP-MLACACHE (SPEC §7.1): writes [c^KV (512) | k^R (64)] rows into a paged cache.
//   FP8 cache (u8, 656 B/token): 4 tiles of 128 e4m3 codes (OP-QUANT per tile, bit-exact with the
//   reference through dsa/numerics.hpp), 4 fp32 scales (little-endian), 64 bf16 k^R copied as is.
//   bf16 cache (576 bf16/token): the row copied as is.
// One warp per token; lane l owns elements 4l..4l+3 of every 128-tile. Every cache byte is stored
// individually, so any page stride is safe. A negative slot is skipped; a slot ≥ num_blocks·P is
// skipped too (the CPU reference rejects it; the CUDA path cannot report values without a
// synchronization). Two tokens with the same slot race: the result is then unspecified.
#include "common/cuda_common.cuh"
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

namespace {

constexpr int kWarps = 8;

struct MlaCacheArgs {
  const uint16_t* kv;
  const int32_t* slots;
  uint8_t* cache;  // byte address of the cache (bf16 caches too)
  int64_t kv_s0, slot_s0;
  int64_t page_stride_bytes, token_stride_bytes;
  int64_t n, P, num_slots;
  bool fp8, ue8m0;
};

__global__ void __launch_bounds__(kWarps * 32) mla_cache_kernel(const __grid_constant__ MlaCacheArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); t < a.n; t += step) {
    const int64_t slot = a.slots[t * a.slot_s0];
    if (slot < 0 || slot >= a.num_slots) continue;  // warp-uniform
    uint8_t* dst = a.cache + (slot / a.P) * a.page_stride_bytes + (slot % a.P) * a.token_stride_bytes;
    const uint16_t* src = a.kv + t * a.kv_s0;
    if (!a.fp8) {
      for (int i = lane; i < kMlaDimQK; i += 32) {
        const uint16_t b = src[i];
        dst[2 * i] = static_cast<uint8_t>(b);
        dst[2 * i + 1] = static_cast<uint8_t>(b >> 8);
      }
      continue;
    }
#pragma unroll
    for (int tile = 0; tile < kMlaDimV / kQuantBlock; ++tile) {
      float v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = cuda::bf16_bits_to_float(src[tile * kQuantBlock + lane * 4 + i]);
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fabsf(v[i]));
      amax = cuda::warp_max(amax);
      const float scale = a.ue8m0 ? fp8_scale_ue8m0(amax) : fp8_scale_raw(amax);
#pragma unroll
      for (int i = 0; i < 4; ++i) dst[tile * kQuantBlock + lane * 4 + i] = fp8_quantize_value(v[i], scale);
      if (lane == 0) cuda::store_f32_bytes(dst + kMlaDimV + 4 * tile, scale);
    }
    // k^R: 64 bf16 at byte 528, two per lane.
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int e = lane * 2 + i;
      const uint16_t b = src[kMlaDimV + e];
      dst[kMlaDimV + 16 + 2 * e] = static_cast<uint8_t>(b);
      dst[kMlaDimV + 16 + 2 * e + 1] = static_cast<uint8_t>(b >> 8);
    }
  }
}

}  // namespace

Status supports(const MlaCacheWriteParams& p) {
  if (p.cache.rank != 3 && p.cache.rank != 4)
    return Status(StatusCode::kUnsupportedShape,
                  "mla_cache_write: cache has rank " + std::to_string(p.cache.rank) +
                      "; the CUDA path takes [num_blocks, P, bytes] or [num_blocks, P, 1, bytes]");
  if (p.cache.dtype != DType::kU8 && p.cache.dtype != DType::kBF16)
    return Status(StatusCode::kUnsupportedDtype, "mla_cache_write: cache.dtype must be u8 (FP8) or bf16");
  return Status();
}
size_t workspace_size(const MlaCacheWriteParams&) { return 0; }

Status run(const MlaCacheWriteParams& p, void*, size_t, Stream stream) {
  Status s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  MlaCacheArgs a;
  a.kv = static_cast<const uint16_t*>(p.kv.data);
  a.slots = static_cast<const int32_t*>(p.slot_mapping.data);
  a.cache = static_cast<uint8_t*>(p.cache.data);
  a.kv_s0 = p.kv.stride[0];
  a.slot_s0 = p.slot_mapping.stride[0];
  const int64_t elem = static_cast<int64_t>(dtype_size(p.cache.dtype));
  a.page_stride_bytes = p.cache.stride[0] * elem;
  a.token_stride_bytes = p.cache.stride[1] * elem;
  a.n = p.kv.shape[0];
  a.P = p.cache.shape[1];
  a.num_slots = p.cache.shape[0] * p.cache.shape[1];
  a.fp8 = p.cache.dtype == DType::kU8;
  a.ue8m0 = p.scale_format == ScaleFormat::kUe8m0;
  if (a.n == 0 || a.num_slots == 0) return Status();
  mla_cache_kernel<<<cuda::grid_for(a.n, kWarps), kWarps * 32, 0, stream>>>(a);
  return cuda::launch_status("mla_cache_write", "mla_cache_kernel");
}

}  // namespace dsa::cuda_backend
