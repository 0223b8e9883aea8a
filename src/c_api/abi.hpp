// src/c_api/abi.hpp — the machinery behind dsa/dsa.h, shared by every op's C mirror.
//
// An op's C mirror is a field list, in the order of its C++ params struct:
//
//   #define DSA_C_FIELDS_quantize(F) F(x) F(codes) F(scales) F(scale_format)
//   DSA_C_DEFINE_OP(QuantizeParams, quantize)
//
// which checks both layouts at compile time (the list covers every field of the C struct and of
// the C++ struct, in order, with nothing left out) and defines the five exported functions
// dsa_quantize_{params_init, supports, workspace_size, run, run_reference}. Each one:
//   - rejects a null params pointer, another ABI major version, or a struct_size that does not
//     cover every dsa_tensor field, with a message naming the struct;
//   - copies the fields that lie wholly inside the caller's struct_size, defaults the rest from the
//     C++ struct's defaults, converts (dsa_tensor ≡ TensorView, int32_t → enum, uint8_t → bool);
//   - calls the C++ API, which records the last error; catches every exception.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/guarded.hpp"
#include "common/last_error.hpp"
#include "dsa/dsa.h"
#include "dsa/dsa.hpp"

namespace dsa::c_abi {

// ---- compile-time layout checks ------------------------------------------------------------------

struct FieldInfo {
  size_t offset, size, align;
  bool is_tensor;
};

constexpr size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// The fields, in list order, tile [begin, sizeof) with only alignment padding between them: no
// field of the struct is missing from the list and the order is the declaration order.
template <size_t N>
constexpr bool tiles(const FieldInfo (&f)[N], size_t begin, size_t struct_size, size_t struct_align) {
  size_t end = begin;
  for (size_t i = 0; i < N; ++i) {
    if (f[i].offset != align_up(end, f[i].align)) return false;
    end = f[i].offset + f[i].size;
  }
  return align_up(end, struct_align) == struct_size;
}

// The smallest struct_size accepted: every dsa_tensor field must be present. This is the ABI 1.0
// value: a tensor field appended in a later minor version must not raise it (cap it per op then).
template <size_t N>
constexpr size_t min_size(const FieldInfo (&f)[N]) {
  size_t end = 8;
  for (size_t i = 0; i < N; ++i)
    if (f[i].is_tensor && f[i].offset + f[i].size > end) end = f[i].offset + f[i].size;
  return end;
}

// The per-op cap: an op whose struct gained tensor fields after ABI 1.0 specializes this (before
// DSA_C_DEFINE_OP) with its ABI 1.0 minimal prefix, so older callers stay accepted.
template <class C>
struct MinSizeCap {
  static constexpr size_t value = ~size_t{0};
};

#define DSA_C_FIELD_INFO(S, field)                                                          \
  FieldInfo{offsetof(S, field), sizeof(S::field), alignof(decltype(S::field)),              \
            std::is_same<std::remove_cv_t<decltype(S::field)>, dsa_tensor>::value ||        \
                std::is_same<std::remove_cv_t<decltype(S::field)>, TensorView>::value},

// ---- conversions -----------------------------------------------------------------------------------

static_assert(sizeof(dsa_tensor) == sizeof(TensorView) && alignof(dsa_tensor) == alignof(TensorView),
              "dsa_tensor must be layout-identical to dsa::TensorView");
static_assert(offsetof(dsa_tensor, data) == offsetof(TensorView, data) &&
                  offsetof(dsa_tensor, dtype) == offsetof(TensorView, dtype) &&
                  offsetof(dsa_tensor, rank) == offsetof(TensorView, rank) &&
                  offsetof(dsa_tensor, shape) == offsetof(TensorView, shape) &&
                  offsetof(dsa_tensor, stride) == offsetof(TensorView, stride),
              "dsa_tensor must be layout-identical to dsa::TensorView");
static_assert(DSA_MAX_RANK == kMaxRank, "DSA_MAX_RANK");

// C field <-> C++ field. Enums and bools go through static_cast (out-of-range enum values reach
// the validators unchanged, exactly as from a C++ caller).
template <class To, class From>
void convert(To& to, const From& from) {
  if constexpr (std::is_same<To, TensorView>::value || std::is_same<To, dsa_tensor>::value) {
    static_assert(sizeof(To) == sizeof(From), "tensor field mismatch");
    std::memcpy(static_cast<void*>(&to), &from, sizeof(To));
  } else {
    static_assert(sizeof(To) == sizeof(From) || std::is_same<To, bool>::value ||
                      std::is_same<From, bool>::value,
                  "scalar field of another width in the C and C++ structs");
    to = static_cast<To>(from);
  }
}

template <class C>
struct Traits;  // per op: Cpp, name, c_name, min_size, to_cpp(), from_cpp()

inline dsa_status to_c(const Status& s) { return static_cast<dsa_status>(s.code()); }

template <class C>
Status null_params() {
  using T = Traits<C>;
  return Status(StatusCode::kNullPointer, std::string(T::name) + ": params (" + T::c_name + "*) is null");
}

template <class C>
Status too_small(uint32_t size) {
  using T = Traits<C>;
  return Status(StatusCode::kInvalidArgument,
                std::string(T::name) + ": " + T::c_name + ".struct_size = " + std::to_string(size) +
                    " is smaller than the minimal prefix of " + std::to_string(T::min_size) +
                    " bytes (every dsa_tensor field; sizeof = " + std::to_string(sizeof(C)) + ")");
}

// Header checks and conversion of the caller's prefix into `out`.
template <class C>
Status load(const C* c, typename Traits<C>::Cpp* out) {
  using T = Traits<C>;
  if (c == nullptr) return null_params<C>();
  uint32_t size, version;
  std::memcpy(&size, &c->struct_size, 4);
  std::memcpy(&version, &c->abi_version, 4);
  if ((version >> 16) != DSA_ABI_VERSION_MAJOR)
    return Status(StatusCode::kInvalidArgument,
                  std::string(T::name) + ": " + T::c_name + ".abi_version = " + std::to_string(version) +
                      " has ABI major version " + std::to_string(version >> 16) +
                      "; this library implements major " + std::to_string(DSA_ABI_VERSION_MAJOR) +
                      " (DSA_ABI_VERSION = " + std::to_string(DSA_ABI_VERSION) + "; call dsa_" + T::name +
                      "_params_init)");
  if (size < T::min_size) return too_small<C>(size);
  // Start from the defaults, then take every field that lies wholly inside the caller's prefix.
  C local;
  T::from_cpp(typename T::Cpp{}, local);
  const auto* src = reinterpret_cast<const unsigned char*>(c);
  T::each_field([&](size_t offset, size_t bytes) {
    if (offset + bytes <= size) std::memcpy(reinterpret_cast<unsigned char*>(&local) + offset, src + offset, bytes);
  });
  T::to_cpp(local, *out);
  return Status();
}

// Runs `body(cpp_params)` → Status after load(), catching everything; records the last error.
template <class C, class Body>
dsa_status call(const C* c, Body&& body) {
  using T = Traits<C>;
  return to_c(detail::record(detail::guarded(T::name, [&]() -> Status {
    typename T::Cpp p;
    Status s = load(c, &p);
    return s.ok() ? body(p) : s;
  })));
}

// Fills the header and the C++ defaults. A caller whose struct may be shorter than the library's
// (built against an older header) presets struct_size = sizeof(its struct) and abi_version: then
// only that prefix is written. Without a preset header the whole struct is written.
template <class C>
dsa_status params_init(C* c) {
  using T = Traits<C>;
  return to_c(detail::record(detail::guarded(T::name, [&] {
    if (c == nullptr) return null_params<C>();
    uint32_t size, version;
    std::memcpy(&size, &c->struct_size, 4);
    std::memcpy(&version, &c->abi_version, 4);
    size_t capacity = sizeof(C);
    if ((version >> 16) == DSA_ABI_VERSION_MAJOR && size >= 8) {
      if (size < T::min_size) return too_small<C>(size);
      capacity = std::min<size_t>(size, sizeof(C));
    }
    C local;
    std::memset(static_cast<void*>(&local), 0, sizeof(C));
    T::from_cpp(typename T::Cpp{}, local);
    local.struct_size = static_cast<uint32_t>(capacity);
    local.abi_version = DSA_ABI_VERSION;
    std::memcpy(static_cast<void*>(c), &local, capacity);
    return Status();
  })));
}

template <class C>
dsa_status supports(const C* c) {
  return call(c, [](const auto& p) { return dsa::supports(p); });
}

template <class C>
dsa_status workspace_size(const C* c, size_t* bytes) {
  return call(c, [&](const auto& p) {
    if (bytes == nullptr)
      return Status(StatusCode::kNullPointer, std::string(Traits<C>::name) + ": bytes (size_t*) is null");
    *bytes = dsa::workspace_size(p);
    return Status();
  });
}

template <class C>
dsa_status run(const C* c, void* workspace, size_t workspace_bytes, void* stream) {
  return call(c, [&](const auto& p) {
    return dsa::run(p, workspace, workspace_bytes, static_cast<Stream>(stream));
  });
}

template <class C>
dsa_status run_reference(const C* c, dsa_accum accum) {
  return call(c, [&](const auto& p) {
    if (accum != DSA_ACCUM_F32 && accum != DSA_ACCUM_F64)
      return Status(StatusCode::kInvalidArgument,
                    std::string(Traits<C>::name) + ": accum = " + std::to_string(accum) +
                        " is not DSA_ACCUM_F32 (0) or DSA_ACCUM_F64 (1)");
    return dsa::ref::run(p, static_cast<Accum>(accum));
  });
}

}  // namespace dsa::c_abi

