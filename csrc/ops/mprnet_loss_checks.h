// The argument checks every mprnet_loss kernel makes before anything else (the CPU kernel, the
// CUDA kernel and the CPU run of the CUDA tile code), so that each rejects the same inputs with the
// same message naming the argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

#include "common/checks.h"

namespace mprnet {

inline void check_mprnet_loss_inputs(const char* op, at::TensorList outputs, const at::Tensor& y,
                                     c10::DeviceType device) {
  check_floating(op, "y", y);
  check_device_type(op, "y", y, device);
  TORCH_CHECK_VALUE(y.dim() == 4, op, ": y must be a 4-D (N, C, H, W) tensor, got shape ", y.sizes());
  TORCH_CHECK_VALUE(!outputs.empty(), op, ": outputs must hold at least one tensor, got none");
  for (size_t s = 0; s < outputs.size(); ++s) {
    const std::string name = "outputs[" + std::to_string(s) + "]";
    check_like(op, name.c_str(), outputs[s], "y", y);
  }
}

}  // namespace mprnet
