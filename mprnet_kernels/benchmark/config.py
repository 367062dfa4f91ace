"""What a `bench` run is asked for (`BenchConfig`) and at which sizes (`Sizes`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from ..reference import PRESETS
from ..registry import op_names
from ..shapes import BENCH_INPUTS

__all__ = ["BenchConfig", "Sizes", "TINY", "TINY_MODEL", "default_sizes"]


@dataclass
class Sizes:
    """Input sizes: op shapes come from the model at (batch, 3, image, image); the inference rows
    run at each of `model_images` with batch 1; the training-step rows at (train_batch, 3,
    train_image, train_image)."""
    batch: int
    image: int
    model_images: Sequence[int]
    warmup: int
    reps: int
    model_overrides: dict = field(default_factory=dict)  # from_preset overrides (tests only)
    model_reps: Optional[int] = None  # timed model calls (default: reps), one warm-up fewer
    train_batch: int = 1
    train_image: int = 64
    train_warmup: int = 0             # untimed steps after the checked first step (itself a warm-up)
    train_reps: int = 3               # timed training steps


def default_sizes(device: str, full: bool) -> Sizes:
    batch, image = BENCH_INPUTS["cuda" if device == "cuda" else "cpu"]["full" if full else "quick"]
    if device == "cuda":
        # The GPU training step: 16 patches of 256x256.
        return (Sizes(batch, image, (256, 512), 5, 20, train_batch=16, train_image=256, train_warmup=2, train_reps=10)
                if full else Sizes(batch, image, (256,), 3, 10, train_batch=16, train_image=256, train_warmup=1,
                                   train_reps=5))
    # This 2-core CPU. --full: the CPU training step, 1x3x128x128 (about 6 s a step for
    # each model). Quick (under 3 minutes, verification included): one training row at 64x64
    # (about 1.7 s a step), three timed steps after the checked first one.
    return (Sizes(batch, image, (256,), 2, 5, train_batch=1, train_image=128, train_reps=3) if full
            else Sizes(batch, image, (64,), 2, 10, model_reps=3, train_batch=1, train_image=64, train_reps=3))


#: A small model of the preset's architecture for tests: one CAB per group, 16 features (the
#: per-op overhead of the full one makes even a 16x16 training step about a second here).
TINY_MODEL = {"num_cab": 1, "n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8}

#: Hidden `--tiny` (tests): every op shape from a 16x16 input, one timed call, the TINY_MODEL
#: (a cold first forward of the full deblur model costs ~10 s of oneDNN set-up here).
TINY = Sizes(1, 16, (16,), 0, 1, TINY_MODEL, train_batch=1, train_image=16, train_reps=1)


@dataclass
class BenchConfig:
    device: str = "cpu"
    full: bool = False
    compile: bool = False
    ops: Sequence[str] = ()          # op names and "model"; empty = all
    presets: Sequence[str] = ()      # empty = deblur (quick) or all three (--full)
    sizes: Optional[Sizes] = None
    progress: bool = True
    compile_model: bool = False      # torch.compile the whole reference model too (minutes)
    local_attention: bool = False    # inference rows with local channel attention too (model_runs.local_row)

    def resolved_sizes(self) -> Sizes:
        return self.sizes or default_sizes(self.device, self.full)

    def dtypes(self) -> List[torch.dtype]:
        if not self.full:
            return [torch.float32]
        if self.device == "cuda":
            return [torch.float32, torch.bfloat16, torch.float16]
        return [torch.float32, torch.bfloat16]

    def selected_presets(self) -> List[str]:
        return list(self.presets) or (list(PRESETS) if self.full else ["deblur"])

    def selected_ops(self) -> List[str]:
        return [op for op in op_names() if not self.ops or op in self.ops]

    def with_model(self) -> bool:
        return not self.ops or "model" in self.ops

    def op_modes(self) -> List[str]:
        """Op rows: forward+backward (what training runs), and with --full the forward alone."""
        return ["forward+backward", "forward"] if self.full else ["forward+backward"]

    def model_dtypes(self) -> List[torch.dtype]:
        """Inference rows: float32, and with --full bf16 autocast too."""
        return [torch.float32, torch.bfloat16] if self.full else [torch.float32]

    def train_dtypes(self) -> List[torch.dtype]:
        """Training-step rows: with --full float32 and bf16 autocast; quick, float32 on a CPU and
        bf16 autocast on a GPU (how MPRNet trains there: in float32 a 16x3x256x256 step of
        the reference needs about 80 GiB, more than an H100 has; it is reported, not failed)."""
        if self.full:
            return [torch.float32, torch.bfloat16]
        return [torch.bfloat16] if self.device == "cuda" else [torch.float32]


