"""The op shapes MPRNet really produces, derived from the model (never typed by hand).

`model_shapes(preset, batch, height, width)` builds the fast MPRNet of a preset on the meta
device (no memory, no arithmetic: about a second), runs one forward of an (batch, 3, height,
width) input with forward hooks on its fused CAB and SAM blocks, and records the (N, C, H, W)
each fused op sees, with how many times per forward, at the op's call site
(`registry.OpSpec.site`, one of `SITES`):

* ``cab``: the input of every CAB (the fused tail reads the body output and the block input,
  both of that shape);
* ``sam``: the feature input of every SAM (x1, z and x all have that shape);
* ``stage_output``: one stage output (what each term of the loss sees);
* ``stage_outputs``: one stage output, three of which (the model's outputs) make one call;
* ``up2_add``: the low-resolution input x of every resize-and-add (SkipUpSample, the ORSNet's
  upsampled branches), recorded by wrapping the model's ``_up2_add``.

The fast model is the one hooked because its shapes are the ones the fused ops are called
with: it batches the four stage-1 patches as 4N and the two stage-2 halves as 2N, where the
reference runs them one at a time (the same elements in all: batching changes shapes, not work).
`mprnet-kernels bench` and the pytest-benchmark suite in bench/ take their shapes from here
(through `mprnet_kernels.benchmark.cases.op_cases`), at the model inputs in `BENCH_INPUTS`.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from . import nn as fused
from .model import MPRNet
from .reference import PRESETS, preset_config
from .registry import OPS

__all__ = ["BENCH_INPUTS", "OpShape", "SITES", "local_attention_tails", "model_shapes", "representative_shape",
           "shapes_for"]

#: Where the model calls a fused op (see the module docstring).
SITES = ("cab", "sam", "stage_output", "stage_outputs", "up2_add")

#: The model inputs (batch, image side) whose op shapes the benchmarks time, by device and run:
#: "full" for `mprnet-kernels bench --full` and the pytest-benchmark suite (on a GPU, the
#: training batch of 16 patches of 256x256; on a CPU 4 of them), "quick" for a plain
#: `mprnet-kernels bench`.
BENCH_INPUTS = {
    "cuda": {"full": (16, 256), "quick": (4, 256)},
    "cpu": {"full": (4, 256), "quick": (1, 256)},
}

Shape = Tuple[int, int, int, int]


@dataclass(frozen=True)
class OpShape:
    op: str
    preset: str
    shape: Shape   # (N, C, H, W) of the op's main operand
    calls: int     # how many times one forward makes that call

    @property
    def numel(self) -> int:
        n, c, h, w = self.shape
        return n * c * h * w


@functools.lru_cache(maxsize=None)
def model_shapes(preset: str, batch: int = 1, height: int = 256, width: int = 256) -> Dict[str, Tuple[OpShape, ...]]:
    """{op: OpShape per distinct shape, the most traffic (calls x size) first} for one forward
    of the `preset` MPRNet on a (batch, 3, height, width) input (height, width multiples of 8)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    seen = {"cab": Counter(), "sam": Counter(), "up2_add": Counter()}
    with torch.device("meta"):
        model = MPRNet.from_preset(preset).eval()
    up2_add = model._up2_add

    def recording_up2_add(x, y):  # an instance attribute: shadows the method for this model only
        seen["up2_add"].update([tuple(x.shape)])
        return up2_add(x, y)

    model._up2_add = recording_up2_add
    hooks = []
    for module in model.modules():
        site = "cab" if isinstance(module, fused.CAB) else "sam" if isinstance(module, fused.SAM) else None
        if site is not None:
            hooks.append(module.register_forward_hook(
                lambda m, inputs, output, site=site: seen[site].update([tuple(inputs[0].shape)])))
    outputs = _hooked_meta_forward(model, hooks, preset, batch, height, width)
    stage = Counter([tuple(o.shape) for o in outputs])
    seen["stage_output"] = stage
    seen["stage_outputs"] = Counter({shape: 1 for shape in stage})  # one call over the 3 outputs
    result = {}
    for op, spec in OPS.items():
        shapes = [OpShape(op, preset, shape, calls) for shape, calls in seen[spec.site].items()]
        result[op] = tuple(sorted(shapes, key=lambda s: -s.calls * s.numel))
    return result


def _hooked_meta_forward(model: MPRNet, hooks: list, preset: str, batch: int, height: int, width: int):
    """model's outputs for an empty (batch, in_c, height, width) meta input; the forward hooks
    `hooks` (which recorded what they saw) are removed afterwards, whatever happens."""
    try:
        with torch.no_grad():
            return model(torch.empty(batch, preset_config(preset)["in_c"], height, width, device="meta"))
    finally:
        for h in hooks:
            h.remove()


def shapes_for(op: str, preset: str, batch: int = 1, height: int = 256, width: int = 256) -> List[OpShape]:
    """The distinct shapes `op` sees in one forward of the preset's model, most traffic first."""
    return list(model_shapes(preset, batch, height, width)[op])


def representative_shape(op: str, preset: str, batch: int = 1, height: int = 256, width: int = 256) -> OpShape:
    """The shape that carries most of `op`'s traffic (calls x size) in one forward."""
    return shapes_for(op, preset, batch, height, width)[0]


def local_attention_tails(preset: str = "deblur", height: int = 720, width: int = 1280, train_size=256,
                          base_size=None) -> Tuple[Tuple[Shape, Tuple[int, int], int], ...]:
    """((shape, window, calls), ...): the distinct local CA tails one inference of the preset's
    fast model makes on a (1, 3, height, width) input after set_local_attention(train_size,
    base_size), with the window each uses (already clipped to its map) and how many times, the
    most traffic first; read by forward hooks on the meta device. A 720x1280 deblur: stage 3's
    1x128x720x1280 with (384, 384), stage 1's 4x96x360x640 with (192, 192), ..."""
    hashable = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731  (the cache's keys)
    return _local_attention_tails(preset, height, width, hashable(train_size), hashable(base_size))


@functools.lru_cache(maxsize=None)
def _local_attention_tails(preset, height, width, train_size, base_size):
    from .reference.ops import effective_window

    with torch.device("meta"):
        model = MPRNet.from_preset(preset).eval()
    model.set_local_attention(train_size, base_size)
    seen = Counter()

    def record(layer, inputs, output):
        x = inputs[0]
        seen.update([(tuple(x.shape), effective_window(layer.window, x.shape[-2:]))])

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, fused.CALayer)]
    _hooked_meta_forward(model, hooks, preset, 1, height, width)
    found = [(shape, window, calls) for (shape, window), calls in seen.items()]
    return tuple(sorted(found, key=lambda t: -t[2] * t[0][0] * t[0][1] * t[0][2] * t[0][3]))
