// dsa/numerics.hpp — bit-exact scalar codecs shared by the CPU reference and the CUDA kernels:
// bf16 and OCP e4m3fn conversions (round-to-nearest-even), the block-128 FP8 scale rules of
// SPEC §4.4, and the constants of SPEC §3. Header-only; host and device.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DSA_HD __host__ __device__ __forceinline__
#else
#define DSA_HD inline
#endif

namespace dsa {

// ---- model constants (SPEC §3) ---------------------------------------------------------------
inline constexpr int kMlaDimQK = 576;        // 512 latent + 64 rope
inline constexpr int kMlaDimV = 512;
inline constexpr int kMlaDimRope = 64;
inline constexpr int kIndexerHeads = 64;
inline constexpr int kIndexerDim = 128;
inline constexpr int kIndexerRopeDim = 64;   // RoPE on dims [0, 64) of the indexer head
inline constexpr int kQuantBlock = 128;      // FP8 scale block
inline constexpr int kMlaFp8CacheBytes = 656;      // per token, SPEC §7.1
inline constexpr int kIndexerCacheBytes = 132;     // per token, SPEC §7.2
inline constexpr float kSoftmaxScaleV32 = 0.1352337789f;  // τ = 192^-0.5 · mscale², SPEC §3.2
inline constexpr float kE4M3Max = 448.0f;
inline constexpr float kInvE4M3Max = 1.0f / 448.0f;       // fl32(1/448)
inline constexpr float kAmaxFloor = 1e-4f;                // fl32(1e-4) = 9.99999975e-5

// ---- bit casts --------------------------------------------------------------------------------
DSA_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

DSA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// ---- bfloat16 -----------------------------------------------------------------------------------
// Storage type for bf16 values (the upper half of a binary32). Plain struct: trivially copyable,
// same size and alignment as uint16_t, usable in host and device code.
struct bf16_t {
  uint16_t bits;
};

DSA_HD float bf16_to_float(bf16_t h) { return bits_float(static_cast<uint32_t>(h.bits) << 16); }

// Round-to-nearest-even; NaN stays NaN (quietened), infinities are kept.
DSA_HD bf16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

// bf16(x) as a float: x rounded to the bf16 grid.
DSA_HD float round_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

// ---- OCP float8 e4m3fn --------------------------------------------------------------------------
// Bias 7, 3 mantissa bits, no infinities; 0x7F and 0xFF are NaN; max finite 448 (0x7E).

DSA_HD float e4m3_to_float(uint8_t code) {
  const uint32_t sign = (code & 0x80u) << 24;
  const uint32_t exp = (code >> 3) & 0xFu;
  const uint32_t man = code & 0x7u;
  if (exp == 0xFu && man == 0x7u) return bits_float(sign | 0x7fc00000u);  // NaN
  if (exp == 0) {
    // subnormal: man * 2^-9, exact in fp32
    const float mag = static_cast<float>(man) * (1.0f / 512.0f);
    return sign ? -mag : mag;
  }
  // normal: rebias 7 -> 127 and widen the mantissa
  return bits_float(sign | ((exp + 120u) << 23) | (man << 20));
}

// Round-to-nearest-even, saturating to ±448 (infinities too), NaN preserved (0x7F | sign).
DSA_HD uint8_t float_to_e4m3(float f) {
  const uint32_t u = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7Fu);  // NaN
  if (a >= 0x43e80000u) return static_cast<uint8_t>(sign | 0x7Eu);  // >= 464 (or inf): saturate
  if (a < 0x3c800000u) {
    // below 2^-6: subnormal grid of step 2^-9. m = RNE(|f| * 512), exact scaling; m == 8 is
    // the smallest normal, whose code is also 8.
    const float scaled = bits_float(a) * 512.0f;
    uint32_t m = static_cast<uint32_t>(scaled);  // truncation
    const float rem = scaled - static_cast<float>(m);
    if (rem > 0.5f || (rem == 0.5f && (m & 1u))) ++m;
    return static_cast<uint8_t>(sign | m);
  }
  // normal: keep 3 mantissa bits with RNE on the 20 dropped bits; a carry bumps the exponent.
  const uint32_t rounded = (a + 0x7ffffu + ((a >> 20) & 1u)) >> 20;
  uint32_t code = rounded - (120u << 3);  // rebias 127 -> 7
  if (code > 0x7Eu) code = 0x7Eu;         // 448 < |f| < 464 rounds to 448
  return static_cast<uint8_t>(sign | code);
}

// ---- block-128 FP8 scale rules (SPEC §4.4) -----------------------------------------------------
// `amax` is the exact max |x| of the block. Returns the dequantization scale s (x ≈ code * s).
DSA_HD float fp8_scale_raw(float amax) {
  const float a = amax > kAmaxFloor ? amax : kAmaxFloor;
  return a * kInvE4M3Max;  // fl32(a · fl32(1/448)), not a true division (SPEC §4.4 step 2)
}

DSA_HD float fp8_scale_ue8m0(float amax) {
  const uint32_t v = float_bits(fp8_scale_raw(amax));
  const int32_t e = static_cast<int32_t>((v >> 23) & 0xFFu) - 127 + ((v & 0x7fffffu) != 0 ? 1 : 0);
  return bits_float(static_cast<uint32_t>(e + 127) << 23);  // 2^ceil(log2 v)
}

// x / s (an IEEE division; exact for power-of-two s), clamped to ±448, cast to e4m3 (RNE).
DSA_HD uint8_t fp8_quantize_value(float x, float scale) {
  float y = x / scale;
  y = y > kE4M3Max ? kE4M3Max : (y < -kE4M3Max ? -kE4M3Max : y);
  return float_to_e4m3(y);
}

// Weight fold of SPEC §4.2 step 5 (and §4.6 with q_scale = 1):
// w = ((w_raw · 2^-3) · σ_q) · fl32(128^-0.5).
inline constexpr float kIndexerInvSqrtDim = 0.08838834764831845f;  // fl32(128^-0.5)
DSA_HD float indexer_fold_weight(float w_raw, float q_scale) {
  return ((w_raw * 0.125f) * q_scale) * kIndexerInvSqrtDim;
}

}  // namespace dsa
