"""mprnet::edge_loss, MPRNet's Laplacian edge loss (docs/OPS.md section 4, lap as docs/MPRNET.md).

    loss = mean(sqrt(lap(x - y)^2 + eps^2)),   lap(d) = d - G(U(G(d)))

G is replicate-padding by 2 then the 5x5 Gaussian outer(g, g), g = [.05, .25, .4, .25, .05];
U keeps the even rows and columns times 4 and zeroes the rest. lap is linear, so one Laplacian
of d = x - y serves both images. The op returns the loss and, when asked (compute_grad), the
gradient of the *sum* of the terms with respect to x,

    grad = lap^T(w),   w = lap(d) / sqrt(lap(d)^2 + eps^2),   lap^T = I - G^T U G^T,

so the backward is one scale: dL/dx = grad * grad_loss / numel, dL/dy = -dL/dx. G^T is not G
at the borders: replicate padding read each border pixel several times, and the adjoint folds
the gradient of every padded read back onto it (derivation in csrc/ops/cpu/edge_loss_kernel.cpp;
in closed form in _adjoint_weight of triton/edge_loss.py).

Schema and CPU kernel: csrc/ops/edge_loss.cpp and csrc/ops/cpu/edge_loss_kernel.cpp. CUDA
tensors run one of two backends (``set_cuda_backend("edge_loss", "triton" | "cuda")``, Triton
by default until a GPU benchmark says otherwise): the Triton kernels of triton/edge_loss.py
(four passes), or the one-pass CUDA C++ kernel csrc/ops/cuda/edge_loss_kernel.cu, whose tile
algorithm (csrc/ops/loss_tile.h) keeps every intermediate in shared memory. This file adds the
fake function, the CUDA dispatch and the public function; the autograd is the one the loss ops
share (_loss_autograd.py).
"""

import torch

from ._backend import HAS_TRITON, cuda_cpp_kernel, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output
from ._loss_autograd import register_pair_loss_autograd, wants_grad

_OP = "mprnet::edge_loss"


@torch.library.register_fake(_OP)
def _fake(x, y, eps, compute_grad):
    check_real_inputs(checks.edge_loss, x, y)
    grad = empty_output(x) if compute_grad else x.new_empty((0,))
    return x.new_empty(()), grad


if HAS_TRITON:  # the Triton module imports triton
    from .triton import edge_loss as _triton
else:
    _triton = None

register_cuda("edge_loss", "edge_loss", default="triton", triton=_triton and _triton.edge_loss,
              cuda=cuda_cpp_kernel("edge_loss"))


register_pair_loss_autograd(_OP)


def edge_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt(lap(x - y)^2 + eps^2)), lap the one-level Laplacian of MPRNet's edge loss, as a
    0-dim tensor of x's dtype.

    x and y must be 4-D (N, C, H, W) with one shape, dtype and device (no broadcasting or
    promotion: see mprnet_kernels.EdgeLoss for mixed dtypes). When grad is enabled and either
    input requires grad, the forward also writes the gradient that backward scales.
    """
    return torch.ops.mprnet.edge_loss(x, y, eps, wants_grad(x, y))[0]
