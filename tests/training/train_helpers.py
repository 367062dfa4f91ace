"""Helpers for the `train` tests: tiny paired datasets written as PNGs, and tiny run configs.

The pairs are a denoising problem a small MPRNet learns within a few steps on a CPU: smooth
targets (bilinear upsampling of a coarse random grid) and inputs with Gaussian noise added.
"""

from pathlib import Path

import torch

from mprnet_kernels.images import write_png
from mprnet_kernels.training.config import build_config

TINY = dict(preset="tiny", patch=16, batch=4, epochs=2, lr=1e-3, warmup_epochs=1, workers=0)


def write_pairs(root, train=6, val=2, size=32, sigma=0.1, seed=0, splits=("train", "val")) -> Path:
    """root/{train,val}/{input,target}/NNN.png: `size` x `size` smooth targets, noisy inputs."""
    g = torch.Generator().manual_seed(seed)
    for split in splits:
        for i in range({"train": train, "val": val}[split]):
            coarse = torch.rand(1, 3, max(size // 8, 2), max(size // 8, 2), generator=g)
            clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                                    align_corners=False)[0]
            noisy = (clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1)
            write_png(Path(root, split, "input", f"{i:03d}.png"), noisy)
            write_png(Path(root, split, "target", f"{i:03d}.png"), clean)
    return Path(root)


def tiny_config(data, out, task="denoise", **flags):
    """A TrainConfig for a run of seconds: the tiny preset, 16 px patches, no progress bar."""
    values = dict(TINY, **flags)
    progress = values.pop("progress", False)
    config = build_config(task, str(data), str(out), values)
    config.progress = progress
    return config


def fails_naming(capsys, code, *words):
    """The command failed before training with one line on stderr naming each of `words`."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mprnet-kernels train: ") and err.count("\n") == 1, err
    for word in words:
        assert str(word) in err, err