// ---- per-op definitions ------------------------------------------------------------------------------

#define DSA_C_INFO_C(field) DSA_C_FIELD_INFO(C, field)
#define DSA_C_INFO_CPP(field) DSA_C_FIELD_INFO(Cpp, field)
#define DSA_C_TO_CPP(field) convert(p.field, c.field);
#define DSA_C_FROM_CPP(field) convert(c.field, p.field);
#define DSA_C_EACH(field) fn(offsetof(C, field), sizeof(C::field));

#define DSA_C_DEFINE_OP(Params, op)                                                              \
  namespace dsa::c_abi {                                                                         \
  template <>                                                                                    \
  struct Traits<dsa_##op##_params> {                                                             \
    using C = dsa_##op##_params;                                                                 \
    using Cpp = Params;                                                                          \
    static constexpr const char* name = #op;                                                     \
    static constexpr const char* c_name = "dsa_" #op "_params";                                  \
    static constexpr FieldInfo c_fields[] = {DSA_C_FIELDS_##op(DSA_C_INFO_C)};                   \
    static constexpr FieldInfo cpp_fields[] = {DSA_C_FIELDS_##op(DSA_C_INFO_CPP)};               \
    static_assert(std::is_standard_layout<C>::value && std::is_standard_layout<Cpp>::value, #op); \
    static_assert(tiles(c_fields, 8, sizeof(C), alignof(C)),                                     \
                  "dsa_" #op "_params: the field list must cover every field of dsa/dsa.h, in order"); \
    static_assert(tiles(cpp_fields, 0, sizeof(Cpp), alignof(Cpp)),                               \
                  #Params " gained or reordered a field: mirror it in dsa/dsa.h and src/c_api/"); \
    static constexpr size_t min_size = std::min(c_abi::min_size(c_fields), MinSizeCap<C>::value); \
    static void to_cpp(const C& c, Cpp& p) { DSA_C_FIELDS_##op(DSA_C_TO_CPP) }                   \
    static void from_cpp(const Cpp& p, C& c) { DSA_C_FIELDS_##op(DSA_C_FROM_CPP) }               \
    template <class Fn>                                                                          \
    static void each_field(Fn&& fn) { DSA_C_FIELDS_##op(DSA_C_EACH) }                            \
  };                                                                                             \
  }                                                                                              \
  extern "C" {                                                                                   \
  DSA_API dsa_status dsa_##op##_params_init(dsa_##op##_params* p) {                              \
    return dsa::c_abi::params_init(p);                                                           \
  }                                                                                              \
  DSA_API dsa_status dsa_##op##_supports(const dsa_##op##_params* p) {                           \
    return dsa::c_abi::supports(p);                                                              \
  }                                                                                              \
  DSA_API dsa_status dsa_##op##_workspace_size(const dsa_##op##_params* p, size_t* bytes) {      \
    return dsa::c_abi::workspace_size(p, bytes);                                                 \
  }                                                                                              \
  DSA_API dsa_status dsa_##op##_run(const dsa_##op##_params* p, void* workspace,                 \
                                    size_t workspace_bytes, void* stream) {                      \
    return dsa::c_abi::run(p, workspace, workspace_bytes, stream);                               \
  }                                                                                              \
  DSA_API dsa_status dsa_##op##_run_reference(const dsa_##op##_params* p, dsa_accum accum) {     \
    return dsa::c_abi::run_reference(p, accum);                                                  \
  }                                                                                              \
  }
