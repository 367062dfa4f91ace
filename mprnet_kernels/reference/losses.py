"""Reference training losses of MPRNet (docs/MPRNET.md, "Losses (training)"; docs/OPS.md, sections 3 to 5).

Plain eager PyTorch, kept in the same form as upstream (the edge loss takes two separate
Laplacians rather than one of the difference) so that fused kernels, which are free to use the
linearity of the Laplacian, are checked against the original formulation.
"""

from __future__ import annotations

from typing import List, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "clamp01",
    "charbonnier_loss",
    "laplacian",
    "edge_loss",
    "CharbonnierLoss",
    "EdgeLoss",
    "MPRNetLoss",
]

# 1-D binomial-like smoothing taps; the 5x5 kernel is their outer product (sums to 1).
_GAUSS_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


def check_floating(name: str, **tensors: torch.Tensor) -> None:
    """TypeError naming the argument when an image is not floating point: an 8-bit target
    would promote to 0-255 floats and give a large, plausible-looking loss."""
    for arg, t in tensors.items():
        if not t.is_floating_point():
            raise TypeError(f"{name}: {arg} is {t.dtype}; the losses take floating-point images with "
                            f"values in [0, 1] (for 8-bit images: {arg}.float() / 255)")


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    check_floating(name, prediction=x, target=y)
    # Broadcasting would silently compute a different loss; refuse it instead.
    if x.shape != y.shape:
        raise ValueError(f"{name}: prediction and target shapes differ: "
                         f"{tuple(x.shape)} vs {tuple(y.shape)}")


def clamp01(x: torch.Tensor) -> torch.Tensor:
    """clamp(x, 0, 1) with the library's gradient convention, the one definition every backend
    implements (csrc/ops/clamp01.h, the Triton CLAMP path): the gradient passes where
    0 < x < 1 and nowhere else, so it is 0 at exactly 0 and 1, outside [0, 1] and at NaN.

    Values are torch.clamp's (NaN stays NaN). Its gradient is not: torch.clamp passes the
    gradient at the bounds in some releases (2.11: [0, 1, 1, 1, 0] at x = -0.5, 0, 0.5, 1, 1.5)
    and not in others (2.14: [0, 0, 1, 0, 0]), and results must not depend on the release."""
    inside = (x > 0) & (x < 1)
    return torch.where(inside, x, x.detach().clamp(0, 1))


def charbonnier_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((x - y)^2 + eps^2)): a smooth L1 that stays differentiable at zero error."""
    _check_pair("charbonnier_loss", x, y)
    diff = x - y
    return torch.mean(torch.sqrt(diff * diff + eps * eps))


def _gauss_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """(channels, 1, 5, 5) depthwise Gaussian on ``like``'s device and dtype.

    Built per call rather than stored, so the loss works for any channel count, dtype and device
    without a buffer (upstream keeps it outside the state_dict too).
    """
    taps = torch.tensor(_GAUSS_TAPS, dtype=like.dtype, device=like.device)
    kernel_2d = torch.outer(taps, taps)
    return kernel_2d.expand(channels, 1, 5, 5).contiguous()


def _gauss_blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Replicate-pad by 2 on every side, then a valid depthwise 5x5 correlation."""
    padded = F.pad(img, (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, kernel, groups=img.shape[1])


def laplacian(img: torch.Tensor) -> torch.Tensor:
    """One level of a Laplacian pyramid: ``img - G(upsampled(downsampled(G(img))))``.

    G is the 5x5 Gaussian with replicate padding.  Down/up sampling is done in place on the
    full grid: keep the even rows and columns of ``G(img)`` (times 4, restoring the energy lost
    to the zeros) and zero the rest.  Note that G's replicate padding then repeats the border row
    or column of that sparse map, which is zero when H or W is even; this border behaviour is
    part of the definition and is kept as is.
    """
    if img.dim() != 4:
        raise ValueError(
            f"laplacian: expected an (N, C, H, W) tensor, got shape {tuple(img.shape)}")
    kernel = _gauss_kernel(img.shape[1], img)
    blurred = _gauss_blur(img, kernel)
    sparse = torch.zeros_like(blurred)
    sparse[:, :, ::2, ::2] = blurred[:, :, ::2, ::2] * 4
    return img - _gauss_blur(sparse, kernel)


def edge_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier distance between the Laplacians of ``x`` and ``y`` (two separate Laplacians)."""
    _check_pair("edge_loss", x, y)
    return charbonnier_loss(laplacian(x), laplacian(y), eps)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(x, y, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class EdgeLoss(nn.Module):
    """Module form of :func:`edge_loss`; works for any channel count, dtype and device."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return edge_loss(x, y, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def stage_outputs(outputs: Union[Sequence[torch.Tensor], torch.Tensor]) -> List[torch.Tensor]:
    """The stage outputs an MPRNetLoss takes, as a list: the model's list, or one tensor."""
    if isinstance(outputs, torch.Tensor):
        outputs = [outputs]
    outputs = list(outputs)
    if not outputs:
        raise ValueError("MPRNetLoss: expected at least one output tensor, got none")
    return outputs


def mprnet_loss(outputs: Union[Sequence[torch.Tensor], torch.Tensor], target: torch.Tensor,
                eps: float = 1e-3, edge_weight: float = 0.05, clamp: bool = False) -> torch.Tensor:
    """The functional form of `MPRNetLoss` (same arguments, in the op's order)."""
    outputs = stage_outputs(outputs)
    check_floating("MPRNetLoss", target=target, **{f"outputs[{i}]": o for i, o in enumerate(outputs)})
    if clamp:
        outputs = [clamp01(out) for out in outputs]
    total = sum(charbonnier_loss(out, target, eps) for out in outputs)
    if edge_weight != 0:
        edge = sum(edge_loss(out, target, eps) for out in outputs)
        total = total + edge_weight * edge
    return total


class MPRNetLoss(nn.Module):
    """The MPRNet training objective over all stage outputs.

    ``loss(outputs, target) = sum_s Charbonnier(out_s, target)
    + edge_weight * sum_s Edge(out_s, target)``, where ``outputs`` is the list the model returns.

    * Deblurring/deraining recipe: ``MPRNetLoss()`` (edge_weight 0.05).
    * Denoising recipe: ``MPRNetLoss(edge_weight=0, clamp=True)``: Charbonnier alone on outputs
      clamped to [0, 1] (the target is not clamped; the clamp's gradient is ``clamp01``'s).

    ``edge_weight=0`` skips the edge term entirely (no Laplacians are computed), so it costs and
    differentiates exactly like the Charbonnier sum alone.
    """

    def __init__(self, edge_weight: float = 0.05, eps: float = 1e-3, clamp: bool = False):
        super().__init__()
        self.edge_weight = edge_weight
        self.eps = eps
        self.clamp = clamp

    def forward(self, outputs: Union[Sequence[torch.Tensor], torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        return mprnet_loss(outputs, target, self.eps, self.edge_weight, self.clamp)

    def extra_repr(self) -> str:
        return f"edge_weight={self.edge_weight}, eps={self.eps}, clamp={self.clamp}"
