// The kernels of every op, callable from C++ without the dispatcher. Python reaches the CPU
// kernels through torch.ops.mprnet.* (registered in csrc/ops/cpu/) and the CUDA C++ kernels
// through the CUDA dispatch that mprnet_kernels/ops/ registers (it chooses between them and
// Triton); C++ programs linking the CMake library call these directly.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>
#include <vector>

namespace mprnet {

namespace cpu {
at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z);
// The channel-attention tail of a CAB (csrc/ops/ca_tail.cpp): forward returns (out, p, h, s),
// backward (grad_x, grad_w1, grad_b1, grad_w2, grad_b2).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_forward(
    const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
    const at::Tensor& w2, const std::optional<at::Tensor>& b2);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& p, const at::Tensor& h, const at::Tensor& s);
std::tuple<at::Tensor, at::Tensor> charbonnier_loss(const at::Tensor& x, const at::Tensor& y,
                                                    double eps, bool compute_grad);
// The Laplacian edge loss (csrc/ops/edge_loss.cpp); its per-band building block, reusable by
// other loss kernels, is edge_loss_band in ops/cpu/edge_loss.h.
std::tuple<at::Tensor, at::Tensor> edge_loss(const at::Tensor& x, const at::Tensor& y, double eps,
                                             bool compute_grad);
// The fused multi-stage loss (csrc/ops/mprnet_loss.cpp); its CPU kernel builds on edge_loss's
// band function and the Charbonnier body of ops/cpu/charbonnier.h.
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y);
// Bilinear x2 (align_corners=False) of x plus y in one pass, and grad_x of it, the adjoint
// resize as a gather (csrc/ops/upsample2x_add.cpp): grad (N, C, 2h, 2w) -> (N, C, h, w) in x_dtype.
at::Tensor upsample2x_add(const at::Tensor& x, const at::Tensor& y);
at::Tensor upsample2x_add_backward(const at::Tensor& grad, at::ScalarType x_dtype);
}  // namespace cpu

#ifdef MPRNET_WITH_CUDA
namespace cuda {
at::Tensor sam_gate(const at::Tensor& x1, const at::Tensor& z, const at::Tensor& x);
std::tuple<at::Tensor, at::Tensor> sam_gate_backward(const at::Tensor& grad, const at::Tensor& x1,
                                                     const at::Tensor& z);
// The channel-attention tail of a CAB (csrc/ops/ca_tail.cpp): forward returns (out, p, h, s),
// backward (grad_x, grad_w1, grad_b1, grad_w2, grad_b2).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_forward(
    const at::Tensor& x, const at::Tensor& r, const at::Tensor& w1, const std::optional<at::Tensor>& b1,
    const at::Tensor& w2, const std::optional<at::Tensor>& b2);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> ca_tail_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& p, const at::Tensor& h, const at::Tensor& s);
// The one-pass tiled loss kernels (csrc/ops/cuda/edge_loss_kernel.cu, mprnet_loss_kernel.cu;
// per-tile algorithm in csrc/ops/loss_tile.h), same contracts as the CPU kernels above.
std::tuple<at::Tensor, at::Tensor> edge_loss(const at::Tensor& x, const at::Tensor& y, double eps,
                                             bool compute_grad);
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> mprnet_loss(
    at::TensorList outputs, const at::Tensor& y, double eps, double edge_weight, bool clamp,
    bool grad_outputs, bool grad_y);
}  // namespace cuda
#endif

}  // namespace mprnet
