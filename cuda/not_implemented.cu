// CUDA backend entries of ops whose kernels have not landed yet. Each answers with a distinct
// kNotImplemented status — never a silent fallback to the CPU, never a wrong answer. As a
// kernel lands, its op moves out of this list into its own cuda/<op>/ files.
#include "common/op_list.hpp"

#define DSA_CUDA_NOT_YET(X)                          \
  X(RopeTableParams, rope_table)                     \
  DSA_FOR_EACH_TRAINING_OP(X)

namespace dsa::cuda_backend {

#define DSA_CUDA_STUB(P, name)                                                                 \
  Status supports(const P&) {                                                                  \
    return Status(StatusCode::kNotImplemented,                                                 \
                  #name ": the CUDA path is not implemented yet (device pointers given); "     \
                  "pass host pointers to run the CPU reference");                              \
  }                                                                                            \
  size_t workspace_size(const P&) { return 0; }                                                \
  Status run(const P& p, void*, size_t, Stream) { return cuda_backend::supports(p); }
DSA_CUDA_NOT_YET(DSA_CUDA_STUB)
#undef DSA_CUDA_STUB

}  // namespace dsa::cuda_backend
