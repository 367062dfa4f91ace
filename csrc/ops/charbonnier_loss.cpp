// Schema of the Charbonnier loss (docs/OPS.md section 3):
//   loss = mean(sqrt((x - y)^2 + eps^2))
//
// One pass reads x and y and, when compute_grad is true, also writes
//   grad = (x - y) / sqrt((x - y)^2 + eps^2)
// the gradient of the *sum* of the terms with respect to x. The loss is a scalar at the end of
// the graph, so the backward is then only grad * (grad_loss / numel) (and its negation for y),
// done in mprnet_kernels/ops/charbonnier_loss.py. grad is kept unscaled, in [-1, 1], rather than
// divided by numel: for a float16 loss over a few million elements, dL/dx itself would be
// subnormal in float16 and lose most of its bits before a GradScaler's scale could lift it.
// With compute_grad false, grad is an empty (0-element) tensor and nothing is written.
//
// x and y have one shape (any number of dimensions), dtype and device; the sum is accumulated
// in float32 (float64 for float64) in a fixed order, and loss is a 0-dim tensor of x's dtype.
// grad takes x's output layout (common/layout.h).
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.charbonnier_loss");
  m.def("charbonnier_loss(Tensor x, Tensor y, float eps, bool compute_grad) -> (Tensor loss, Tensor grad)");
}
