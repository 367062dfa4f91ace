#include "build_info.h"

#include <torch/version.h>

// setup.py writes the CUDA note (what toolkit was used, or why none); CMake builds say their option.
#ifdef MPRNET_HAVE_BUILD_CONFIG
#include "mprnet_build_config.h"
#endif

#ifndef MPRNET_CUDA_ARCHS
#define MPRNET_CUDA_ARCHS ""
#endif

#ifndef MPRNET_CUDA_NOTE
#ifdef MPRNET_WITH_CUDA
#define MPRNET_CUDA_NOTE "CUDA kernels built (CMake, MPRNET_WITH_CUDA=ON)"
#else
#define MPRNET_CUDA_NOTE "CUDA kernels not built (CMake, MPRNET_WITH_CUDA=OFF)"
#endif
#endif

namespace mprnet {

BuildInfo build_info() {
#ifdef MPRNET_WITH_CUDA
  return {TORCH_VERSION, true, cuda_runtime_version(), MPRNET_CUDA_ARCHS, MPRNET_CUDA_NOTE};
#else
  return {TORCH_VERSION, false, 0, "", MPRNET_CUDA_NOTE};
#endif
}

}  // namespace mprnet
