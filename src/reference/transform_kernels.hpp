// src/reference/transform_kernels.hpp — the scalar recipes of RoPE (SPEC §4.2 step 2) and the
// Hadamard-128 butterfly (SPEC §4.5), shared by OP-ROPE, OP-HAD and OP-IDXPREP so that their bits
// agree by construction. Compiled only into the reference (-ffp-contract=off: no FMA contraction).
#pragma once

#include <cstdint>

#include "dsa/numerics.hpp"

namespace dsa::detail {

// One rotated pair: (a, b) → (a·c − b·s, a·s + b·c), each product rounded to fp32, then the sum
// (no FMA). `s` is already negated for the inverse rotation (−θ): fl32(a·(−s)) = −fl32(a·s), so
// negating s is bit-identical to rewriting the formula with +/−.
inline void rope_rotate(float a, float b, float c, float s, float* ya, float* yb) {
  const float ac = a * c;
  const float bs = b * s;
  const float as = a * s;
  const float bc = b * c;
  *ya = ac - bs;
  *yb = as + bc;
}

// Index of the first and second element of rotation pair i (of rope_dim / 2) inside the slice.
inline int rope_first(bool interleaved, int i, int half) { return interleaved ? 2 * i : i; }
inline int rope_second(bool interleaved, int i, int half) { return interleaved ? 2 * i + 1 : i + half; }

// In-place Hadamard-128 of v (fp32): butterflies (u, w) → (u + w, u − w) with strides 1, 2, …, 64,
// then × fl32(128^-0.5). The caller rounds to bf16. Natural (Sylvester) order:
// result[r] = Σ_c (−1)^popcount(r & c) · v[c] · fl32(128^-0.5), up to the fp32 roundings.
inline void hadamard128_inplace(float* v) {
  for (int h = 1; h < 128; h *= 2)
    for (int i = 0; i < 128; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float u = v[j], w = v[j + h];
        v[j] = u + w;
        v[j + h] = u - w;
      }
  for (int i = 0; i < 128; ++i) v[i] = v[i] * kIndexerInvSqrtDim;
}

}  // namespace dsa::detail
