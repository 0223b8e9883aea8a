// tests/gpu/gpu_util.hpp — mirrored host/device buffers for the GPU tests: the same bytes and the
// same views on both sides, so one params builder serves the CPU reference (host pointers) and the
// CUDA path (device pointers). Plain CUDA runtime API; no kernels.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "dsa/dsa.hpp"

namespace dsa::test {

#define GPU_REQUIRE(expr)                                                     \
  do {                                                                        \
    const cudaError_t gpu_require_err_ = (expr);                              \
    INFO(#expr << ": " << cudaGetErrorString(gpu_require_err_));              \
    REQUIRE(gpu_require_err_ == cudaSuccess);                                 \
  } while (0)

// A byte buffer that exists on the host and on the device.
class Mirror {
 public:
  explicit Mirror(size_t bytes) : host_(bytes) {
    GPU_REQUIRE(cudaMalloc(&dev_, bytes > 0 ? bytes : 1));
  }
  ~Mirror() { cudaFree(dev_); }
  Mirror(const Mirror&) = delete;
  Mirror& operator=(const Mirror&) = delete;

  template <typename T>
  static size_t bytes_of(size_t n) { return n * sizeof(T); }

  uint8_t* host() { return host_.data(); }
  void* dev() { return dev_; }
  size_t bytes() const { return host_.size(); }

  // Copies host bytes to the device (inputs).
  void upload() { GPU_REQUIRE(cudaMemcpy(dev_, host_.data(), host_.size(), cudaMemcpyHostToDevice)); }
  // Fills both sides with `byte` (outputs: 0xFF for float outputs, 0x7F for index outputs).
  void poison(uint8_t byte) {
    if (!host_.empty()) std::memset(host_.data(), byte, host_.size());
    GPU_REQUIRE(cudaMemset(dev_, byte, host_.size()));
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> out(host_.size());
    GPU_REQUIRE(cudaMemcpy(out.data(), dev_, host_.size(), cudaMemcpyDeviceToHost));
    return out;
  }
  const std::vector<uint8_t>& host_bytes() const { return host_; }

  template <typename T>
  T* host_as() { return reinterpret_cast<T*>(host_.data()); }

  // A view of this buffer on the chosen side.
  TensorView view(bool device, DType dtype, std::initializer_list<int64_t> shape,
                  std::initializer_list<int64_t> stride = {}) {
    return make_view(device ? dev_ : static_cast<void*>(host_.data()), dtype, shape, stride);
  }

 private:
  std::vector<uint8_t> host_;
  void* dev_ = nullptr;
};

// The device bytes equal the host (reference) bytes; on failure, reports the first difference.
inline void require_same_bytes(const char* what, const Mirror& m) {
  const std::vector<uint8_t> dev = m.download();
  const std::vector<uint8_t>& ref = m.host_bytes();
  size_t first = dev.size(), diffs = 0;
  for (size_t i = 0; i < dev.size(); ++i)
    if (dev[i] != ref[i]) {
      if (first == dev.size()) first = i;
      ++diffs;
    }
  INFO(what << ": " << diffs << " of " << dev.size() << " bytes differ; first at byte " << first
            << (first < dev.size() ? " (cuda " + std::to_string(dev[first]) + " vs reference " +
                                         std::to_string(ref[first]) + ")"
                                   : std::string()));
  REQUIRE(diffs == 0);
}

inline void sync_ok() { GPU_REQUIRE(cudaDeviceSynchronize()); }

}  // namespace dsa::test
