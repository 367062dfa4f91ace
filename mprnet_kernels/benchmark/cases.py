"""The op cases the benchmarks time (from the model's shapes) and how each is checked and
called: against float64 first, then timed as forward alone or forward+backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Sequence

import torch

from ..registry import Inputs, spec
from ..shapes import shapes_for
from ..testing import rel_err

__all__ = ["CHECK_TOLERANCE", "OpCase", "check_against_reference", "lazily_compiled", "op_cases",
           "reference_float64", "timed_call"]

#: Relative error a timed implementation may show against float64 before it is timed.
CHECK_TOLERANCE = 1e-2


def _output_and_grads(fn, inputs: Inputs):
    out = fn(*inputs.args)
    grads = torch.autograd.grad(out, inputs.leaves, inputs.grad, allow_unused=True)
    return out, [torch.zeros_like(t) if g is None else g for t, g in zip(inputs.leaves, grads)]


def _float64_twin(inputs: Inputs) -> Inputs:
    twins = {id(t): t.detach().double().requires_grad_(t.requires_grad) for t in inputs.args if t is not None}
    twins[id(None)] = None
    return Inputs([twins[id(t)] for t in inputs.args], [twins[id(t)] for t in inputs.leaves],
                  None if inputs.grad is None else inputs.grad.double(), twins[id(inputs.main)])


def reference_float64(eager, inputs: Inputs):
    """The reference's output and input gradients in float64 on the same (rounded) inputs."""
    return _output_and_grads(eager, _float64_twin(inputs))


def check_against_reference(fn, reference64, inputs: Inputs, mode: str = "forward+backward") -> float:
    """Worst relative error of fn's output and input gradients against `reference64`
    (reference_float64's result); with mode "forward", of its output alone, computed without
    autograd as a forward-only call runs."""
    ref_out, ref_grads = reference64
    if mode == "forward":
        with torch.no_grad():
            return rel_err(fn(*inputs.args).float(), ref_out)
    out, grads = _output_and_grads(fn, inputs)
    return max([rel_err(out.float(), ref_out)] + [rel_err(a.float(), b) for a, b in zip(grads, ref_grads)])


def timed_call(fn, inputs: Inputs, mode: str = "forward+backward") -> Callable[[], object]:
    """What a timing repeats: fn's forward and the gradients with respect to inputs.leaves, or
    with mode "forward" the forward alone under no_grad (inference; a loss in evaluation)."""
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return fn(*inputs.args)
        return forward
    return lambda: torch.autograd.grad(fn(*inputs.args), inputs.leaves, inputs.grad)


@dataclass(frozen=True)
class OpCase:
    """One op shape to time: the preset whose model produces it, and its rank among that
    preset's shapes (0 = the most traffic)."""
    op: str
    preset: str
    shape: tuple
    rank: int
    calls: int


def op_cases(op: str, presets: Sequence[str], batch: int, image: int, top: int) -> List[OpCase]:
    """The `top` heaviest shapes `op` sees in one forward of each preset's model on a (batch, 3,
    image, image) input (mprnet_kernels.shapes), in preset order, each distinct call once: the
    losses see the same stage outputs under every preset, and deblur and derain share a loss
    loss, so a call another preset already made is left out."""
    done, cases = set(), []
    for preset in presets:
        for rank, s in enumerate(shapes_for(op, preset, batch, image, image)[:top]):
            key = (s.shape, repr(spec(op).call_kwargs(preset)))
            if key not in done:
                done.add(key)
                cases.append(OpCase(op, preset, s.shape, rank, s.calls))
    return cases


def lazily_compiled(fn, **compile_options):
    """fn through torch.compile(fn, **compile_options), made on the first call (so building a
    benchmark list compiles nothing) and kept for the next calls."""
    compiled = None

    def call(*args):
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(fn, **compile_options)
        return compiled(*args)

    return call

