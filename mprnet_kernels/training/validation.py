"""Validation on whole images: PSNR (and SSIM) of the stage-3 output, sharded over processes.

Sizes: MPRNet needs H and W multiples of 8, validation images need not be. Each image is padded
at the bottom and right by reflection up to the next multiple of 8, restored, and the output is
cropped back to the original size, so every pixel of every image is scored (a center crop would
drop up to 7 rows and columns). Process r of W scores images r, r + W, ...; the sums are added
over processes, so every process gets the same mean (and the same best-checkpoint decision).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .distributed import Dist, all_reduce_sum
from ..cpu_cache import empty_cpu_cache
from ..images import pad_to_multiple
from ..metrics import psnr


@torch.no_grad()
def validate(model, loader, d: Dist, amp: bool, ssim: Optional[Callable],
             baseline: bool = False) -> Tuple[float, Optional[float]]:
    """(mean PSNR, mean SSIM or None) over the validation set. baseline=True scores the
    degraded inputs themselves (what doing nothing achieves) instead of the model's output."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # psnr, ssim, images
    try:
        for inp, tgt in loader:
            inp = inp.to(d.device, non_blocking=True)
            tgt = tgt.to(d.device, non_blocking=True)
            if baseline:
                out = inp
            else:
                h, w = inp.shape[-2:]
                x = pad_to_multiple(inp)
                if d.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(x)[0]
                out = out[..., :h, :w].float()
            out = out.clamp(0, 1)
            sums[0] += psnr(out, tgt).double().sum().cpu()
            if ssim is not None:
                sums[1] += ssim(out, tgt).double().sum().cpu()
            sums[2] += inp.shape[0]
    finally:
        model.train(was_training)
        # Training, with gradients on, never reuses the blocks the CPU inference cache kept.
        empty_cpu_cache()
    sums = all_reduce_sum(sums, d).cpu()
    count = max(float(sums[2]), 1.0)
    return float(sums[0]) / count, (float(sums[1]) / count if ssim is not None else None)
