// CUDA OP-QUANT (SPEC §4.4): block-128 FP8 quantization and dequantization, bit-exact with the CPU
// reference by construction (the same scalar codecs of dsa/numerics.hpp; the amax is an exact
// max, so the reduction order does not matter). One warp per 128-value block, 4 values per lane.
#include "common/cuda_common.cuh"
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

namespace {

constexpr int kWarps = 8;

struct QuantArgs {
  const void* x;
  uint8_t* codes;
  float* scales;
  int64_t x_stride, codes_stride, scales_stride;  // row strides, elements
  int64_t rows, blocks_per_row;
  bool x_is_bf16;
  bool ue8m0;
};

__global__ void __launch_bounds__(kWarps * 32) quantize_kernel(const __grid_constant__ QuantArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t total = a.rows * a.blocks_per_row;
  const int64_t warp0 = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t w = warp0; w < total; w += step) {
    const int64_t r = w / a.blocks_per_row, b = w % a.blocks_per_row;
    const int64_t col = b * kQuantBlock + lane * 4;
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t off = r * a.x_stride + col + i;
      v[i] = a.x_is_bf16 ? cuda::bf16_bits_to_float(static_cast<const uint16_t*>(a.x)[off])
                         : static_cast<const float*>(a.x)[off];
    }
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) amax = fmaxf(amax, fabsf(v[i]));
    amax = cuda::warp_max(amax);
    const float scale = a.ue8m0 ? fp8_scale_ue8m0(amax) : fp8_scale_raw(amax);
#pragma unroll
    for (int i = 0; i < 4; ++i) a.codes[r * a.codes_stride + col + i] = fp8_quantize_value(v[i], scale);
    if (lane == 0) a.scales[r * a.scales_stride + b] = scale;
  }
}

struct DequantArgs {
  const uint8_t* codes;
  const float* scales;
  void* out;
  int64_t codes_stride, scales_stride, out_stride;
  int64_t rows, cols;
  bool out_is_bf16;
};

__global__ void __launch_bounds__(256) dequantize_kernel(const __grid_constant__ DequantArgs a) {
  const int64_t total = a.rows * a.cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += step) {
    const int64_t r = e / a.cols, c = e % a.cols;
    const float v = __fmul_rn(e4m3_to_float(a.codes[r * a.codes_stride + c]),
                              a.scales[r * a.scales_stride + c / kQuantBlock]);
    if (a.out_is_bf16)
      static_cast<bf16_t*>(a.out)[r * a.out_stride + c] = float_to_bf16(v);
    else
      static_cast<float*>(a.out)[r * a.out_stride + c] = v;
  }
}

}  // namespace

Status supports(const QuantizeParams&) { return Status(); }
size_t workspace_size(const QuantizeParams&) { return 0; }

Status run(const QuantizeParams& p, void*, size_t, Stream stream) {
  QuantArgs a;
  a.x = p.x.data;
  a.codes = static_cast<uint8_t*>(p.codes.data);
  a.scales = static_cast<float*>(p.scales.data);
  a.x_stride = p.x.stride[0];
  a.codes_stride = p.codes.stride[0];
  a.scales_stride = p.scales.stride[0];
  a.rows = p.x.shape[0];
  a.blocks_per_row = p.x.shape[1] / kQuantBlock;
  a.x_is_bf16 = p.x.dtype == DType::kBF16;
  a.ue8m0 = p.scale_format == ScaleFormat::kUe8m0;
  const int64_t total = a.rows * a.blocks_per_row;
  if (total == 0) return Status();
  quantize_kernel<<<cuda::grid_for(total, kWarps), kWarps * 32, 0, stream>>>(a);
  return cuda::launch_status("quantize", "quantize_kernel");
}

Status supports(const DequantizeParams&) { return Status(); }
size_t workspace_size(const DequantizeParams&) { return 0; }

Status run(const DequantizeParams& p, void*, size_t, Stream stream) {
  DequantArgs a;
  a.codes = static_cast<const uint8_t*>(p.codes.data);
  a.scales = static_cast<const float*>(p.scales.data);
  a.out = p.out.data;
  a.codes_stride = p.codes.stride[0];
  a.scales_stride = p.scales.stride[0];
  a.out_stride = p.out.stride[0];
  a.rows = p.codes.shape[0];
  a.cols = p.codes.shape[1];
  a.out_is_bf16 = p.out.dtype == DType::kBF16;
  const int64_t total = a.rows * a.cols;
  if (total == 0) return Status();
  dequantize_kernel<<<cuda::grid_for(total, 256 * 4), 256, 0, stream>>>(a);
  return cuda::launch_status("dequantize", "dequantize_kernel");
}

}  // namespace dsa::cuda_backend
