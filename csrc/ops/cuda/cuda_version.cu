#include <cuda_runtime_api.h>

#include "build_info.h"

namespace mprnet {
int cuda_runtime_version() { return CUDART_VERSION; }
}  // namespace mprnet
