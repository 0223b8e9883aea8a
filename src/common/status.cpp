// Names of dtypes and status codes, the version string, and the thread's last error.
#include <string>

#include "common/last_error.hpp"
#include "dsa/ops.hpp"

namespace dsa {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kBF16: return "bf16";
    case DType::kE4M3: return "e4m3";
    case DType::kI32: return "i32";
    case DType::kU8: return "u8";
    case DType::kF64: return "f64";
    case DType::kInvalid: break;
  }
  return "invalid";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kBF16: return 2;
    case DType::kE4M3: return 1;
    case DType::kI32: return 4;
    case DType::kU8: return 1;
    case DType::kF64: return 8;
    case DType::kInvalid: break;
  }
  return 0;
}

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNullPointer: return "null pointer";
    case StatusCode::kMisaligned: return "misaligned";
    case StatusCode::kUnsupportedShape: return "unsupported shape";
    case StatusCode::kUnsupportedDtype: return "unsupported dtype";
    case StatusCode::kUnsupportedArch: return "unsupported arch";
    case StatusCode::kWorkspaceTooSmall: return "workspace too small";
    case StatusCode::kNotBuiltWithCuda: return "not built with CUDA";
    case StatusCode::kNotImplemented: return "not implemented";
    case StatusCode::kCudaError: return "CUDA error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown status";
}

const char* version_string() {
  return DSA_STRINGIFY(DSA_VERSION_MAJOR) "." DSA_STRINGIFY(DSA_VERSION_MINOR) "." DSA_STRINGIFY(
      DSA_VERSION_PATCH);
}

namespace detail {
namespace {
thread_local std::string g_last_error;
}
const Status& record(const Status& s) {
  if (!s.ok()) g_last_error = s.message();
  return s;
}
const char* last_error_cstr() { return g_last_error.c_str(); }
}  // namespace detail

const char* last_error() { return detail::last_error_cstr(); }

}  // namespace dsa
