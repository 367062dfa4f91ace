#include "build_info.h"

#include <torch/version.h>

#ifndef MPRNET_CUDA_ARCHS
#define MPRNET_CUDA_ARCHS ""
#endif

namespace mprnet {

BuildInfo build_info() {
#ifdef MPRNET_WITH_CUDA
  return {TORCH_VERSION, true, cuda_runtime_version(), MPRNET_CUDA_ARCHS};
#else
  return {TORCH_VERSION, false, 0, ""};
#endif
}

}  // namespace mprnet
