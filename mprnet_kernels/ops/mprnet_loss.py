"""mprnet::mprnet_loss, the whole MPRNet training loss over the stage outputs (docs/OPS.md section 5).

    loss = sum_s charbonnier(c_s, y) + edge_weight * sum_s edge(c_s, y),
    c_s = clamp(outputs[s], 0, 1) when clamp, else outputs[s]

The op returns the loss and, when asked, the gradients of the *summed* terms (numel times the
gradient of the loss, as charbonnier_loss and edge_loss return them): grads[s] for each output,
masked by the clamp01 convention (1 strictly inside (0, 1), else 0) when clamp, and for the
target grad_y = -(the unmasked sum over stages). Backward is then one scale by
grad_loss / numel per tensor.

Schema and CPU kernel: csrc/ops/mprnet_loss.cpp and csrc/ops/cpu/mprnet_loss_kernel.cpp (one
pass over the target for all stages and both terms, built on the edge loss's band function).
CUDA tensors run one of two backends (``set_cuda_backend("mprnet_loss", "triton" | "cuda")``,
Triton by default until a GPU benchmark says otherwise): a composition of Triton kernels, per
stage the edge loss's kernels, then one Charbonnier kernel that also adds edge_weight times the
edge gradient, applies the clamp mask and accumulates the target's gradient (triton/mprnet_loss.py
says what that costs); or the one-pass CUDA C++ kernel
csrc/ops/cuda/mprnet_loss_kernel.cu, which reads the target once for up to three stage outputs
and writes every gradient once (tile algorithm in csrc/ops/loss_tile.h).
The autograd below follows the other loss ops' (_loss_autograd.py) over a list of outputs.
"""

from typing import List

import torch

from ._backend import HAS_TRITON, cuda_cpp_kernel, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output
from ._autograd import refuse_double_backward
from ._loss_autograd import grad_scale, wants_grad

_OP = "mprnet::mprnet_loss"


@torch.library.register_fake(_OP)
def _fake(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y):
    check_real_inputs(checks.mprnet_loss, outputs, y)
    grads = [empty_output(o) if grad_outputs else o.new_empty((0,)) for o in outputs]
    gy = empty_output(y) if grad_y else y.new_empty((0,))
    return y.new_empty(()), grads, gy


if HAS_TRITON:  # the Triton module imports triton
    from .triton import mprnet_loss as _triton
else:
    _triton = None

register_cuda("mprnet_loss", "mprnet_loss", default="triton", triton=_triton and _triton.mprnet_loss,
              cuda=cuda_cpp_kernel("mprnet_loss"))


def _setup_context(ctx, inputs, output):
    outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y = inputs
    _, grads, gy = output
    ctx.mark_non_differentiable(*grads, gy)
    # No zero-filled stand-ins for the unused gradients of those outputs (full-size fills).
    ctx.set_materialize_grads(False)
    ctx.numel = y.numel()
    ctx.args = (eps, edge_weight, clamp)
    ctx.n_outputs = len(outputs)
    # A direct torch.ops call may leave out a gradient that autograd needs; keep the inputs
    # then, and run the gradient pass in backward.
    missing = (not grad_outputs and any(o.requires_grad for o in outputs)) or (
        not grad_y and y.requires_grad)
    ctx.recompute = missing
    if missing:
        ctx.save_for_backward(*outputs, y)
    else:
        ctx.save_for_backward(*grads, gy)


def _backward(ctx, grad_loss, _grad_of_grads, _grad_of_grad_y):
    refuse_double_backward(_OP)
    if grad_loss is None:  # grads are not materialized: nothing flowed into the loss
        return [None] * ctx.n_outputs, None, None, None, None, None, None
    saved = ctx.saved_tensors
    if ctx.recompute:
        _, grads, gy = torch.ops.mprnet.mprnet_loss(list(saved[:-1]), saved[-1], *ctx.args, True, True)
    else:
        grads, gy = saved[:-1], saved[-1]
    needs_outputs, needs_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    scale = grad_scale(grad_loss, ctx.numel)
    grad_outputs = [g * scale if need else None for g, need in zip(grads, needs_outputs)]
    return grad_outputs, (gy * scale if needs_y else None), None, None, None, None, None


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def mprnet_loss(outputs: List[torch.Tensor], y: torch.Tensor, eps: float = 1e-3,
                edge_weight: float = 0.05, clamp: bool = False) -> torch.Tensor:
    """sum_s charbonnier(c_s, y) + edge_weight * sum_s edge(c_s, y) over the stage outputs
    (c_s = clamp(outputs[s], 0, 1) when clamp), as a 0-dim tensor of y's dtype.

    outputs and y must be 4-D with one shape, dtype and device (see mprnet_kernels.MPRNetLoss
    for mixed dtypes and a single tensor). edge_weight=0 skips the edge term, as the reference
    does. When grad is enabled, the same pass writes the gradients that backward scales, for
    whichever of outputs and y require grad.
    """
    grad_outputs, grad_y = wants_grad(*outputs), wants_grad(y)
    return torch.ops.mprnet.mprnet_loss(list(outputs), y, eps, edge_weight, clamp, grad_outputs, grad_y)[0]
