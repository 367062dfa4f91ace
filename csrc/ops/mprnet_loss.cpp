// Schema of the whole MPRNet training loss (docs/OPS.md section 5, docs/MPRNET.md "Losses"):
//
//   loss = sum_s charbonnier(c_s, y) + edge_weight * sum_s edge(c_s, y)
//   c_s  = clamp(outputs[s], 0, 1) when clamp, else outputs[s]
//
// over the stage outputs, with charbonnier and edge exactly as mprnet::charbonnier_loss and
// mprnet::edge_loss (edge_weight == 0 skips the edge term, as the reference does: no Laplacian,
// so an Inf output gives Inf, not 0 * Inf). The CPU and CUDA C++ kernels read the target once
// for all stages and terms; the Triton backend runs per stage (mprnet_kernels/ops/mprnet_loss.py).
// When asked, the same pass writes the gradients of the *summed* terms (numel times dL/d.,
// unscaled for the reason given in charbonnier_loss.cpp):
//
//   grads[s] = mask_s * g_s   when grad_outputs     g_s = (c_s - y) / sqrt((c_s - y)^2 + eps^2)
//   grad_y   = -sum_s g_s     when grad_y                 + edge_weight * lap^T(w_s)
//
// where mask_s is the library's clamp01 mask (clamp01.h: 1 strictly inside (0, 1), else 0) when
// clamp and 1 otherwise; grad_y is not masked, since the target is not clamped. Backward is then one scale
// by grad_loss / numel (mprnet_kernels/ops/mprnet_loss.py). Gradients not asked for are empty
// (0-element) tensors: grads then holds one per output all the same.
//
// outputs and y are 4-D (N, C, H, W) with one shape, dtype and device, any layout (read in
// place); loss is a 0-dim tensor of y's dtype, summed in float32 (float64 for float64) in a
// fixed order; grads[s] takes outputs[s]'s output layout and grad_y y's (common/layout.h).
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.mprnet_loss");
  m.def(
      "mprnet_loss(Tensor[] outputs, Tensor y, float eps, float edge_weight, bool clamp, "
      "bool grad_outputs, bool grad_y) -> (Tensor loss, Tensor[] grads, Tensor grad_y)");
}
