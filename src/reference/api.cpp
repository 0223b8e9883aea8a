// src/reference/api.cpp — dsa::ref::run for every op: validate, then the CPU reference. Lives in
// dsa::reference so that a CPU-only consumer needs nothing else.
#include "common/guarded.hpp"
#include "common/last_error.hpp"
#include "common/op_list.hpp"

namespace dsa {

#define DSA_DEFINE_REF(P, name)                                                   \
  Status ref::run(const P& p, Accum accum) {                                      \
    return detail::record(detail::guarded(#name, [&] {                            \
      detail::ArgCheck c(#name);                                                  \
      detail::validate(p, c);                                                     \
      return c.ok() ? detail::reference(p, accum) : c.status();                   \
    }));                                                                          \
  }
DSA_FOR_EACH_OP(DSA_DEFINE_REF)
#undef DSA_DEFINE_REF

}  // namespace dsa
