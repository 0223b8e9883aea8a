// CUDA OP-IDXPREP (SPEC §4.2 steps 1–6, §4.6, §7.2), bit-exact with the CPU reference: per q head
// and per k row, non-interleaved RoPE on dims [0, 64) (products rounded, then the sum; bf16),
// Hadamard-128 (FP8 mode, or exact mode with `hadamard`; bf16), FP8 block quantization (FP8 mode),
// the weight fold ((w_raw·2^-3)·σ_q)·fl32(128^-0.5), and the paged 132-byte key-cache write
// (page = [P × 128 codes | P fp32 scales]).
//
// One warp per 128-d row, lane l owning dims 4l..4l+3: the RoPE partner of dim i < 32 (dim i + 32)
// sits in lane l ^ 8. Bad values cannot be reported without a host synchronization: a token whose
// position lies outside [0, max_pos) gets NaN outputs (codes 0x7F, NaN scale and folded weight;
// the CPU reference rejects the call); a negative slot skips the cache write, as does a slot past
// the cache (rejected by the reference). Duplicate slots race (unspecified bytes).
#include "common/cuda_common.cuh"
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

namespace {

constexpr int kWarps = 8;

struct PrepArgs {
  // input rows: q [T, H, 128] (H heads) or k [T, 128] (H = 1)
  const uint16_t* x;
  int64_t x_s0, x_s1;
  int64_t T, H;
  const int32_t* positions;
  int64_t pos_s0;
  const float* cos;
  const float* sin;
  int64_t cos_s0, sin_s0, max_pos;
  // outputs
  void* out;  // e4m3 codes or bf16, [T, H, 128]
  int64_t out_s0, out_s1;
  float* scale_out;  // k side: [T]; may be null
  int64_t scale_s0;
  const float* w;  // q side: weights [T, H]; null on the k side
  int64_t w_s0, w_s1;
  float* w_out;
  int64_t wo_s0, wo_s1;
  uint8_t* cache;  // k side, optional
  int64_t page_stride, P, num_slots;
  const int32_t* slots;
  int64_t slot_s0;
  bool fp8, rotate, ue8m0;
};

__global__ void __launch_bounds__(kWarps * 32) indexer_prep_kernel(const __grid_constant__ PrepArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = a.T * a.H;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); r < rows; r += step) {
    const int64_t t = r / a.H, j = r % a.H;
    const uint16_t* src = a.x + t * a.x_s0 + j * a.x_s1;
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = cuda::bf16_bits_to_float(src[lane * 4 + i]);
    const int32_t pos = a.positions[t * a.pos_s0];
    const bool bad = pos < 0 || pos >= a.max_pos;  // warp-uniform

    // Steps 1–2: RoPE on dims [0, 64), pairs (i, i + 32).
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, v[i], 8);
      if (lane < 16 && !bad) {
        const int fi = (lane & 7) * 4 + i;
        const float c = a.cos[pos * a.cos_s0 + fi];
        const float s = a.sin[pos * a.sin_s0 + fi];
        v[i] = lane < 8 ? cuda::rope_first_out(v[i], other, c, s) : cuda::rope_second_out(other, v[i], c, s);
        v[i] = round_bf16(v[i]);
      }
    }
    // Step 3: Hadamard.
    if (a.rotate) {
      cuda::warp_hadamard128(v, lane);
#pragma unroll
      for (int i = 0; i < 4; ++i) v[i] = round_bf16(v[i]);
    }
    // Step 4: quantization (FP8) or bf16 storage (exact).
    float sigma = 1.0f;
    if (a.fp8) {
      float amax = 0.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fabsf(v[i]));
      amax = cuda::warp_max(amax);
      sigma = a.ue8m0 ? fp8_scale_ue8m0(amax) : fp8_scale_raw(amax);
      uint8_t codes[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) codes[i] = bad ? uint8_t{0x7F} : fp8_quantize_value(v[i], sigma);
      if (bad) sigma = __uint_as_float(0x7fc00000u);
      if (a.out) {
        uint8_t* o = static_cast<uint8_t*>(a.out) + t * a.out_s0 + j * a.out_s1 + lane * 4;
#pragma unroll
        for (int i = 0; i < 4; ++i) o[i] = codes[i];
        if (a.scale_out && lane == 0) a.scale_out[t * a.scale_s0] = sigma;
      }
      if (a.cache) {
        const int64_t slot = a.slots[t * a.slot_s0];
        if (slot >= 0 && slot < a.num_slots) {
          uint8_t* page = a.cache + (slot / a.P) * a.page_stride;
          const int64_t o = slot % a.P;
#pragma unroll
          for (int i = 0; i < 4; ++i) page[o * kIndexerDim + lane * 4 + i] = codes[i];
          if (lane == 0) cuda::store_f32_bytes(page + a.P * kIndexerDim + o * 4, sigma);
        }
      }
    } else if (a.out) {
      uint16_t* o = static_cast<uint16_t*>(a.out) + t * a.out_s0 + j * a.out_s1 + lane * 4;
#pragma unroll
      for (int i = 0; i < 4; ++i) o[i] = bad ? uint16_t{0x7FC0} : float_to_bf16(v[i]).bits;
    }
    // Step 5: weight fold (q side).
    if (a.w && lane == 0) {
      const float wf = indexer_fold_weight(a.w[t * a.w_s0 + j * a.w_s1], sigma);
      a.w_out[t * a.wo_s0 + j * a.wo_s1] = bad ? __uint_as_float(0x7fc00000u) : wf;
    }
  }
}

