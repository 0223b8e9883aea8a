// Device location in a CPU-only build: every pointer is host memory.
#include "common/op_list.hpp"

namespace dsa::detail {
Status locate(const ArgCheck&, Backend* backend) {
  *backend = Backend::kHost;
  return Status();
}
}  // namespace dsa::detail
