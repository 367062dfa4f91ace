"""mprnet::ca_tail, the channel-attention tail of MPRNet's CAB (docs/OPS.md section 1).

    p = mean_hw(x)   h = relu(W1 p + b1)   s = sigmoid(W2 h + b2)   out = x * s + r

``torch.ops.mprnet.ca_tail`` is the public op (``-> Tensor``). It is CompositeImplicitAutograd
over ``ca_tail_forward``, which also returns the small vectors p (N, C), h (N, C/r), s (N, C)
that the backward needs besides x; ``ca_tail_backward`` takes them and makes one reduction
pass over (g, x) and one pass writing dx (dr = g costs nothing). Forward and backward are 4
passes over the feature map each, against about 6 and 10 for eager PyTorch.

Dtypes: x any floating dtype; r of x's dtype, or float32 when x is float16/bfloat16 (the
autocast case: a half-precision body output plus a float32 block input, which the reference
promotes to float32); out takes r's dtype. The weights and biases share one floating dtype of
their own (float32 parameters with a bfloat16 x need no casts); their gradients come back in it.
The MLP runs in float32 (float64 for float64 x; the CPU kernel uses float64 throughout), and p,
h, s are saved in that dtype.

Schema and CPU kernel: csrc/ops/ca_tail.cpp and csrc/ops/cpu/ca_tail_kernel.cpp; CUDA C++:
csrc/ops/cuda/ca_tail_kernel.cu; Triton: triton/ca_tail.py. This file adds the fake functions,
autograd and the CUDA dispatch (``set_cuda_backend("ca_tail", "triton" | "cuda")``).
"""

from typing import Optional

import torch

from ._autograd import refuse_double_backward
from ._backend import HAS_TRITON, cuda_cpp_kernel, register_cuda
from ._checks import check_real_inputs, checks
from ._dtypes import accumulation_dtype
from ._layout import empty_output

_OP = "mprnet::ca_tail_forward"
_BACKWARD_OP = "mprnet::ca_tail_backward"


@torch.library.register_fake(_OP)
def _fake(x, r, w1, b1, w2, b2):
    check_real_inputs(checks.ca_tail_forward, x, r, w1, b1, w2, b2)
    n, c, hidden = x.shape[0], x.shape[1], w1.shape[0]
    vdt = accumulation_dtype(x.dtype)
    return (empty_output(x, r.dtype), x.new_empty((n, c), dtype=vdt),
            x.new_empty((n, hidden), dtype=vdt), x.new_empty((n, c), dtype=vdt))


@torch.library.register_fake(_BACKWARD_OP)
def _fake_backward(grad, x, w1, w2, p, h, s):
    check_real_inputs(checks.ca_tail_backward, grad, x, w1, w2, p, h, s)
    return (empty_output(x), w1.new_empty(w1.shape), w1.new_empty((w1.shape[0],)),
            w1.new_empty(w2.shape), w1.new_empty((x.shape[1],)))


if HAS_TRITON:  # the Triton module imports triton
    from .triton import ca_tail as _triton
else:
    _triton = None

register_cuda("ca_tail", "ca_tail_forward", default="triton", triton=_triton and _triton.ca_tail_forward,
              cuda=cuda_cpp_kernel("ca_tail_forward"))
register_cuda("ca_tail", "ca_tail_backward", default="triton", triton=_triton and _triton.ca_tail_backward,
              cuda=cuda_cpp_kernel("ca_tail_backward"))


# -------------------------------------------------------------------------------------------
# Autograd on ca_tail_forward (ca_tail decomposes into it).

def _setup_context(ctx, inputs, output):
    x, _, w1, b1, w2, b2 = inputs
    _, p, h, s = output
    ctx.mark_non_differentiable(p, h, s)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w1, w2, p, h, s)


def _strided_like(grad, weight):
    """grad with weight's strides. A (C/r, C, 1, 1) weight moved to channels_last has strides
    (C, 1, C, C): the same memory as the kernel's contiguous (C, 1, 1, 1) gradient, but DDP compares
    strides with its bucket views and warns ("Grad strides do not match bucket view strides") and
    copies on every step. The copy here is of a tiny tensor, once."""
    if grad is None or grad.stride() == weight.stride():
        return grad
    return torch.empty_like(weight, dtype=grad.dtype).copy_(grad)


def _backward(ctx, grad, _grad_p, _grad_h, _grad_s):
    refuse_double_backward("mprnet::ca_tail")
    need_x, need_r, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad
    if grad is None:
        return None, None, None, None, None, None
    saved = ctx.saved_tensors  # once: unpacking twice fails under non-reentrant checkpointing
    grads = [None] * 5
    if need_x or need_w1 or need_b1 or need_w2 or need_b2:
        grads = list(torch.ops.mprnet.ca_tail_backward(grad, *saved))
    grad_x, grad_w1, grad_b1, grad_w2, grad_b2 = (g if need else None for g, need in zip(
        grads, (need_x, need_w1, need_b1, need_w2, need_b2)))
    _, w1, w2 = saved[:3]
    grad_w1, grad_w2 = _strided_like(grad_w1, w1), _strided_like(grad_w2, w2)
    return grad_x, (grad if need_r else None), grad_w1, grad_b1, grad_w2, grad_b2


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def ca_tail(x: torch.Tensor, r: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
            w2: torch.Tensor, b2: Optional[torch.Tensor]) -> torch.Tensor:
    """x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2) + r, fused (4 passes forward, 4 backward).

    x: (N, C, H, W); r: like x (x's dtype, or float32 for a float16/bfloat16 x); w1: (C/r, C)
    or the 1x1 conv weight (C/r, C, 1, 1); w2: (C, C/r) or (C, C/r, 1, 1); b1, b2: biases or
    None. The result has r's dtype and x's memory layout (channels_last stays channels_last).
    """
    return torch.ops.mprnet.ca_tail(x, r, w1, b1, w2, b2)
