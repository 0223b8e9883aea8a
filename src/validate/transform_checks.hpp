// src/validate/transform_checks.hpp — small checks shared by the validators of the transform ops
// (OP-ROPE, OP-HAD, OP-IDXPREP, OP-MLACACHE): memory overlap between views (never reads contents).
#pragma once

#include <cstdint>

#include "common/check.hpp"

namespace dsa::detail {

// Byte range [begin, end) addressed by a present, non-empty view (begin == end when empty).
inline void byte_range(const TensorView& t, uintptr_t* begin, uintptr_t* end) {
  *begin = reinterpret_cast<uintptr_t>(t.data);
  const int64_t n = extent_elements(t);
  *end = *begin + static_cast<uintptr_t>(n) * dtype_size(t.dtype);
}

inline bool views_overlap(const TensorView& a, const TensorView& b) {
  if (!a.present() || !b.present() || a.numel() == 0 || b.numel() == 0) return false;
  uintptr_t a0, a1, b0, b1;
  byte_range(a, &a0, &a1);
  byte_range(b, &b0, &b1);
  return a0 < b1 && b0 < a1;
}

// The same memory with the same dtype, shape and strides: the one aliasing an in-place op allows.
inline bool views_identical(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.rank != b.rank) return false;
  for (int i = 0; i < a.rank; ++i)
    if (a.shape[i] != b.shape[i] || a.stride[i] != b.stride[i]) return false;
  return true;
}

// An output whose elements alias one another (e.g. a zero or too small stride) would make the
// result depend on the write order. Sufficient condition: with the dims of size > 1 sorted by
// stride, each stride exceeds the largest offset reachable through the smaller ones.
inline void require_distinct_elements(ArgCheck& c, const char* name, const TensorView& t) {
  if (!c.ok() || !t.present() || t.numel() <= 1) return;
  int dims[kMaxRank];
  int k = 0;
  for (int i = 0; i < t.rank; ++i)
    if (t.shape[i] > 1) dims[k++] = i;
  for (int a = 1; a < k; ++a)  // insertion sort by stride (k ≤ 4)
    for (int b = a; b > 0 && t.stride[dims[b]] < t.stride[dims[b - 1]]; --b) {
      const int tmp = dims[b];
      dims[b] = dims[b - 1];
      dims[b - 1] = tmp;
    }
  int64_t reach = 0;  // largest offset addressed by the dims sorted so far
  for (int j = 0; j < k; ++j) {
    const int d = dims[j];
    if (t.stride[d] <= reach) {
      c.fail(StatusCode::kInvalidArgument,
             "%s.stride[%d] = %lld makes elements of %s overlap (outputs need distinct elements)", name, d,
             static_cast<long long>(t.stride[d]), name);
      return;
    }
    reach += (t.shape[d] - 1) * t.stride[d];
  }
}

// Output `out` must not overlap `in` (unless `in_place_ok` and the views are identical).
inline void require_no_overlap(ArgCheck& c, const char* out_name, const TensorView& out,
                               const char* in_name, const TensorView& in, bool in_place_ok = false) {
  if (!c.ok() || !views_overlap(out, in)) return;
  if (in_place_ok && views_identical(out, in)) return;
  c.fail(StatusCode::kInvalidArgument,
         in_place_ok ? "%s overlaps %s (in place is allowed only as the identical view: same data, "
                       "shape and strides)"
                     : "%s overlaps %s in memory (outputs must not alias other arguments)",
         out_name, in_name);
}

}  // namespace dsa::detail
