"""Functional references of the fused feature-map ops, in plain PyTorch (the loss ops' are in
losses.py): what `verify`, the benchmarks and the tests compare each kernel to (docs/OPS.md).

Each is written the way upstream MPRNet computes that step, so that a difference is the
kernel's, never the reference's.
"""

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ca_tail", "effective_window", "local_ca_tail", "local_mean", "replicate_to", "sam_gate",
           "upsample2x_add"]


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


def effective_window(window: Sequence[int], size: Sequence[int]) -> Tuple[int, int]:
    """The window a local channel attention uses on an (H, W) map: (min(H, K1), min(W, K2))."""
    return min(int(size[0]), int(window[0])), min(int(size[1]), int(window[1]))


def local_mean(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """The mean of x over every k1 x k2 window inside the image (a "valid" box filter):
    (N, C, H - k1 + 1, W - k2 + 1), in x's dtype. Computed from an integral image (two cumsums
    and four slices, as TLC does), accumulated in float32 (float64 for float64 inputs), since a
    half-precision running sum over a full-resolution row loses every digit."""
    k1, k2 = int(window[0]), int(window[1])
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    s = F.pad(x.to(acc).cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    box = s[..., k1:, k2:] - s[..., :-k1, k2:] - s[..., k1:, :-k2] + s[..., :-k1, :-k2]
    return (box / (k1 * k2)).to(x.dtype)


def replicate_to(s: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """s (N, C, h, w) padded to (H, W) by replicating its border: (H - h) // 2 rows on top and
    the rest below, the same for columns (TLC's placement of the local statistics)."""
    dh, dw = int(size[0]) - s.shape[-2], int(size[1]) - s.shape[-1]
    return F.pad(s, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")


def local_ca_tail(x: torch.Tensor, r: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                  w2: torch.Tensor, b2: Optional[torch.Tensor], window: Sequence[int]) -> torch.Tensor:
    """ca_tail with local statistics (TLC, Chu et al. 2022): the gate at each position comes from
    the mean over a k1 x k2 window instead of the whole map. window = (k1, k2) with
    1 <= k1 <= H, 1 <= k2 <= W; (H, W) gives exactly ca_tail."""
    hidden, c = w1.shape[0], w1.shape[1]
    w1 = w1.reshape(hidden, c, 1, 1)
    w2 = w2.reshape(c, hidden, 1, 1)
    gate = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(local_mean(x, window), w1, b1)), w2, b2))
    return x * replicate_to(gate, x.shape[-2:]) + r


def upsample2x_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x resize of x (half-pixel centres, no corner alignment) plus y."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + y
