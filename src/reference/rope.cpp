// CPU reference of OP-ROPE apply (SPEC §3.3, §4.2 step 2). For pair i of the slice, with a, b the
// fp32 values of the pair and c, s the table entries at the token's position:
//   y_a = bf16(fl32(a·c) − fl32(b·s)),  y_b = bf16(fl32(a·s) + fl32(b·c))   (s → −s for inverse)
// Pairs are (i, i + rope_dim/2) (indexer) or (2i, 2i + 1) (MLA). Dims outside the slice pass
// through. In place (out == x) is allowed. Accum does not apply (bit-exact recipe, SPEC §9.1).
#include <cinttypes>
#include <cstdio>
#include <vector>

#include "common/op_list.hpp"
#include "common/parallel.hpp"
#include "reference/access.hpp"
#include "reference/transform_kernels.hpp"

namespace dsa::detail {

Status reference(const RopeParams& p, Accum) {
  const int64_t n = p.x.shape[0], heads = p.x.shape[1], d = p.x.shape[2];
  const int64_t max_pos = p.cos.shape[0];
  // Values first: nothing is written when a position is out of range.
  for (int64_t t = 0; t < n; ++t) {
    const int32_t pos = at<int32_t>(p.positions, t);
    if (pos < 0 || pos >= max_pos) {
      char msg[160];
      std::snprintf(msg, sizeof(msg), "rope: positions[%" PRId64 "] = %d is out of range [0, max_pos = %" PRId64 ")",
                    t, pos, max_pos);
      return Status(StatusCode::kInvalidArgument, msg);
    }
  }
  const bool interleaved = p.style == RopeStyle::kInterleaved;
  const int half = p.rope_dim / 2, off = p.rope_offset;
  parallel_for(n * heads, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> row(d);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = r / heads, h = r % heads;
      const int32_t pos = at<int32_t>(p.positions, t);
      for (int64_t i = 0; i < d; ++i) row[i] = bf16_to_float(at<bf16_t>(p.x, t, h, i));
      for (int i = 0; i < half; ++i) {
        const int ia = off + rope_first(interleaved, i, half), ib = off + rope_second(interleaved, i, half);
        const float c = at<float>(p.cos, pos, i);
        const float s = p.inverse ? -at<float>(p.sin, pos, i) : at<float>(p.sin, pos, i);
        float ya, yb;
        rope_rotate(row[ia], row[ib], c, s, &ya, &yb);
        row[ia] = ya;
        row[ib] = yb;
      }
      for (int64_t i = 0; i < d; ++i) at<bf16_t>(p.out, t, h, i) = float_to_bf16(row[i]);
    }
  });
  return Status();
}

}  // namespace dsa::detail
