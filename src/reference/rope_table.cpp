// CPU reference of the OP-ROPE table: YaRN cos/sin in fp32, exactly the recipe of SPEC §3.3
// (the Reference's precompute_freqs_cis). Accum does not apply: the table is defined by its fp32
// rounding sequence. Rows depend only on the position, never on max_pos.
#include <cmath>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"

namespace dsa::detail {

namespace {

// corr_dim(r) = dim·ln(L / (2π·r)) / (2·ln base), in float64 as Python's math module evaluates it.
double correction_dim(double rotations, int dim, double base, double max_len) {
  return dim * std::log(max_len / (rotations * 2 * M_PI)) / (2 * std::log(base));
}

}  // namespace

Status reference(const RopeTableParams& p, Accum) {
  const int dim = p.rope_dim, half = dim / 2;
  const int64_t max_pos = p.cos.shape[0];

  // Base frequencies f_i = fl32(1 / powf(base, fl32(2i / dim))).
  std::vector<float> freq(half);
  for (int i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    freq[i] = 1.0f / std::pow(p.base, e);
  }
  if (p.yarn_factor != 1.0f) {
    // Correction range (low from beta_fast, high from beta_slow), computed, not hard-coded.
    const double L = static_cast<double>(p.original_max_position);
    const int low = std::max(static_cast<int>(std::floor(correction_dim(p.beta_fast, dim, p.base, L))), 0);
    const int high = std::min(static_cast<int>(std::ceil(correction_dim(p.beta_slow, dim, p.base, L))), dim - 1);
    // linear_ramp_factor: (i − low) / (high − low) in fp32, with high += 0.001 when they coincide.
    const float span = low == high ? 0.001f : static_cast<float>(high - low);
    for (int i = 0; i < half; ++i) {
      float ramp = static_cast<float>(i - low) / span;
      ramp = ramp < 0.0f ? 0.0f : (ramp > 1.0f ? 1.0f : ramp);
      const float smooth = 1.0f - ramp;
      // f ← fl32(fl32(fl32(f / factor)·fl32(1 − smooth)) + fl32(f·smooth)), in this order.
      const float scaled = freq[i] / p.yarn_factor;
      const float one_minus_smooth = 1.0f - smooth;
      const float t1 = scaled * one_minus_smooth;
      const float t2 = freq[i] * smooth;
      freq[i] = t1 + t2;
    }
  }
  parallel_for(max_pos, 256, [&](int64_t begin, int64_t end) {
    for (int64_t pos = begin; pos < end; ++pos) {
      const float fp = static_cast<float>(pos);
      for (int i = 0; i < half; ++i) {
        const float theta = fp * freq[i];
        at<float>(p.cos, pos, i) = std::cos(theta);
        at<float>(p.sin, pos, i) = std::sin(theta);
      }
    }
  });
  return Status();
}

}  // namespace dsa::detail
