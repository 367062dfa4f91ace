// The memory layout an op writes its outputs in. Kernels work on flat, dense buffers; this
// picks the one layout all inputs are brought to (a no-op when they already have it) and the
// outputs are created in. mprnet_kernels/ops/_layout.py states the same rule for the fake
// functions, which must give compiled graphs the strides of eager runs (opcheck compares them).
#pragma once

#include <ATen/core/Tensor.h>

namespace mprnet {

// channels_last when `t` is 4-D and dense in channels_last order (and not also plainly
// contiguous, as with C == 1 or H == W == 1); contiguous otherwise, non-dense inputs included.
inline at::MemoryFormat output_memory_format(const at::Tensor& t) {
  if (t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

}  // namespace mprnet
