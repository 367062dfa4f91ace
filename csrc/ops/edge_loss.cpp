// Schema of the Laplacian edge loss (docs/OPS.md section 4, lap exactly as docs/MPRNET.md "Losses"):
//   loss = mean(sqrt(lap(x - y)^2 + eps^2))
//
// When compute_grad is true the forward also writes
//   grad = lap^T(w),  w = lap(x - y) / sqrt(lap(x - y)^2 + eps^2)
// the gradient of the *sum* of the terms with respect to x (the adjoint lap^T, border fold
// included, is derived in cpu/edge_loss_kernel.cpp). The loss is a scalar at the end of the
// graph, so the backward is grad * (grad_loss / numel) for x and its negation for y, done in
// mprnet_kernels/ops/edge_loss.py. grad is kept unscaled like charbonnier_loss's, for the same
// reason (a float16 dL/dx of a mean over millions of elements would be subnormal). With
// compute_grad false, grad is an empty (0-element) tensor and nothing is written.
//
// x and y are 4-D (N, C, H, W) with one shape, dtype and device (any layout, read in place);
// loss is a 0-dim tensor of x's dtype, summed in float32 (float64 for float64) in a fixed order;
// grad takes x's output layout (common/layout.h).
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.edge_loss");
  m.def("edge_loss(Tensor x, Tensor y, float eps, bool compute_grad) -> (Tensor loss, Tensor grad)");
}
