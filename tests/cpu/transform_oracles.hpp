// tests/cpu/transform_oracles.hpp — independent float64 oracles for the transform ops' tests
// (codecs, SPEC §4.4 quantizer, §4.5 Hadamard, §3.3 / §4.2 RoPE, §7.1 / §7.2 cache layouts).
// Written from the SPEC formulas; nothing here calls the library or dsa/numerics.hpp codecs.
//
// fp32 roundings are emulated as (float) casts of float64 results: the exact product of two
// floats fits in a double, and for +, −, ×, ÷ double rounding through binary64 is innocuous
// (53 ≥ 2·24 + 2), so (float)((double)a op (double)b) == fl32(a op b), FMA-free by construction.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace oracle {

inline float f32(double x) { return static_cast<float>(x); }
inline float mul(float a, float b) { return f32(static_cast<double>(a) * b); }
inline float add(float a, float b) { return f32(static_cast<double>(a) + b); }
inline float sub(float a, float b) { return f32(static_cast<double>(a) - b); }
inline float div(float a, float b) { return f32(static_cast<double>(a) / b); }

inline uint32_t bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// ---- e4m3fn: value formula, and a nearest-value encoder over the table of finite values --------
// code = s eeee mmm: E = 0 → (−1)^s·m/8·2^−6; else (−1)^s·(1 + m/8)·2^(E−7); 0x7F/0xFF NaN.
inline double e4m3_value(uint8_t code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

// Round-to-nearest-even onto the e4m3 grid; |x| > 448 (and ±inf) saturate to ±448; NaN → 0x7F|s.
inline uint8_t e4m3_encode(double x) {
  static const std::vector<double> grid = [] {
    std::vector<double> g;
    for (int c = 0; c <= 0x7E; ++c) g.push_back(e4m3_value(static_cast<uint8_t>(c)));
    return g;
  }();
  const uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (std::isnan(x)) return sign | 0x7F;
  const double a = std::fabs(x);
  if (a >= 448.0) return sign | 0x7E;
  // grid is increasing; find the neighbours lo ≤ a < hi.
  const int hi = static_cast<int>(std::upper_bound(grid.begin(), grid.end(), a) - grid.begin());
  const int lo = hi - 1;
  const double dlo = a - grid[lo], dhi = grid[hi] - a;
  int code = dlo < dhi ? lo : (dhi < dlo ? hi : (lo % 2 == 0 ? lo : hi));
  return static_cast<uint8_t>(sign | code);
}

// ---- bf16: RNE of a float value onto 8 significant bits (IEEE overflow to ±inf) ----------------
inline double bf16_round(double x) {
  if (std::isnan(x) || std::isinf(x) || x == 0) return x;
  int e;
  std::frexp(x, &e);                        // |x| = m·2^e, m ∈ [0.5, 1)
  const int exp = std::max(e, -125);        // below 2^-126 the grid is the subnormal step 2^-133
  const double step = std::ldexp(1.0, exp - 8);
  const double r = std::nearbyint(x / step) * step;  // default rounding: ties to even
  if (std::fabs(r) >= std::ldexp(1.0, 128)) return std::copysign(HUGE_VAL, x);
  return r;
}
inline uint16_t bf16_bits_of(double rounded) {  // bits of an already-rounded bf16 value
  return static_cast<uint16_t>(bits(static_cast<float>(rounded)) >> 16);
}
inline double bf16_value(uint16_t b) { return from_bits(static_cast<uint32_t>(b) << 16); }

// ---- SPEC §4.4 scale rules ----------------------------------------------------------------------
inline float scale_raw(double amax) {
  const double a = std::max(amax, static_cast<double>(f32(1e-4)));
  return f32(a * static_cast<double>(f32(1.0 / 448.0)));  // a·fl32(1/448), not a true division
}
inline float scale_ue8m0(double amax) {
  const float v = scale_raw(amax);
  int e;
  const double m = std::frexp(static_cast<double>(v), &e);  // v = m·2^e
  return f32(m == 0.5 ? v : std::ldexp(1.0, e));            // 2^ceil(log2 v)
}

// One 128-block: returns the scale; codes = e4m3(clamp(fl32(x / s), ±448)).
inline float quantize_block(const double* x, bool ue8m0, uint8_t* codes, int n = 128) {
  double amax = 0;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = ue8m0 ? scale_ue8m0(amax) : scale_raw(amax);
  for (int i = 0; i < n; ++i) {
    double q = f32(x[i] / s);
    q = std::min(448.0, std::max(-448.0, q));
    codes[i] = e4m3_encode(q);
  }
  return s;
}

// ---- SPEC §4.5 Hadamard --------------------------------------------------------------------------
inline int sylvester(int r, int c) { return __builtin_popcount(r & c) % 2 ? -1 : 1; }

// fp32 butterfly written pair-by-index (r, r | h) for h = 1, 2, …, 64, then × fl32(128^-0.5);
// returns the bf16-rounded values.
inline void hadamard_fp32(const double* x, double* y) {
  float v[128];
  for (int i = 0; i < 128; ++i) v[i] = f32(x[i]);
  for (int h = 1; h <= 64; h <<= 1)
    for (int r = 0; r < 128; ++r)
      if (!(r & h)) {
        const float u = v[r], w = v[r | h];
        v[r] = add(u, w);
        v[r | h] = sub(u, w);
      }
  const float scale = f32(1.0 / std::sqrt(128.0));
  for (int i = 0; i < 128; ++i) y[i] = bf16_round(mul(v[i], scale));
}

// ---- SPEC §3.3 table recipe ---------------------------------------------------------------------
struct YarnConfig {
  int dim = 64;
  float base = 10000.0f, factor = 40.0f, beta_fast = 32.0f, beta_slow = 1.0f;
  int64_t original = 4096;
};
inline double corr_dim(double r, const YarnConfig& c) {
  return c.dim * std::log(static_cast<double>(c.original) / (2 * M_PI * r)) / (2 * std::log(static_cast<double>(c.base)));
}
// The blended fp32 frequencies; `use_ramp` substitutes ramp for 1 − smooth (the wrong variant).
inline std::vector<float> yarn_freqs(const YarnConfig& c, bool use_ramp = false) {
  std::vector<float> f(c.dim / 2);
  for (int i = 0; i < c.dim / 2; ++i) f[i] = div(1.0f, ::powf(c.base, div(static_cast<float>(2 * i), c.dim)));
  if (c.factor == 1.0f) return f;
  const int low = std::max(static_cast<int>(std::floor(corr_dim(c.beta_fast, c))), 0);
  const int high = std::min(static_cast<int>(std::ceil(corr_dim(c.beta_slow, c))), c.dim - 1);
  for (int i = 0; i < c.dim / 2; ++i) {
    const float ramp = std::min(1.0f, std::max(0.0f, div(static_cast<float>(i - low), static_cast<float>(high - low))));
    const float smooth = sub(1.0f, ramp);
    const float one_minus_smooth = use_ramp ? ramp : sub(1.0f, smooth);
    f[i] = add(mul(div(f[i], c.factor), one_minus_smooth), mul(f[i], smooth));
  }
  return f;
}

// ---- SPEC §4.2 step 2 RoPE pair, fp32 recipe: products rounded, then the sum -------------------
inline void rope_pair(float a, float b, float c, float s, float* ya, float* yb) {
  *ya = sub(mul(a, c), mul(b, s));
  *yb = add(mul(a, s), mul(b, c));
}

}  // namespace oracle
