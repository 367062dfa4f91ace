"""The fused ops, one `OpSpec` each: the table `verify`, `bench`, the pytest-benchmark suite in
bench/, `mprnet-kernels info` and the CLI help read (docs/ARCHITECTURE.md, "Adding an op").

An entry names the public op and its functional reference, makes the small float64 inputs
`verify` checks and the inputs the benchmarks time at a model shape, says where the model calls
the op (shapes.py turns that into shapes) and how many passes over the main operand the op must
make (docs/OPS.md), which turns a median time into achieved bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from . import ops
from . import reference
from .tasks import TASK_LOSSES

__all__ = ["OPS", "Inputs", "OpSpec", "op_names", "spec"]


@dataclass
class Inputs:
    """One benchmark call: fn(*args), gradients taken with respect to `leaves` with the output
    gradient `grad` (None for a scalar loss); `main` is the operand the pass count multiplies."""
    args: List[Optional[torch.Tensor]]
    leaves: List[torch.Tensor]
    grad: Optional[torch.Tensor]
    main: torch.Tensor


def _positional(fn: Callable, kwargs: dict) -> Callable:
    return fn


@dataclass(frozen=True)
class OpSpec:
    name: str                     # torch.ops.mprnet.<name>, the CUDA backend family too
    summary: str                  # one line for `info` and the CLI help
    fn: Callable                  # the public op (mprnet_kernels.ops)
    reference: Callable           # its functional reference (mprnet_kernels.reference)
    verify_inputs: Callable[[torch.Generator], List[Optional[torch.Tensor]]]  # small float64 CPU args
    bench_inputs: Callable[..., Inputs]  # (shape, preset, device, dtype, generator) at a model shape
    site: str                     # where the model calls it (shapes.SITES)
    passes: int                   # passes over Inputs.main a forward+backward must make
    forward_passes: int           # ... a forward alone (no gradient wanted)
    bind: Callable[[Callable, dict], Callable] = _positional  # (fn, call_kwargs) -> fn(*args)
    task_loss: bool = False       # called with the preset's task loss (tasks.TASK_LOSSES)
    compile_options: dict = field(default_factory=dict)  # for torch.compile of the reference

    def call_kwargs(self, preset: Optional[str] = None) -> dict:
        """What the preset changes in a call (beyond its shapes); none without a preset."""
        return dict(TASK_LOSSES[preset]) if self.task_loss and preset else {}

    def ours(self, preset: Optional[str] = None) -> Callable:
        return self.bind(self.fn, self.call_kwargs(preset))

    def eager(self, preset: Optional[str] = None) -> Callable:
        return self.bind(self.reference, self.call_kwargs(preset))

    def bytes_moved(self, inputs: Inputs, mode: str = "forward+backward") -> int:
        passes = self.passes if mode == "forward+backward" else self.forward_passes
        return passes * inputs.main.numel() * inputs.main.element_size()


# ----------------------------------------------------------------- verify inputs (float64, CPU)
def _randn64(g, *shape, scale=1.0):
    return scale * torch.randn(shape, generator=g, dtype=torch.float64)


def _sam_gate_verify(g):
    return [_randn64(g, 2, 16, 13, 17) for _ in range(3)]


def _ca_tail_verify(g):
    # A CAB tail at the derain width (C = 40, reduction 4), weights scaled like trained ones so
    # that the gate is neither saturated nor flat.
    return [_randn64(g, 2, 40, 13, 17), _randn64(g, 2, 40, 13, 17), _randn64(g, 10, 40, 1, 1, scale=0.3),
            _randn64(g, 10, scale=0.5), _randn64(g, 40, 10, 1, 1, scale=0.6), _randn64(g, 40, scale=0.5)]


def _local_ca_tail_verify(g):
    # ca_tail's inputs; their window (_local_window) is 9 x 12, which leaves a 5 x 6 pooled map:
    # 4 replicated rows above and below, 5 columns left and 6 right.
    return _ca_tail_verify(g)


def _image_pairs_verify(g, stages=1):
    # Odd H and W, so the Laplacian's replicate-padding folds at both ends are exercised.
    return [torch.rand(2, 3, 21, 30, generator=g, dtype=torch.float64) for _ in range(stages + 1)]


def _upsample2x_add_verify(g):
    # Odd h and w, so the resize's clamped last row and column and its first-row weight-0 taps
    # are all exercised.
    return [_randn64(g, 2, 16, 7, 9), _randn64(g, 2, 16, 14, 18)]


# ----------------------------------------------------------------- benchmark inputs (any dtype)
def _randn(shape, device, dtype, g, scale=1.0):
    return (scale * torch.randn(shape, device=device, generator=g)).to(dtype)


def _sam_gate_bench(shape, preset, device, dtype, g):
    x1, z, x, grad = (_randn(shape, device, dtype, g) for _ in range(4))
    leaves = [t.requires_grad_() for t in (x1, z, x)]
    return Inputs(leaves, leaves, grad, x1)


def _ca_tail_bench(shape, preset, device, dtype, g):
    c = shape[1]
    hidden = max(c // reference.PRESETS[preset]["reduction"], 1)
    x, r, grad = (_randn(shape, device, dtype, g) for _ in range(3))
    w1 = _randn((hidden, c, 1, 1), device, dtype, g, 2 / c ** 0.5)
    w2 = _randn((c, hidden, 1, 1), device, dtype, g, 2 / hidden ** 0.5)
    leaves = [t.requires_grad_() for t in (x, r, w1, w2)]
    return Inputs([x, r, w1, None, w2, None], leaves, grad, x)  # MPRNet's CALayer has no biases


def _local_window(shape) -> tuple:
    """The effective window local_ca_tail is verified and timed with on a (N, C, H, W) map: what
    TLC gives each layer when the image is twice its train size (train_size = half the image,
    base_size 1.5x, as `bench --local-attention` runs the model): 3/4 of the map each way."""
    return max(1, 3 * shape[-2] // 4), max(1, 3 * shape[-1] // 4)


def _with_local_window(fn: Callable, kwargs: dict) -> Callable:
    """local_ca_tail over the positional tensors, with the window _local_window gives x."""
    return lambda *tensors: fn(*tensors, _local_window(tensors[0].shape), **kwargs)


def _image_pair_bench(shape, preset, device, dtype, g):
    x = torch.rand(shape, device=device, generator=g).to(dtype).requires_grad_()
    y = torch.rand(shape, device=device, generator=g).to(dtype)
    return Inputs([x, y], [x], None, x)


def _stage_outputs_bench(shape, preset, device, dtype, g):
    # Outputs spill a little past [0, 1] so that the denoising recipe's clamp cuts some.
    outs = [(torch.rand(shape, device=device, generator=g) * 1.2 - 0.1).to(dtype).requires_grad_()
            for _ in range(3)]
    y = torch.rand(shape, device=device, generator=g).to(dtype)
    return Inputs(outs + [y], outs, None, y)


def _upsample2x_add_bench(shape, preset, device, dtype, g):
    n, c, h, w = shape  # x, the low-resolution operand; y, out and grad are twice as high and wide
    x = _randn(shape, device, dtype, g).requires_grad_()
    y, grad = (_randn((n, c, 2 * h, 2 * w), device, dtype, g) for _ in range(2))
    y.requires_grad_()
    return Inputs([x, y], [x, y], grad, x)


def _stage_list(fn: Callable, kwargs: dict) -> Callable:
    """mprnet_loss over positional (*stage outputs, target)."""
    return lambda *tensors: fn(list(tensors[:-1]), tensors[-1], **kwargs)


# Inductor's layout optimization makes the Laplacian's convolutions channels_last, and CPU
# replication_pad2d_backward then breaks the generated code's stride assert: the loss
# references are compiled with it off.
_NO_LAYOUT_OPTIMIZATION = {"options": {"layout_optimization": False}}

# Pass counts (docs/OPS.md): forward alone, sam_gate reads x1, z, x and writes out (4); ca_tail
# reads x (pool), then x and r, and writes out (4); local_ca_tail the same (its window means, a
# fraction of x, left out), and backward 5: read x (the means again), g and x, then g, and write
# grad_x. Without a gradient wanted the losses only read their inputs: x and y (2), or 3 stage
# outputs and the target (4). upsample2x_add counts passes
# of x (a quarter of y): forward reads x and y and writes out (1 + 4 + 4); backward reads grad
# and writes grad_x (4 + 1; grad_y is grad itself).
_SPECS = (
    OpSpec("sam_gate", "SAM gate x1 * sigmoid(z) + x", ops.sam_gate, reference.sam_gate,
           _sam_gate_verify, _sam_gate_bench, "sam", passes=9, forward_passes=4),
    OpSpec("ca_tail", "CAB channel attention x * gate(mean(x)) + r", ops.ca_tail, reference.ca_tail,
           _ca_tail_verify, _ca_tail_bench, "cab", passes=8, forward_passes=4),
    OpSpec("local_ca_tail", "CAB channel attention over local windows (TLC)", ops.local_ca_tail,
           reference.local_ca_tail, _local_ca_tail_verify, _ca_tail_bench, "cab", passes=9, forward_passes=4,
           bind=_with_local_window),
    OpSpec("charbonnier_loss", "Charbonnier loss", ops.charbonnier_loss, reference.charbonnier_loss,
           _image_pairs_verify, _image_pair_bench, "stage_output", passes=5, forward_passes=2),
    OpSpec("edge_loss", "Charbonnier loss of Laplacians", ops.edge_loss, reference.edge_loss,
           _image_pairs_verify, _image_pair_bench, "stage_output", passes=5, forward_passes=2,
           compile_options=_NO_LAYOUT_OPTIMIZATION),
    OpSpec("mprnet_loss", "the multi-stage training loss", ops.mprnet_loss, reference.mprnet_loss,
           lambda g: _image_pairs_verify(g, stages=3), _stage_outputs_bench, "stage_outputs", passes=13,
           forward_passes=4, bind=_stage_list, task_loss=True, compile_options=_NO_LAYOUT_OPTIMIZATION),
    OpSpec("upsample2x_add", "bilinear 2x upsample + add", ops.upsample2x_add, reference.upsample2x_add,
           _upsample2x_add_verify, _upsample2x_add_bench, "up2_add", passes=14, forward_passes=9),
)

#: {name: OpSpec}, in the order tables list them; tests replace entries to plant a wrong op.
OPS: Dict[str, OpSpec] = {s.name: s for s in _SPECS}


def op_names() -> Sequence[str]:
    return tuple(OPS)


def spec(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError:
        raise ValueError(f"unknown op {name!r}; the ops: {', '.join(OPS)}") from None
