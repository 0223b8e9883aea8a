#include "common/check.hpp"

#include <cctype>
#include <cstdio>
#include <cstdlib>

namespace dsa::detail {

namespace {

bool is_literal(const char* s) {
  if (!*s) return false;
  for (const char* c = s; *c; ++c)
    if (!std::isdigit(static_cast<unsigned char>(*c))) return false;
  return true;
}

std::string vformat(const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof(buf), fmt, ap);
  return buf;
}

}  // namespace

std::string dtype_list(DTypeMask mask) {
  std::string out;
  int count = 0;
  for (int d = 0; d < 32; ++d) {
    if (!(mask & (1u << d))) continue;
    if (count++) out += " or ";
    out += dtype_name(static_cast<DType>(d));
  }
  return out.empty() ? std::string("(none)") : out;
}

int64_t extent_elements(const TensorView& t) {
  int64_t last = 0;
  for (int i = 0; i < t.rank; ++i) {
    if (t.shape[i] == 0) return 0;
    last += (t.shape[i] - 1) * t.stride[i];
  }
  return last + 1;
}

void ArgCheck::fail(StatusCode code, const char* fmt, ...) {
  if (!ok()) return;
  va_list ap;
  va_start(ap, fmt);
  message_ = std::string(op_) + ": " + vformat(fmt, ap);
  va_end(ap);
  code_ = code;
}

bool ArgCheck::require(bool cond, StatusCode code, const char* fmt, ...) {
  if (cond || !ok()) return cond;
  va_list ap;
  va_start(ap, fmt);
  message_ = std::string(op_) + ": " + vformat(fmt, ap);
  va_end(ap);
  code_ = code;
  return false;
}

int64_t ArgCheck::dim(const char* sym) const {
  for (const auto& s : symbols_)
    if (s.name == sym) return s.value;
  return -1;
}

void ArgCheck::bind(const char* sym, int64_t value, const char* origin) {
  if (!ok()) return;
  for (const auto& s : symbols_) {
    if (s.name != sym) continue;
    if (s.value != value)
      fail(StatusCode::kInvalidArgument, "%s = %lld does not match %s = %lld (from %s)", origin,
           static_cast<long long>(value), sym, static_cast<long long>(s.value), s.origin.c_str());
    return;
  }
  symbols_.push_back({sym, value, origin});
}