PrepArgs common_args(const IndexerPrepParams& p) {
  PrepArgs a{};
  a.T = p.positions.shape[0];
  a.positions = static_cast<const int32_t*>(p.positions.data);
  a.pos_s0 = p.positions.stride[0];
  a.cos = static_cast<const float*>(p.rope_cos.data);
  a.sin = static_cast<const float*>(p.rope_sin.data);
  a.cos_s0 = p.rope_cos.stride[0];
  a.sin_s0 = p.rope_sin.stride[0];
  a.max_pos = p.rope_cos.shape[0];
  a.fp8 = p.mode == IndexerMode::kFp8;
  a.rotate = a.fp8 || p.hadamard;
  a.ue8m0 = p.scale_format == ScaleFormat::kUe8m0;
  return a;
}

}  // namespace

Status supports(const IndexerPrepParams&) { return Status(); }
size_t workspace_size(const IndexerPrepParams&) { return 0; }

Status run(const IndexerPrepParams& p, void*, size_t, Stream stream) {
  if (p.q.present() && p.q.numel() > 0) {
    PrepArgs a = common_args(p);
    a.x = static_cast<const uint16_t*>(p.q.data);
    a.x_s0 = p.q.stride[0];
    a.x_s1 = p.q.stride[1];
    a.H = p.q.shape[1];
    a.out = p.q_out.data;
    a.out_s0 = p.q_out.stride[0];
    a.out_s1 = p.q_out.stride[1];
    a.w = static_cast<const float*>(p.weights.data);
    a.w_s0 = p.weights.stride[0];
    a.w_s1 = p.weights.stride[1];
    a.w_out = static_cast<float*>(p.weights_out.data);
    a.wo_s0 = p.weights_out.stride[0];
    a.wo_s1 = p.weights_out.stride[1];
    indexer_prep_kernel<<<cuda::grid_for(a.T * a.H, kWarps), kWarps * 32, 0, stream>>>(a);
    Status s = cuda::launch_status("indexer_prep", "indexer_prep_kernel (q)");
    if (!s.ok()) return s;
  }
  if (p.k.present() && p.k.numel() > 0) {
    PrepArgs a = common_args(p);
    a.x = static_cast<const uint16_t*>(p.k.data);
    a.x_s0 = p.k.stride[0];
    a.x_s1 = 0;
    a.H = 1;
    if (p.k_out.present()) {
      a.out = p.k_out.data;
      a.out_s0 = p.k_out.stride[0];
      a.out_s1 = 0;
    }
    if (p.k_scale_out.present()) {
      a.scale_out = static_cast<float*>(p.k_scale_out.data);
      a.scale_s0 = p.k_scale_out.stride[0];
    }
    if (p.k_cache.present() && a.fp8 && p.k_cache.numel() > 0) {
      a.cache = static_cast<uint8_t*>(p.k_cache.data);
      a.page_stride = p.k_cache.stride[0];
      a.P = p.page_block_size;
      a.num_slots = p.k_cache.shape[0] * a.P;
      a.slots = static_cast<const int32_t*>(p.slot_mapping.data);
      a.slot_s0 = p.slot_mapping.stride[0];
    }
    if (a.out || a.cache) {
      indexer_prep_kernel<<<cuda::grid_for(a.T, kWarps), kWarps * 32, 0, stream>>>(a);
      Status s = cuda::launch_status("indexer_prep", "indexer_prep_kernel (k)");
      if (!s.ok()) return s;
    }
  }
  return Status();
}

}  // namespace dsa::cuda_backend
