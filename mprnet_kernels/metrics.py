"""Validation metrics: PSNR (always) and SSIM (when torchmetrics is installed).

Both compare the stage-3 output clamped to [0, 1] with the target, image by image, in float32;
the run's figure is the mean over images (as upstream reports PSNR).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

#: PSNR of an exact match would be infinite; cap it so means stay finite (1e-10 MSE = 100 dB).
MIN_MSE = 1e-10


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (N, C, H, W) images with values in [0, 1]."""
    mse = (output.float().clamp(0, 1) - target.float()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(1.0 / mse.clamp_min(MIN_MSE))


def ssim_function() -> Tuple[Optional[Callable], Optional[str]]:
    """(ssim(output, target) -> per-image SSIM, None) or (None, why not): torchmetrics is an
    optional extra, and training must not need it."""
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure
    except ImportError as e:
        return None, (f"SSIM not computed: torchmetrics is not installed ({e}); "
                      "pip install mprnet-kernels[train] to add it")

    def ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return structural_similarity_index_measure(output.float().clamp(0, 1), target.float(),
                                                   data_range=1.0, reduction="none")

    return ssim, None
