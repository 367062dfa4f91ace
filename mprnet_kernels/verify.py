"""`mprnet-kernels verify`: every op on every backend present here against its float64
reference, forward and backward, and optionally the reference model against the golden fixture.

Each op contributes a Case: how to make inputs, how to run ours and the reference. Results
are the worst relative error over the op's outputs and input gradients (OPS.md tolerances).
"""

import contextlib
from dataclasses import dataclass
from typing import Callable, List, Sequence

import torch

from . import ops, reference
from .ops import _backend
from .testing import OP_TOLERANCE, rel_err


@dataclass
class Case:
    op: str                                  # the op's name, also its CUDA backend family
    make_inputs: Callable[[torch.Generator], List[torch.Tensor]]  # float64 CPU tensors
    ours: Callable[..., torch.Tensor]
    reference: Callable[..., torch.Tensor]


def _sam_gate_inputs(g):
    return [torch.randn(2, 16, 13, 17, generator=g, dtype=torch.float64) for _ in range(3)]


def _ca_tail_inputs(g):
    # x, r, w1, b1, w2, b2 of a CAB tail at the derain width (C = 40, reduction 4), weights scaled
    # like trained ones so that the gate is neither saturated nor flat.
    def randn(*shape, scale=1.0):
        return scale * torch.randn(shape, generator=g, dtype=torch.float64)

    return [randn(2, 40, 13, 17), randn(2, 40, 13, 17), randn(10, 40, 1, 1, scale=0.3), randn(10, scale=0.5),
            randn(40, 10, 1, 1, scale=0.6), randn(40, scale=0.5)]


def _ca_tail_reference(x, r, w1, b1, w2, b2):
    gate = torch.sigmoid(torch.nn.functional.conv2d(torch.relu(torch.nn.functional.conv2d(
        x.mean((2, 3), keepdim=True), w1, b1)), w2, b2))
    return x * gate + r


def _image_pair_inputs(g, stages=1):
    # Odd H and W, so the Laplacian's replicate-padding folds at both ends are exercised.
    return [torch.rand(2, 3, 21, 30, generator=g, dtype=torch.float64) for _ in range(stages + 1)]


def _upsample_add_inputs(g):
    # x and y = a SkipUpSample's low-resolution conv output and skip input; odd h and w, so the
    # resize's clamped last row and column and its first-row weight-0 taps are all exercised.
    return [torch.randn(2, 16, 7, 9, generator=g, dtype=torch.float64),
            torch.randn(2, 16, 14, 18, generator=g, dtype=torch.float64)]


def _upsample_add_reference(x, y):
    return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + y


def _mprnet_loss(*tensors):
    return ops.mprnet_loss(list(tensors[:-1]), tensors[-1])


def _mprnet_loss_reference(*tensors):
    return reference.MPRNetLoss()(list(tensors[:-1]), tensors[-1])


CASES: List[Case] = [
    Case("sam_gate", _sam_gate_inputs, ops.sam_gate, lambda x1, z, x: x1 * torch.sigmoid(z) + x),
    Case("ca_tail", _ca_tail_inputs, ops.ca_tail, _ca_tail_reference),
    Case("charbonnier_loss", _image_pair_inputs, ops.charbonnier_loss, reference.charbonnier_loss),
    Case("edge_loss", _image_pair_inputs, ops.edge_loss, reference.edge_loss),
    Case("mprnet_loss", lambda g: _image_pair_inputs(g, stages=3), _mprnet_loss, _mprnet_loss_reference),
    Case("upsample2x_add", _upsample_add_inputs, ops.upsample2x_add, _upsample_add_reference),
]


@dataclass
class Result:
    op: str
    device: str
    backend: str
    dtype: torch.dtype
    forward: float
    backward: float

    @property
    def tolerance(self) -> float:
        return OP_TOLERANCE[self.dtype]

    @property
    def ok(self) -> bool:
        return self.forward < self.tolerance and self.backward < self.tolerance


def _forward_backward(fn, inputs: Sequence[torch.Tensor], grad_seed: int):
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves)
    g = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    return out, [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]


def _targets(case: Case):
    """(device, backend) pairs to check for `case` on this machine."""
    yield "cpu", "cpu"
    if torch.cuda.is_available():
        for backend in _backend.available_backends(case.op):
            yield "cuda", backend


def run_case(case: Case, device: str, backend: str, dtype: torch.dtype, seed: int = 0) -> Result:
    g = torch.Generator().manual_seed(seed)
    base = [t.to(dtype) for t in case.make_inputs(g)]  # round once, so both sides see the same values
    ref_out, ref_grads = _forward_backward(case.reference, [t.double() for t in base], seed + 1)
    inputs = [t.to(device) for t in base]
    ctx = _backend.using_cuda_backend(case.op, backend) if device == "cuda" else contextlib.nullcontext()
    with ctx:
        out, grads = _forward_backward(case.ours, inputs, seed + 1)
    fwd = rel_err(out, ref_out)
    bwd = max(rel_err(a, b) for a, b in zip(grads, ref_grads))
    return Result(case.op, device, backend, dtype, fwd, bwd)


def run_all(dtypes=(torch.float64, torch.float32, torch.bfloat16, torch.float16)) -> List[Result]:
    results = []
    for case in CASES:
        for device, backend in _targets(case):
            for dtype in dtypes:
                results.append(run_case(case, device, backend, dtype))
    return results
