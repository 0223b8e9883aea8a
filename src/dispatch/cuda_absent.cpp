// The CUDA backend of a CPU-only build. locate() never reports device memory here, so these are
// reached only through misuse; they still answer with a precise status.
#include "common/op_list.hpp"

namespace dsa::cuda_backend {

#define DSA_CUDA_ABSENT(P, name)                                                             \
  Status supports(const P&) {                                                                \
    return Status(StatusCode::kNotBuiltWithCuda,                                             \
                  #name ": this libdsa was built without CUDA (DSA_ENABLE_CUDA=OFF)");       \
  }                                                                                          \
  size_t workspace_size(const P&) { return 0; }                                              \
  Status run(const P& p, void*, size_t, Stream) { return cuda_backend::supports(p); }
DSA_FOR_EACH_OP(DSA_CUDA_ABSENT)
#undef DSA_CUDA_ABSENT

}  // namespace dsa::cuda_backend
