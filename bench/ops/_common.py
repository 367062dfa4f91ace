"""Pieces shared by the op benchmarks in bench/ops/ (timing and the roofline are in
bench/harness.py): the dtype parametrization and which cases run, the lazily compiled
reference, the checks against float64 before timing, and the forward+backward step.

Imported as `_common` (pytest puts bench/ops/, which holds no __init__.py, on sys.path).
"""

from typing import Callable, Sequence

import pytest
import torch

from mprnet_kernels.ops import _backend
from mprnet_kernels.benchmark import lazily_compiled  # noqa: F401  (the bench files take it from here)
from mprnet_kernels.testing import rel_err

# float32 on the CPU (the target), bfloat16 on the GPU (training under autocast).
dtypes = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])

# Relative error a benchmarked implementation may show against float64 before it is timed.
CHECK_TOLERANCE = 1e-2


def skip_cpu_half(device: torch.device, dtype: torch.dtype) -> None:
    """Skips a CPU case in any dtype but float32."""
    if device.type == "cpu" and dtype != torch.float32:
        pytest.skip("CPU is measured in float32 (the issue's target); bf16 runs on the GPU")


def skip_missing_backend(op: str, impl: str) -> None:
    """Skips the case when impl names a CUDA backend ("triton", "cuda") this install lacks."""
    if impl in _backend.BACKENDS and impl not in _backend.available_backends(op):
        pytest.skip(f"no {impl} backend for {op} in this install")


def stage_output_shape(device: torch.device) -> tuple:
    """One stage output of a deblur batch: 3 channels of 256x256 patches."""
    return (8, 3, 256, 256) if device.type == "cpu" else (16, 3, 256, 256)


def check_output(fn: Callable, reference: Callable, args: Sequence[torch.Tensor]) -> None:
    """Check before timing (a fast wrong answer must fail the run): fn(*args) against the
    reference on float64 copies of args."""
    with torch.no_grad():
        assert rel_err(fn(*args), reference(*(t.double() for t in args))) < CHECK_TOLERANCE


def check_loss(fn: Callable, reference: Callable, outs: Sequence[torch.Tensor], y: torch.Tensor) -> None:
    """Check before timing (a fast wrong answer must fail the run): the loss fn(outs, y) and its
    gradients with respect to the list outs, against the reference on float64 copies."""
    grads = torch.autograd.grad(fn(outs, y), outs)
    outs64 = [o.detach().double().requires_grad_() for o in outs]
    loss64 = reference(outs64, y.double())
    grads64 = torch.autograd.grad(loss64, outs64)
    assert max(rel_err(a, b) for a, b in zip(grads, grads64)) < CHECK_TOLERANCE
    with torch.no_grad():
        assert rel_err(fn(outs, y), loss64) < CHECK_TOLERANCE


def forward_backward_step(fn: Callable, args: Sequence, leaves: Sequence[torch.Tensor], grad=None) -> Callable:
    """The timed step: fn(*args), then the gradients of its output (for out's gradient grad; a
    loss needs none) with respect to leaves."""
    def step():
        torch.autograd.grad(fn(*args), leaves, grad)

    return step
