"""Image quality metrics: PSNR, SSIM and the BT.601 luma (Y) channel, with no optional dependency.

- ``psnr``: per image, over every pixel and channel of [0, 1] images (peak 1), the output clamped
  to [0, 1]; an exact match is capped at 100 dB (MIN_MSE) so means stay finite. On 8-bit images
  this is MATLAB's ``psnr`` on uint8 RGB and upstream's ``torchPSNR``.
- ``ssim``: the index of Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004) as their reference
  code computes it: an 11 x 11 Gaussian window of sigma 1.5 (normalised to sum 1), K1 = 0.01,
  K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2 for the data range L, population (not sample)
  statistics; the map is averaged over the positions where the whole window lies inside the
  image (``border="valid"``, the reference code's ``filter2(..., 'valid')``, as skimage crops
  its map too), then over the channels. ``border="reflect"`` instead pads the image by
  reflection and averages the map over every pixel, which is what torchmetrics >= 1.0 computes
  (and what `train` logged when it used torchmetrics).
- ``rgb_to_y``: Y of MATLAB's ``rgb2ycbcr`` (BT.601, studio range 16-235 out of 255), the channel
  MATLAB evaluation scripts score deraining on.

Validation compares the stage-3 output clamped to [0, 1] with the target, image by image; the
run's figure is the mean over images (as upstream reports PSNR and SSIM).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F

#: PSNR of an exact match would be infinite; cap it so means stay finite (1e-10 MSE = 100 dB).
MIN_MSE = 1e-10

#: SSIM's window and constants (Wang et al. 2004, and their reference implementation).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_BORDERS = ("valid", "reflect")

#: MATLAB rgb2ycbcr's Y row: Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 1].
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, C, H, W) images with values in [0, 1] (float32, or float64
    when given float64)."""
    dtype = torch.promote_types(output.dtype, torch.float32) if output.is_floating_point() else torch.float32
    mse = (output.to(dtype).clamp(0, 1) - target.to(dtype)).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MIN_MSE))


def _check_pair(output, target, name: str = "output") -> None:
    for arg, value in ((name, output), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{arg}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dim() != 4 or not value.is_floating_point():
            raise ValueError(f"{arg}: expected a floating-point (N, C, H, W) tensor, got "
                             f"{value.dtype} of shape {tuple(value.shape)}")
    if output.shape != target.shape:
        raise ValueError(f"target: expected the shape of {name}, {tuple(output.shape)}, got {tuple(target.shape)}")


def _gaussian() -> list:
    """The 1-D Gaussian whose outer product with itself is the 11 x 11 window (sums to 1)."""
    g = [math.exp(-((i - (SSIM_WINDOW - 1) / 2) ** 2) / (2 * SSIM_SIGMA ** 2)) for i in range(SSIM_WINDOW)]
    return [v / math.fsum(g) for v in g]


def _blur(t: torch.Tensor, g: list) -> torch.Tensor:
    """The window's weighted mean of t (..., H, W) at every position where it fits: (..., H - 10,
    W - 10). Separable, as shifted slices added in place, which is about ten times faster than
    conv2d for these small kernels on a CPU (a 720p image pair in a fraction of a second)."""
    k = len(g)
    rows = t[..., : t.shape[-2] - k + 1, :] * g[0]
    for i in range(1, k):
        rows.add_(t[..., i: t.shape[-2] - k + 1 + i, :], alpha=g[i])
    out = rows[..., : rows.shape[-1] - k + 1] * g[0]
    for j in range(1, k):
        out.add_(rows[..., j: rows.shape[-1] - k + 1 + j], alpha=g[j])
    return out


def ssim(output: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0,
         border: str = "valid") -> torch.Tensor:
    """Per-image SSIM of (N, C, H, W) images (module docstring): the local index averaged over
    the map, then over the C channels. Computed in float64 (float32 on mps, which has none);
    returned in that dtype, shape (N,).

    border="valid" needs H and W of at least 11 (the window); "reflect" needs more than 5.
    Raises ValueError (or TypeError) naming a bad argument."""
    _check_pair(output, target)
    if border not in SSIM_BORDERS:
        raise ValueError(f"border: expected one of {', '.join(map(repr, SSIM_BORDERS))}, got {border!r}")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"data_range: expected a positive number, got {data_range!r}")
    n, _, h, w = output.shape
    half = SSIM_WINDOW // 2
    least = SSIM_WINDOW if border == "valid" else half + 1
    if h < least or w < least:
        raise ValueError(f"output: SSIM with border={border!r} needs images of at least {least} x {least} "
                         f"pixels (its window is {SSIM_WINDOW} x {SSIM_WINDOW}), got {h} x {w}")
    dtype = torch.float32 if output.device.type == "mps" else torch.float64
    x, y = output.to(dtype), target.to(dtype)
    if border == "reflect":
        x = F.pad(x, (half, half, half, half), mode="reflect")
        y = F.pad(y, (half, half, half, half), mode="reflect")
    # One pass over the five maps the index needs (5N images of C channels).
    mu_x, mu_y, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y]), _gaussian()).split(n)
    var_x = (xx - mu_x * mu_x).clamp_min(0)  # variances are >= 0; rounding can make them -1e-17
    var_y = (yy - mu_y * mu_y).clamp_min(0)
    cov = xy - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return index.flatten(2).mean(2).mean(1)


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """The Y (luma) channel of (..., 3, H, W) RGB in [0, 1] as MATLAB's rgb2ycbcr gives it for
    floating-point input (BT.601, 16/255 to 235/255): shape (..., 1, H, W). MATLAB rounds Y to
    an integer for uint8 input; round(255 Y) / 255 reproduces that."""
    if not isinstance(image, torch.Tensor) or image.dim() < 3 or image.shape[-3] != 3 or not image.is_floating_point():
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a floating-point (..., 3, H, W) RGB tensor, got {shape}")
    weights = torch.tensor(Y_WEIGHTS, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return ((image * weights).sum(-3, keepdim=True) + Y_OFFSET) / 255.0


def validation_ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM as training's validation scores it: the output clamped to [0, 1] and
    border="reflect", the numbers torchmetrics gave before SSIM was the library's own, so a
    run's log.csv keeps one meaning, and validation images down to 6 x 6 are scored."""
    return ssim(output.float().clamp(0, 1), target.float(), data_range=1.0, border="reflect")

