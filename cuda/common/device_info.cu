// The per-device attribute cache (cuda/common/cuda_common.cuh): one query per device per process.
#include <mutex>

#include "common/cuda_common.cuh"

namespace dsa::cuda {

namespace {
constexpr int kMaxDevices = 64;
std::once_flag g_once[kMaxDevices];
DeviceInfo g_info[kMaxDevices];
cudaError_t g_error[kMaxDevices];
}  // namespace

Status device_info(const char* op, DeviceInfo* info) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    cudaGetLastError();
    return Status(StatusCode::kCudaError, std::string(op) + ": cudaGetDevice failed: " +
                                              (e != cudaSuccess ? cudaGetErrorString(e) : "device id out of range"));
  }
  std::call_once(g_once[dev], [dev] {
    DeviceInfo d;
    d.device = dev;
    cudaError_t err = cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, dev);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&d.cc_minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (err == cudaSuccess)
      err = cudaDeviceGetAttribute(&d.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (err != cudaSuccess) cudaGetLastError();
    g_info[dev] = d;
    g_error[dev] = err;
  });
  if (g_error[dev] != cudaSuccess)
    return Status(StatusCode::kCudaError, std::string(op) + ": device attribute query failed: " +
                                              cudaGetErrorString(g_error[dev]));
  *info = g_info[dev];
  return Status();
}

}  // namespace dsa::cuda
