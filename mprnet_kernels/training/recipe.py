"""The upstream training recipe per task, in one table, and the model presets `train` accepts.

Everything `mprnet-kernels train` does by default comes from here (docs/MPRNET.md, "Losses
(training)"), so the numbers are written once and every flag is an override of one entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict

from ..tasks import TASK_LOSSES, TASKS

#: Adam's betas and eps are the same for every task (upstream's); not worth a flag each.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Recipe:
    """One task's defaults. ``edge_weight`` 0 drops the edge term (denoise); ``clamp`` clamps the
    stage outputs to [0, 1] inside the loss (denoise)."""

    preset: str
    patch: int
    batch: int
    lr: float
    min_lr: float
    warmup_epochs: int
    epochs: int
    edge_weight: float
    clamp: bool

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


RECIPES: Dict[str, Recipe] = {
    "deblur": Recipe(preset="deblur", patch=256, batch=16, lr=2e-4, min_lr=1e-6, warmup_epochs=3,
                     epochs=3000, **TASK_LOSSES["deblur"]),
    "derain": Recipe(preset="derain", patch=256, batch=16, lr=2e-4, min_lr=1e-6, warmup_epochs=3,
                     epochs=250, **TASK_LOSSES["derain"]),
    "denoise": Recipe(preset="denoise", patch=128, batch=16, lr=2e-4, min_lr=1e-6, warmup_epochs=3,
                      epochs=80, **TASK_LOSSES["denoise"]),
}


def preset_names() -> tuple:
    from ..reference import EXTRA_PRESETS, PRESETS

    return tuple(PRESETS) + tuple(EXTRA_PRESETS)


def model_config(preset: str, num_cab: int | None = None) -> Dict[str, Any]:
    """The MPRNet constructor arguments of a preset (a published one, `small` or `tiny`), with
    num_cab replaced when given. This dict is what checkpoints store under 'config'."""
    from ..reference import preset_config

    if preset not in preset_names():
        raise ValueError(f"--preset: unknown preset {preset!r}; expected one of {', '.join(preset_names())}")
    config = preset_config(preset)
    if num_cab is not None:
        if num_cab < 1:
            raise ValueError(f"--num-cab: expected a positive number of channel-attention blocks, got {num_cab}")
        config["num_cab"] = num_cab
    return config
