// src/common/check.hpp — argument validation with messages that name the argument and the rule.
//
// An op's validator declares each tensor with its dims as symbols ("s_q", "h_q") or literals
// ("576"); the first tensor that mentions a symbol binds it, later ones must agree:
//
//   c.tensor("q",  p.q,  {"s_q", "h_q", "d_qk"}, kBF16 | kF32);
//   c.tensor("kv", p.kv, {"s_kv", "d_qk"},        kBF16 | kF32);
//   → "sparse_mla_fwd: kv.shape[1] = 512 does not match d_qk = 576 (from q.shape[2])"
//
// Only the first failure is kept; later checks become no-ops, so validators need no early returns.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <string>
#include <vector>

#include "dsa/types.hpp"

namespace dsa::detail {

// Bit masks of accepted dtypes.
using DTypeMask = uint32_t;
constexpr DTypeMask mask_of(DType d) { return d == DType::kInvalid ? 0u : (1u << static_cast<int>(d)); }
inline constexpr DTypeMask kF32 = mask_of(DType::kF32);
inline constexpr DTypeMask kBF16 = mask_of(DType::kBF16);
inline constexpr DTypeMask kE4M3 = mask_of(DType::kE4M3);
inline constexpr DTypeMask kI32 = mask_of(DType::kI32);
inline constexpr DTypeMask kU8 = mask_of(DType::kU8);
inline constexpr DTypeMask kF64 = mask_of(DType::kF64);

enum class Need { kRequired, kOptional };
// Innermost stride 1 is the rule for every tensor (STYLE: kernels vectorize along it); a few
// outputs (e.g. decode lse in FlashMLA's transposed storage) accept any non-overlapping strides.
enum class Layout { kInnermostContiguous, kAnyStrides };

class ArgCheck {
 public:
  explicit ArgCheck(const char* op) : op_(op) {}

  // Checks a tensor: presence (or absence, when optional), dtype, rank, named dims, non-negative
  // sizes and strides, innermost stride 1, non-null data when non-empty, element alignment, and
  // that the addressed byte range fits in int64. Returns true when present and valid.
  bool tensor(const char* arg, const TensorView& t, std::initializer_list<const char*> dims,
              DTypeMask dtypes, Need need = Need::kRequired,
              Layout layout = Layout::kInnermostContiguous);

  // Binds (or checks) a symbol from a scalar argument.
  void bind(const char* sym, int64_t value, const char* origin);
  // The value bound to a symbol, or -1.
  int64_t dim(const char* sym) const;

  // Records a failure (printf-style message after the "op: " prefix). Keeps the first only.
  void fail(StatusCode code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
  // fail() unless `cond`.
  bool require(bool cond, StatusCode code, const char* fmt, ...) __attribute__((format(printf, 4, 5)));

  bool ok() const { return code_ == StatusCode::kOk; }
  Status status() const { return ok() ? Status() : Status(code_, message_); }
  const char* op() const { return op_; }

  struct Seen {
    const char* arg;
    TensorView view;  // a copy: a validator may declare views it built itself (they die before locate())
  };
  // Every present tensor declared so far (for device location and aliasing checks).
  const std::vector<Seen>& seen() const { return seen_; }

 private:
  struct Symbol {
    std::string name;
    int64_t value;
    std::string origin;
  };
  const char* op_;
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::vector<Symbol> symbols_;
  std::vector<Seen> seen_;
};

// Human-readable list of a mask's dtypes, e.g. "bf16 or f32".
std::string dtype_list(DTypeMask mask);

// Element offset one past the last addressed element of a view (0 if empty).
int64_t extent_elements(const TensorView& t);

// ---- memory relations between views (never reads contents) ----------------------------------

// Whether the byte ranges addressed by two present, non-empty views intersect.
bool views_overlap(const TensorView& a, const TensorView& b);
// The same memory with the same dtype, shape and strides: the one aliasing in-place ops allow.
bool views_identical(const TensorView& a, const TensorView& b);
// An output whose elements alias one another (a zero or too small stride) would make the result
// depend on the write order: fails naming the stride.
void require_distinct_elements(ArgCheck& c, const char* name, const TensorView& t);
// Output `out` must not overlap `in` (unless `in_place_ok` and the views are identical).
void require_no_overlap(ArgCheck& c, const char* out_name, const TensorView& out, const char* in_name,
                        const TensorView& in, bool in_place_ok = false);

}  // namespace dsa::detail
