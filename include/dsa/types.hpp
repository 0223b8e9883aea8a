// dsa/types.hpp — the vocabulary of the public API: dtypes, status, strided tensor views.
// Compiles without CUDA and without Eigen.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "dsa/version.hpp"

// Streams travel as the driver's opaque type; `cudaStream_t` is exactly `CUstream_st*`.
struct CUstream_st;

namespace dsa {

using Stream = CUstream_st*;

// Element types. Values are ABI: they equal the DSA_DTYPE_* codes of dsa/dsa.h.
enum class DType : int32_t {
  kInvalid = -1,
  kF32 = 0,
  kBF16 = 1,
  kE4M3 = 2,  // OCP float8 e4m3fn only (SPEC D9): max 448, no infinities, 0x7F/0xFF = NaN
  kI32 = 3,
  kU8 = 4,
  kF64 = 5,
};

DSA_API const char* dtype_name(DType dtype);
DSA_API size_t dtype_size(DType dtype);  // 0 for kInvalid

// Status codes. Values are ABI: they equal the DSA_STATUS_* codes of dsa/dsa.h.
enum class StatusCode : int32_t {
  kOk = 0,
  kInvalidArgument = 1,
  kNullPointer = 2,
  kMisaligned = 3,
  kUnsupportedShape = 4,
  kUnsupportedDtype = 5,
  kUnsupportedArch = 6,
  kWorkspaceTooSmall = 7,
  kNotBuiltWithCuda = 8,
  kNotImplemented = 9,  // the op exists but has no implementation on the pointers' device yet
  kCudaError = 10,
  kInternal = 11,
};

DSA_API const char* status_code_name(StatusCode code);

// Result of every API call. The message names the op, the argument, its value and the rule,
// e.g. "sparse_mla_fwd: kv.shape[1] = 512 does not match d_qk = 576 (from q.shape[2])".
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Non-owning strided view of a tensor. Strides count elements, not bytes. A default-constructed
// view (rank 0, null data) is "absent": optional arguments are left that way to turn a feature
// off. A present view with zero elements may have null data.
inline constexpr int kMaxRank = 4;

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kInvalid;
  int32_t rank = 0;
  int64_t shape[kMaxRank] = {0, 0, 0, 0};
  int64_t stride[kMaxRank] = {0, 0, 0, 0};

  bool present() const { return rank > 0 || data != nullptr; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = rank - 1; i >= 0; --i) {
      if (shape[i] != 1 && stride[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

// A view of `data` with the given shape; strides default to row-major (contiguous).
inline TensorView make_view(const void* data, DType dtype, std::initializer_list<int64_t> shape,
                            std::initializer_list<int64_t> stride = {}) {
  TensorView v;
  v.data = const_cast<void*>(data);
  v.dtype = dtype;
  v.rank = static_cast<int32_t>(shape.size() < kMaxRank ? shape.size() : kMaxRank);
  int i = 0;
  for (int64_t s : shape) {
    if (i < kMaxRank) v.shape[i] = s;
    ++i;
  }
  if (stride.size() == shape.size()) {
    i = 0;
    for (int64_t s : stride) {
      if (i < kMaxRank) v.stride[i] = s;
      ++i;
    }
  } else {
    int64_t s = 1;
    for (int d = v.rank - 1; d >= 0; --d) {
      v.stride[d] = s;
      s *= v.shape[d];
    }
  }
  return v;
}

// Conventions that are explicit fields of the params structs.
enum class ScaleFormat : int32_t {
  kUe8m0 = 0,  // power-of-two scales stored as fp32 (SPEC D3 default)
  kRaw = 1,    // fl32(max(amax, 1e-4) * fl32(1/448)) (SPEC §4.4 raw rule)
};

enum class LseBase : int32_t {
  kNatural = 0,  // SPEC D6 default
  kBase2 = 1,
};

enum class RopeStyle : int32_t {
  kNonInterleaved = 0,  // pairs (i, i + rope_dim/2): the lightning indexer
  kInterleaved = 1,     // pairs (2i, 2i + 1): MLA q_pe / k_pe
};

enum class IndexerMode : int32_t {
  kFp8 = 0,    // as deployed: e4m3 q and k with per-block scales (SPEC §4.2)
  kExact = 1,  // bf16 storage, fp32 math, no quantization (SPEC §4.6)
};

enum class IndexDomain : int32_t {
  kAbsolute = 0,   // column index c
  kRelative = 1,   // c - ks[row]
  kPagedSlot = 2,  // block_table[b][c_rel / P] * P + c_rel % P
};

enum class MlaCacheFormat : int32_t {
  kFp8 = 0,   // 656 B/token: 512 e4m3 | 4 fp32 scales | 64 bf16 k_pe (SPEC §7.1); dtype u8
  kBf16 = 1,  // 1152 B/token: 576 bf16; dtype bf16
};

enum class Accum : int32_t {
  kF32 = 0,  // the reference's default accumulator
  kF64 = 1,  // float64 accumulation, for oracles
};

}  // namespace dsa
