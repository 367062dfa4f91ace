"""`mprnet-kernels verify`: every op of the registry on every backend present here against its
float64 reference, forward and backward, on the registry's small inputs. Results are the worst
relative error over the op's outputs and input gradients (docs/OPS.md, "Tolerances").
"""

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from . import registry
from .ops import _backend
from .registry import OpSpec
from .testing import OP_TOLERANCE, rel_err

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


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


def _forward_backward(fn, inputs: Sequence[Optional[torch.Tensor]], grad_seed: int):
    args = [None if t is None else t.detach().requires_grad_() for t in inputs]
    leaves = [t for t in args if t is not None]
    out = fn(*args)
    g = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    return out, [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, grads)]


def targets(spec: OpSpec) -> Iterator[Tuple[str, str]]:
    """(device, backend) pairs to check for the op on this machine."""
    yield "cpu", "cpu"
    if torch.cuda.is_available():
        for backend in _backend.available_backends(spec.name):
            yield "cuda", backend


def run_case(spec: OpSpec, device: str, backend: str, dtype: torch.dtype, seed: int = 0) -> Result:
    g = torch.Generator().manual_seed(seed)
    # Rounded once, so that both sides see the same values.
    base = [None if t is None else t.to(dtype) for t in spec.verify_inputs(g)]
    ref_out, ref_grads = _forward_backward(spec.eager(), [None if t is None else t.double() for t in base], seed + 1)
    inputs = [None if t is None else t.to(device) for t in base]
    ctx = _backend.using_cuda_backend(spec.name, backend) if device == "cuda" else contextlib.nullcontext()
    with ctx:
        out, grads = _forward_backward(spec.ours(), inputs, seed + 1)
    fwd = rel_err(out, ref_out)
    bwd = max(rel_err(a, b) for a, b in zip(grads, ref_grads))
    return Result(spec.name, device, backend, dtype, fwd, bwd)


def run_all(dtypes: Sequence[torch.dtype] = DTYPES, ops: Sequence[str] = ()) -> List[Result]:
    """Every op (or those named in `ops`) on every target here, in every dtype."""
    results = []
    for spec in registry.OPS.values():
        if ops and spec.name not in ops:
            continue
        for device, backend in targets(spec):
            for dtype in dtypes:
                results.append(run_case(spec, device, backend, dtype))
    return results
