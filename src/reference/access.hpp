// src/reference/access.hpp — typed, strided element access for the CPU reference.
//
// The reference reads the caller's buffers as they are (any strides), converting each storage
// type to the accumulator type on load and rounding on store.
#pragma once

#include <cstdint>
#include <limits>

#include "dsa/numerics.hpp"
#include "dsa/types.hpp"

namespace dsa::detail {

// Storage types by DType.
template <DType D> struct StorageOf;
template <> struct StorageOf<DType::kF32> { using type = float; };
template <> struct StorageOf<DType::kBF16> { using type = bf16_t; };
template <> struct StorageOf<DType::kE4M3> { using type = uint8_t; };
template <> struct StorageOf<DType::kI32> { using type = int32_t; };
template <> struct StorageOf<DType::kU8> { using type = uint8_t; };
template <> struct StorageOf<DType::kF64> { using type = double; };

inline float to_float(float v) { return v; }
inline float to_float(bf16_t v) { return bf16_to_float(v); }
inline double to_double(double v) { return v; }

template <typename T> inline T from_float(float v);
template <> inline float from_float<float>(float v) { return v; }
template <> inline bf16_t from_float<bf16_t>(float v) { return float_to_bf16(v); }

// Element offset of a multi-index.
inline int64_t offset(const TensorView& t, int64_t i0) { return i0 * t.stride[0]; }
inline int64_t offset(const TensorView& t, int64_t i0, int64_t i1) {
  return i0 * t.stride[0] + i1 * t.stride[1];
}
inline int64_t offset(const TensorView& t, int64_t i0, int64_t i1, int64_t i2) {
  return i0 * t.stride[0] + i1 * t.stride[1] + i2 * t.stride[2];
}
inline int64_t offset(const TensorView& t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
  return i0 * t.stride[0] + i1 * t.stride[1] + i2 * t.stride[2] + i3 * t.stride[3];
}

template <typename T, typename... I>
inline T& at(const TensorView& t, I... idx) {
  return static_cast<T*>(t.data)[offset(t, static_cast<int64_t>(idx)...)];
}

// Load any float-like storage element as float.
inline float load_float(const TensorView& t, int64_t off) {
  switch (t.dtype) {
    case DType::kF32: return static_cast<const float*>(t.data)[off];
    case DType::kBF16: return bf16_to_float(static_cast<const bf16_t*>(t.data)[off]);
    case DType::kE4M3: return e4m3_to_float(static_cast<const uint8_t*>(t.data)[off]);
    case DType::kF64: return static_cast<float>(static_cast<const double*>(t.data)[off]);
    default: return std::numeric_limits<float>::quiet_NaN();
  }
}

// Store a float into bf16 (RNE) or f32 storage.
inline void store_float(const TensorView& t, int64_t off, float v) {
  if (t.dtype == DType::kBF16)
    static_cast<bf16_t*>(t.data)[off] = float_to_bf16(v);
  else if (t.dtype == DType::kF32)
    static_cast<float*>(t.data)[off] = v;
  else if (t.dtype == DType::kF64)
    static_cast<double*>(t.data)[off] = v;
}

}  // namespace dsa::detail
