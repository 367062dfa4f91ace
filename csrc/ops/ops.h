// The kernels of every op, callable from C++ without the dispatcher. Python reaches the CPU
// kernels through torch.ops.mprnet.* (registered in csrc/ops/cpu/) and the CUDA C++ kernels
// through the CUDA dispatch that mprnet_kernels/ops/ registers (it chooses between them and
// Triton); C++ programs linking the CMake library call these directly.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace mprnet {

namespace cpu {
at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z);
}  // namespace cpu

#ifdef MPRNET_WITH_CUDA
namespace cuda {
at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z);
}  // namespace cuda
#endif

}  // namespace mprnet
