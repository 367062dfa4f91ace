"""Functional references of the fused feature-map ops, in plain PyTorch (the loss ops' are in
losses.py): what `verify`, the benchmarks and the tests compare each kernel to (docs/OPS.md).

Each is written the way upstream MPRNet computes that step, so that a difference is the
kernel's, never the reference's.
"""

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["ca_tail", "sam_gate", "upsample2x_add"]


def sam_gate(x1: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The SAM's gate: x1 * sigmoid(z) + x."""
    return x1 * torch.sigmoid(z) + x


def ca_tail(x: torch.Tensor, r: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
            w2: torch.Tensor, b2: Optional[torch.Tensor]) -> torch.Tensor:
    """A CAB's channel attention and residual add: x * CALayer-gate(x) + r, the gate being
    sigmoid(conv1x1(relu(conv1x1(mean_hw(x), w1, b1)), w2, b2)); w1, w2 as 1x1 conv weights or
    as the matrices they stand for."""
    hidden, c = w1.shape[0], w1.shape[1]
    w1 = w1.reshape(hidden, c, 1, 1)
    w2 = w2.reshape(c, hidden, 1, 1)
    gate = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(F.adaptive_avg_pool2d(x, 1), w1, b1)), w2, b2))
    return x * gate + r


def upsample2x_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x resize of x (half-pixel centres, no corner alignment) plus y."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + y
