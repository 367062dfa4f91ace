// What the compiled library was built with, for mprnet_kernels.build_info() and `mprnet-kernels info`.
#pragma once

#include <string>

namespace mprnet {

struct BuildInfo {
  std::string torch_version;  // the torch headers compiled against
  bool with_cuda;             // whether the CUDA C++ kernels are in this build
  int cuda_runtime_version;   // CUDART_VERSION (e.g. 13000), 0 without CUDA
  std::string cuda_archs;     // TORCH_CUDA_ARCH_LIST used for the build, "" without CUDA
  std::string cuda_note;      // one line: the toolkit used, or why there are no CUDA kernels
};

BuildInfo build_info();

#ifdef MPRNET_WITH_CUDA
int cuda_runtime_version();  // defined in a .cu file, where CUDART_VERSION is known
#endif

}  // namespace mprnet
