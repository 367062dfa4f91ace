"""mprnet::upsample2x_add, MPRNet's SkipUpSample "resize and add in one pass" (docs/OPS.md
section 6).

    out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + y
    grad_x = the adjoint resize of g (a gather: each x pixel collects a 4x4 neighbourhood of g)
    grad_y = g

x is (N, C, h, w) and y (N, C, 2h, 2w). Along one dimension of size n the resize is

    out[0]      = 1.00 x[0]     + 0.00 x[min(1, n-1)]
    out[2k]     = 0.25 x[k-1]   + 0.75 x[k]              (k >= 1)
    out[2k + 1] = 0.75 x[k]     + 0.25 x[min(k+1, n-1)]

and its adjoint (grad_x[i] for 0 < i < n-1) 0.25 g[2i-1] + 0.75 g[2i] + 0.75 g[2i+1] +
0.25 g[2i+2], the taps off either end folded onto the border (csrc/ops/upsample2x_add.cpp has the
derivation and every edge case). The weight-0 taps are kept, so NaN and Inf propagate exactly as
in PyTorch's own resize and its backward (0 * Inf = NaN included). The backward is deterministic
(no atomics), unlike upsample_bilinear2d_backward on CUDA.

Dtypes: out has torch.promote_types(x.dtype, y.dtype), what eager ``up(x) + y`` gives: under
bf16 autocast the conv output x is bfloat16, and y bfloat16 or float32. Arithmetic is float32
(float64 when out is float64), so half inputs are rounded once, at the end. grad_x comes back in
x's dtype, grad_y in y's. Layout: out in y's output layout (channels_last in, channels_last out),
grad_x in grad's; x and y may each be NCHW, channels_last or strided.

Schema and CPU kernels: csrc/ops/upsample2x_add.cpp and csrc/ops/cpu/upsample2x_add_kernel.cpp;
Triton kernels (forward and backward): triton/upsample2x_add.py. This file adds the fake
functions, autograd and their registration as the CUDA dispatch (Triton is the only CUDA
backend of this op).
"""

import torch

from ._autograd import refuse_double_backward
from ._backend import HAS_TRITON, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output

_OP = "mprnet::upsample2x_add"
_BACKWARD_OP = "mprnet::upsample2x_add_backward"


def _fake(x, y):
    check_real_inputs(checks.upsample2x_add, x, y)
    return empty_output(y, torch.promote_types(x.dtype, y.dtype))


def _fake_backward(grad, x_dtype):
    check_real_inputs(checks.upsample2x_add_backward, grad, x_dtype)
    # grad's shape with H and W halved; any rank here, the kernels report a grad that is not 4-D.
    return empty_output(grad, x_dtype, (*grad.shape[:-2], grad.shape[-2] // 2, grad.shape[-1] // 2))


if HAS_TRITON:  # the Triton module imports triton
    from .triton import upsample2x_add as _triton
else:
    _triton = None


def _setup_context(ctx, inputs, output):
    x, y = inputs
    # Only dtypes: the backward needs neither tensor (grad_x's shape follows from grad's).
    ctx.x_dtype, ctx.y_dtype = x.dtype, y.dtype


def _backward(ctx, grad):
    refuse_double_backward(_OP)
    grad_x = grad_y = None
    if ctx.needs_input_grad[0]:
        grad_x = torch.ops.mprnet.upsample2x_add_backward(grad, ctx.x_dtype)
    if ctx.needs_input_grad[1]:
        grad_y = grad if grad.dtype == ctx.y_dtype else grad.to(ctx.y_dtype)
    return grad_x, grad_y


torch.library.register_fake(_OP)(_fake)
torch.library.register_fake(_BACKWARD_OP)(_fake_backward)
register_cuda("upsample2x_add", "upsample2x_add", default="triton", triton=_triton and _triton.upsample2x_add)
register_cuda("upsample2x_add", "upsample2x_add_backward", default="triton",
              triton=_triton and _triton.upsample2x_add_backward)
torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def upsample2x_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + y in one pass,
    for x (N, C, h, w) and y (N, C, 2h, 2w); the result has y's layout and the dtype eager
    promotion gives (torch.promote_types(x.dtype, y.dtype))."""
    return torch.ops.mprnet.upsample2x_add(x, y)