bool ArgCheck::tensor(const char* arg, const TensorView& t, std::initializer_list<const char*> dims,
                      DTypeMask dtypes, Need need, Layout layout) {
  if (!ok()) return false;
  if (!t.present()) {
    if (need == Need::kRequired) fail(StatusCode::kNullPointer, "%s is required but was not given (null)", arg);
    return false;
  }
  const int rank = static_cast<int>(dims.size());
  std::string shape_doc = "[";
  {
    int i = 0;
    for (const char* d : dims) shape_doc += std::string(i++ ? ", " : "") + d;
    shape_doc += "]";
  }
  if (!(dtypes & mask_of(t.dtype))) {
    fail(StatusCode::kUnsupportedDtype, "%s.dtype = %s is not supported (expected %s)", arg,
         dtype_name(t.dtype), dtype_list(dtypes).c_str());
    return false;
  }
  if (t.rank != rank) {
    fail(StatusCode::kInvalidArgument, "%s has rank %d, expected %d %s", arg, t.rank, rank, shape_doc.c_str());
    return false;
  }
  int i = 0;
  for (const char* d : dims) {
    const int64_t n = t.shape[i];
    if (n < 0) {
      fail(StatusCode::kInvalidArgument, "%s.shape[%d] = %lld is negative", arg, i, static_cast<long long>(n));
      return false;
    }
    if (t.stride[i] < 0) {
      fail(StatusCode::kInvalidArgument, "%s.stride[%d] = %lld is negative (negative strides are not supported)",
           arg, i, static_cast<long long>(t.stride[i]));
      return false;
    }
    if (is_literal(d)) {
      const long long want = std::atoll(d);
      if (n != want) {
        fail(StatusCode::kUnsupportedShape, "%s.shape[%d] = %lld, expected %lld %s", arg, i,
             static_cast<long long>(n), want, shape_doc.c_str());
        return false;
      }
    } else if (d[0] != '*') {
      char origin[96];
      std::snprintf(origin, sizeof(origin), "%s.shape[%d]", arg, i);
      bind(d, n, origin);
      if (!ok()) return false;
    }
    ++i;
  }
  const int64_t count = t.numel();
  if (layout == Layout::kInnermostContiguous && rank > 0 && t.stride[rank - 1] != 1 &&
      t.shape[rank - 1] > 1) {
    fail(StatusCode::kInvalidArgument, "%s.stride[%d] = %lld: the innermost stride must be 1", arg,
         rank - 1, static_cast<long long>(t.stride[rank - 1]));
    return false;
  }
  if (count > 0 && t.data == nullptr) {
    fail(StatusCode::kNullPointer, "%s is null but has %lld elements", arg, static_cast<long long>(count));
    return false;
  }
  // The addressed byte range must fit in int64 (no offset overflow anywhere below).
  int64_t last = 0;
  for (int k = 0; k < rank; ++k) {
    int64_t term;
    if (t.shape[k] > 0 && (__builtin_mul_overflow(t.shape[k] - 1, t.stride[k], &term) ||
                           __builtin_add_overflow(last, term, &last))) {
      fail(StatusCode::kInvalidArgument, "%s: shape and strides address more than 2^63 elements", arg);
      return false;
    }
  }
  int64_t bytes;
  if (__builtin_mul_overflow(last + 1, static_cast<int64_t>(dtype_size(t.dtype)), &bytes)) {
    fail(StatusCode::kInvalidArgument, "%s: addressed bytes overflow int64", arg);
    return false;
  }
  const auto addr = reinterpret_cast<uintptr_t>(t.data);
  if (count > 0 && addr % dtype_size(t.dtype) != 0) {
    fail(StatusCode::kMisaligned, "%s = %p is not aligned to its %zu-byte elements", arg, t.data,
         dtype_size(t.dtype));
    return false;
  }
  seen_.push_back({arg, t});
  return true;
}

// ---- memory relations (moved here from the transform validators; shared by all) -------

// Byte range [begin, end) addressed by a present, non-empty view (begin == end when empty).
static void byte_range(const TensorView& t, uintptr_t* begin, uintptr_t* end) {
  *begin = reinterpret_cast<uintptr_t>(t.data);
  const int64_t n = extent_elements(t);
  *end = *begin + static_cast<uintptr_t>(n) * dtype_size(t.dtype);
}

bool views_overlap(const TensorView& a, const TensorView& b) {
  if (!a.present() || !b.present() || a.numel() == 0 || b.numel() == 0) return false;
  uintptr_t a0, a1, b0, b1;
  byte_range(a, &a0, &a1);
  byte_range(b, &b0, &b1);
  return a0 < b1 && b0 < a1;
}

// The same memory with the same dtype, shape and strides: the one aliasing an in-place op allows.
bool views_identical(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.dtype != b.dtype || a.rank != b.rank) return false;
  for (int i = 0; i < a.rank; ++i)
    if (a.shape[i] != b.shape[i] || a.stride[i] != b.stride[i]) return false;
  return true;
}

// An output whose elements alias one another (e.g. a zero or too small stride) would make the
// result depend on the write order. Sufficient condition: with the dims of size > 1 sorted by
// stride, each stride exceeds the largest offset reachable through the smaller ones.
void require_distinct_elements(ArgCheck& c, const char* name, const TensorView& t) {
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
void require_no_overlap(ArgCheck& c, const char* out_name, const TensorView& out,
                               const char* in_name, const TensorView& in, bool in_place_ok) {
  if (!c.ok() || !views_overlap(out, in)) return;
  if (in_place_ok && views_identical(out, in)) return;
  c.fail(StatusCode::kInvalidArgument,
         in_place_ok ? "%s overlaps %s (in place is allowed only as the identical view: same data, "
                       "shape and strides)"
                     : "%s overlaps %s in memory (outputs must not alias other arguments)",
         out_name, in_name);
}

}  // namespace dsa::detail
