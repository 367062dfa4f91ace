// Launch geometry shared by the CUDA C++ kernels: grid-stride loops with 64-bit indices, so
// tensors past 2^31 elements are safe, and a grid capped at a few waves of the device.
#pragma once

#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

namespace mprnet {
namespace cuda {

constexpr int kThreads = 256;

inline int elementwise_blocks(int64_t n) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t wanted = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, sms * 8)));
}

}  // namespace cuda
}  // namespace mprnet
