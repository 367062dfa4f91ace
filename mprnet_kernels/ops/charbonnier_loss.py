"""mprnet::charbonnier_loss, MPRNet's Charbonnier loss (docs/OPS.md section 3).

    loss = mean(sqrt((x - y)^2 + eps^2))

The op returns the loss and, when asked (compute_grad), the per-element gradient of the *sum*,
grad = (x - y) / sqrt((x - y)^2 + eps^2), written in the same pass that reads x and y. The
backward is then one scale: dL/dx = grad * grad_loss / numel, dL/dy = -dL/dx. grad stays
unscaled, in [-1, 1], so float16 keeps its bits until the incoming (possibly GradScaler-scaled)
grad_loss is applied; dividing by numel first would make it subnormal for large images.

Schema and CPU kernel: csrc/ops/charbonnier_loss.cpp and csrc/ops/cpu/; CUDA tensors run the
Triton kernel of triton/charbonnier_loss.py (this op has no CUDA C++ kernel). This file adds
the fake function, the CUDA dispatch and the public function; the autograd is the one the loss
ops share (_loss_autograd.py).
"""

import torch

from ._backend import HAS_TRITON, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output
from ._loss_autograd import register_pair_loss_autograd, wants_grad

_OP = "mprnet::charbonnier_loss"


@torch.library.register_fake(_OP)
def _fake(x, y, eps, compute_grad):
    check_real_inputs(checks.charbonnier_loss, x, y)
    grad = empty_output(x) if compute_grad else x.new_empty((0,))
    return x.new_empty(()), grad


if HAS_TRITON:  # the Triton module imports triton
    from .triton import charbonnier_loss as _triton
else:
    _triton = None

register_cuda("charbonnier_loss", "charbonnier_loss", default="triton", triton=_triton and _triton.charbonnier_loss)


register_pair_loss_autograd(_OP)


def charbonnier_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((x - y)^2 + eps^2)) as a 0-dim tensor of x's dtype, in one pass over x and y.

    x and y must share shape, dtype and device (no broadcasting or promotion: see
    mprnet_kernels.nn.CharbonnierLoss for mixed dtypes). When grad is enabled and either input
    requires grad, the same pass also writes the gradient that backward scales.
    """
    return torch.ops.mprnet.charbonnier_loss(x, y, eps, wants_grad(x, y))[0]
