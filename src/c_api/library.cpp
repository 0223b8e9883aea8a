// src/c_api/library.cpp — the C ABI's library-level calls (dsa/dsa.h) and the checks that its
// codes equal the C++ enums of dsa/types.hpp.
#include "c_api/abi.hpp"

namespace dsa::c_abi {
namespace {
#define DSA_C_SAME(c_value, cpp_value) \
  static_assert((c_value) == static_cast<int32_t>(cpp_value), #c_value " must equal " #cpp_value);
DSA_C_SAME(DSA_STATUS_OK, StatusCode::kOk)
DSA_C_SAME(DSA_STATUS_INVALID_ARGUMENT, StatusCode::kInvalidArgument)
DSA_C_SAME(DSA_STATUS_NULL_POINTER, StatusCode::kNullPointer)
DSA_C_SAME(DSA_STATUS_MISALIGNED, StatusCode::kMisaligned)
DSA_C_SAME(DSA_STATUS_UNSUPPORTED_SHAPE, StatusCode::kUnsupportedShape)
DSA_C_SAME(DSA_STATUS_UNSUPPORTED_DTYPE, StatusCode::kUnsupportedDtype)
DSA_C_SAME(DSA_STATUS_UNSUPPORTED_ARCH, StatusCode::kUnsupportedArch)
DSA_C_SAME(DSA_STATUS_WORKSPACE_TOO_SMALL, StatusCode::kWorkspaceTooSmall)
DSA_C_SAME(DSA_STATUS_NOT_BUILT_WITH_CUDA, StatusCode::kNotBuiltWithCuda)
DSA_C_SAME(DSA_STATUS_NOT_IMPLEMENTED, StatusCode::kNotImplemented)
DSA_C_SAME(DSA_STATUS_CUDA_ERROR, StatusCode::kCudaError)
DSA_C_SAME(DSA_STATUS_INTERNAL, StatusCode::kInternal)
DSA_C_SAME(DSA_DTYPE_INVALID, DType::kInvalid)
DSA_C_SAME(DSA_DTYPE_F32, DType::kF32)
DSA_C_SAME(DSA_DTYPE_BF16, DType::kBF16)
DSA_C_SAME(DSA_DTYPE_E4M3, DType::kE4M3)
DSA_C_SAME(DSA_DTYPE_I32, DType::kI32)
DSA_C_SAME(DSA_DTYPE_U8, DType::kU8)
DSA_C_SAME(DSA_DTYPE_F64, DType::kF64)
DSA_C_SAME(DSA_SCALE_FORMAT_UE8M0, ScaleFormat::kUe8m0)
DSA_C_SAME(DSA_SCALE_FORMAT_RAW, ScaleFormat::kRaw)
DSA_C_SAME(DSA_LSE_BASE_NATURAL, LseBase::kNatural)
DSA_C_SAME(DSA_LSE_BASE_BASE2, LseBase::kBase2)
DSA_C_SAME(DSA_ROPE_STYLE_NON_INTERLEAVED, RopeStyle::kNonInterleaved)
DSA_C_SAME(DSA_ROPE_STYLE_INTERLEAVED, RopeStyle::kInterleaved)
DSA_C_SAME(DSA_INDEXER_MODE_FP8, IndexerMode::kFp8)
DSA_C_SAME(DSA_INDEXER_MODE_EXACT, IndexerMode::kExact)
DSA_C_SAME(DSA_INDEX_DOMAIN_ABSOLUTE, IndexDomain::kAbsolute)
DSA_C_SAME(DSA_INDEX_DOMAIN_RELATIVE, IndexDomain::kRelative)
DSA_C_SAME(DSA_INDEX_DOMAIN_PAGED_SLOT, IndexDomain::kPagedSlot)
DSA_C_SAME(DSA_MLA_CACHE_FORMAT_FP8, MlaCacheFormat::kFp8)
DSA_C_SAME(DSA_MLA_CACHE_FORMAT_BF16, MlaCacheFormat::kBf16)
DSA_C_SAME(DSA_ACCUM_F32, Accum::kF32)
DSA_C_SAME(DSA_ACCUM_F64, Accum::kF64)
#undef DSA_C_SAME
}  // namespace
}  // namespace dsa::c_abi

extern "C" {

DSA_API const char* dsa_version(void) { return dsa::version_string(); }

DSA_API uint32_t dsa_abi_version(void) { return DSA_ABI_VERSION; }

DSA_API const char* dsa_status_string(dsa_status status) {
  return dsa::status_code_name(static_cast<dsa::StatusCode>(status));
}

DSA_API const char* dsa_last_error_message(void) { return dsa::last_error(); }

}  // extern "C"
