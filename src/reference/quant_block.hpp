// src/reference/quant_block.hpp — one 128-value FP8 block, shared by every reference op that
// quantizes (OP-QUANT, OP-IDXPREP, OP-MLACACHE), so their bytes agree by construction.
#pragma once

#include <cmath>
#include <cstdint>

#include "dsa/numerics.hpp"
#include "dsa/types.hpp"

namespace dsa::detail {

// Quantizes x[0..128) into codes; returns the dequantization scale (SPEC §4.4).
inline float quantize_block(const float* x, ScaleFormat format, uint8_t* codes) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::fmax(amax, std::fabs(x[i]));
  const float scale = format == ScaleFormat::kUe8m0 ? fp8_scale_ue8m0(amax) : fp8_scale_raw(amax);
  for (int i = 0; i < kQuantBlock; ++i) codes[i] = fp8_quantize_value(x[i], scale);
  return scale;
}

}  // namespace dsa::detail
