// Schema of mprnet::upsample2x_add, the SkipUpSample/UpSample "resize and add in one pass"
// (docs/OPS.md section 6):
//
//   out = bilinear_x2(x) + y      x (N, C, h, w), y (N, C, 2h, 2w)
//
// bilinear_x2 is exactly F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).
// Along one dimension of size n, output index o in [0, 2n) reads the source coordinate
// s = (o + 0.5) / 2 - 0.5, clamped below at 0; i0 = floor(s), i1 = min(i0 + 1, n - 1),
// l1 = s - i0, l0 = 1 - l1, and the output is l0 x[i0] + l1 x[i1]. With o = 2k this gives
//
//   o = 0           s = 0 (clamped from -0.25)  1.00 x[0] + 0.00 x[min(1, n - 1)]
//   o = 2k, k >= 1  s = k - 0.25                0.25 x[k - 1] + 0.75 x[k]
//   o = 2k + 1      s = k + 0.25                0.75 x[k] + 0.25 x[min(k + 1, n - 1)]
//
// so the last output (o = 2n - 1) is 0.75 x[n-1] + 0.25 x[n-1], and for n = 1 every output is
// x[0]. In 2-D the weights are the product of a row weight and a column weight: each output
// blends a 2x2 neighbourhood with weights from {0.75, 0.25} x {0.75, 0.25} (1 and 0 on the first
// row/column). The weight-0 tap at o = 0 is kept on purpose: the reference computes it, so an
// Inf in x[1] makes out[0] NaN (0 * Inf) there, and the kernels reproduce that.
//
// The backward is the exact adjoint of that linear map (grad_y = grad needs no kernel):
// grad_x[i] collects, per dimension, the grad entries whose taps read x[i]:
//
//   0 < i < n - 1   0.25 g[2i - 1] + 0.75 g[2i] + 0.75 g[2i + 1] + 0.25 g[2i + 2]
//   i = 0           1.00 g[0] + 0.75 g[1] + 0.25 g[2]                 (n >= 2)
//   i = n - 1       0.25 g[2n - 3] + 0.75 g[2n - 2] + 1.00 g[2n - 1]  (n >= 2)
//   n = 1           g[0] + g[1]
//
// i.e. the 4-tap [0.25, 0.75, 0.75, 0.25] stencil at stride 2 with the taps that fall off either
// end folded onto the border entry; plus, for i = 1, the weight-0 tap 0 * g[0] of the forward's
// o = 0 (NaN propagation only). In 2-D each grad_x pixel gathers a 4x4 neighbourhood of grad with
// the product weights: a gather, so every output is written once, by one thread, deterministically
// (the reference's upsample_bilinear2d_backward scatters, with atomics on CUDA).
//
// Dtypes: out has the dtype eager `up(x) + y` gives, torch.promote_types(x, y): under bf16
// autocast the conv output x is bfloat16 and y bfloat16 (out bfloat16) or float32 (out float32).
// Arithmetic is float32 for float32/float16/bfloat16 outputs (half inputs are widened, one
// rounding at the end, where eager rounds the resize to x's dtype first) and float64 for float64.
// Layout: out in y's output layout (common/layout.h); x and y may each be NCHW, channels_last or
// strided. upsample2x_add_backward(grad, x_dtype) returns grad_x, (N, C, H/2, W/2) for grad
// (N, C, H, W) with even H and W, in x_dtype (the dtype of the x it is the gradient of) and in
// grad's output layout; h and w need not be passed because y's size is exactly twice x's.
//
// CPU kernels: csrc/ops/cpu/upsample2x_add_kernel.cpp. Fake functions, autograd, the Triton
// kernels (forward and backward) and the CUDA dispatch: mprnet_kernels/ops/upsample2x_add.py.
#include <torch/library.h>

#include "common/python_module.h"

TORCH_LIBRARY_FRAGMENT(mprnet, m) {
  MPRNET_SET_PYTHON_MODULE(m, "mprnet_kernels.ops.upsample2x_add");
  m.def("upsample2x_add(Tensor x, Tensor y) -> Tensor");
  m.def("upsample2x_add_backward(Tensor grad, ScalarType x_dtype) -> Tensor");
}
