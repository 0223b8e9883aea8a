// src/dispatch/dispatch.cpp — supports / workspace_size / run for every op, generated from
// DSA_FOR_EACH_OP: validate, find the pointers' device, then call the CPU reference or the CUDA
// backend. No exception crosses the API.
#include "common/guarded.hpp"
#include "common/last_error.hpp"
#include "common/op_list.hpp"

namespace dsa::detail {
namespace {

template <class P>
Status validate_and_locate(const char* op, const P& p, Backend* backend) {
  ArgCheck c(op);
  validate(p, c);
  if (!c.ok()) return c.status();
  return locate(c, backend);
}

template <class P>
Status supports_impl(const char* op, const P& p) {
  Backend b;
  Status s = validate_and_locate(op, p, &b);
  if (!s.ok() || b == Backend::kHost) return s;
  return cuda_backend::supports(p);
}

template <class P>
size_t workspace_impl(const char* op, const P& p) {
  Backend b;
  if (!validate_and_locate(op, p, &b).ok() || b == Backend::kHost) return 0;
  return cuda_backend::workspace_size(p);
}

template <class P>
Status run_impl(const char* op, const P& p, void* workspace, size_t workspace_bytes, Stream stream) {
  Backend b;
  Status s = validate_and_locate(op, p, &b);
  if (!s.ok()) return s;
  if (b == Backend::kHost) return reference(p, Accum::kF32);
  s = cuda_backend::supports(p);
  if (!s.ok()) return s;
  const size_t need = cuda_backend::workspace_size(p);
  if (workspace_bytes < need)
    return Status(StatusCode::kWorkspaceTooSmall, std::string(op) + ": workspace_bytes = " +
                                                      std::to_string(workspace_bytes) +
                                                      " is smaller than workspace_size() = " +
                                                      std::to_string(need));
  if (need > 0 && workspace == nullptr)
    return Status(StatusCode::kNullPointer, std::string(op) + ": workspace is null but " +
                                                std::to_string(need) + " bytes are required");
  if (need > 0 && reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return Status(StatusCode::kMisaligned, std::string(op) + ": workspace must be 256-byte aligned");
  return cuda_backend::run(p, workspace, workspace_bytes, stream);
}

}  // namespace
}  // namespace dsa::detail

namespace dsa {

#define DSA_DEFINE_OP(P, name)                                                                \
  Status supports(const P& p) {                                                               \
    return detail::record(detail::guarded(#name, [&] { return detail::supports_impl(#name, p); })); \
  }                                                                                           \
  size_t workspace_size(const P& p) {                                                         \
    try {                                                                                     \
      return detail::workspace_impl(#name, p);                                                \
    } catch (...) {                                                                           \
      return 0;                                                                               \
    }                                                                                         \
  }                                                                                           \
  Status run(const P& p, void* workspace, size_t workspace_bytes, Stream stream) {            \
    return detail::record(detail::guarded(                                                    \
        #name, [&] { return detail::run_impl(#name, p, workspace, workspace_bytes, stream); })); \
  }
DSA_FOR_EACH_OP(DSA_DEFINE_OP)
#undef DSA_DEFINE_OP

}  // namespace dsa
