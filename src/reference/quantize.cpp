// CPU reference of OP-QUANT: block-128 FP8 quantization and dequantization (SPEC §4.4).
// Bit-exact by construction: every rounding is one of the scalar codecs in dsa/numerics.hpp.
#include <cmath>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/quant_block.hpp"

namespace dsa::detail {

Status reference(const QuantizeParams& p, Accum) {
  const int64_t n = p.x.shape[0], d = p.x.shape[1];
  parallel_for(n, 64, [&](int64_t begin, int64_t end) {
    float block[kQuantBlock];
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t b = 0; b < d / kQuantBlock; ++b) {
        for (int i = 0; i < kQuantBlock; ++i) block[i] = load_float(p.x, offset(p.x, r, b * kQuantBlock + i));
        uint8_t codes[kQuantBlock];
        const float scale = quantize_block(block, p.scale_format, codes);
        for (int i = 0; i < kQuantBlock; ++i) at<uint8_t>(p.codes, r, b * kQuantBlock + i) = codes[i];
        at<float>(p.scales, r, b) = scale;
      }
    }
  });
  return Status();
}

Status reference(const DequantizeParams& p, Accum) {
  const int64_t n = p.codes.shape[0], d = p.codes.shape[1];
  parallel_for(n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t i = 0; i < d; ++i) {
        const float v = e4m3_to_float(at<uint8_t>(p.codes, r, i)) * at<float>(p.scales, r, i / kQuantBlock);
        store_float(p.out, offset(p.out, r, i), v);
      }
  });
  return Status();
}

}  // namespace dsa::detail
