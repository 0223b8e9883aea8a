// Device location in a CUDA build: ask the runtime what each pointer is. Compiled by the host
// compiler against the CUDA runtime API only (no kernels here).
#include <cuda_runtime_api.h>

#include <string>

#include "common/op_list.hpp"

namespace dsa::detail {

Status locate(const ArgCheck& c, Backend* backend) {
  *backend = Backend::kHost;
  const char* first_arg = nullptr;
  bool first_on_device = false;
  int first_device = -1;
  for (const auto& seen : c.seen()) {
    if (seen.view.numel() == 0) continue;
    cudaPointerAttributes attr{};
    bool on_device = false;
    int device = -1;
    if (cudaPointerGetAttributes(&attr, seen.view.data) == cudaSuccess) {
      on_device = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
      device = attr.device;
    } else {
      cudaGetLastError();  // no driver or no GPU: plain host memory; clear the sticky error
    }
    if (!first_arg) {
      first_arg = seen.arg;
      first_on_device = on_device;
      first_device = device;
      continue;
    }
    if (on_device != first_on_device)
      return Status(StatusCode::kInvalidArgument,
                    std::string(c.op()) + ": " + seen.arg + " is " + (on_device ? "device" : "host") +
                        " memory but " + first_arg + " is " + (first_on_device ? "device" : "host") +
                        " memory (all tensors of one call must live on the same device)");
    if (on_device && device != first_device)
      return Status(StatusCode::kInvalidArgument, std::string(c.op()) + ": " + seen.arg + " is on GPU " +
                                                      std::to_string(device) + " but " + first_arg +
                                                      " is on GPU " + std::to_string(first_device));
  }
  if (first_on_device) *backend = Backend::kCuda;
  return Status();
}

}  // namespace dsa::detail
