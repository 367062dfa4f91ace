"""An exported file checked against the PyTorch model it came from.

The artifact runs where it will be used: an ONNX file in onnxruntime (CPU), a torch.export
program through torch.export.load. Its outputs are compared with the model's own (in the
model's dtype, normally float32) on the same inputs, rounded first to the artifact's dtype, so a
half-precision file is measured against what the full-precision model gives. Error measure: the
project's (docs/OPS.md "Tolerances"), ||out - ref|| / ||ref|| in float64 per output, the worst
over the outputs; the largest absolute difference is reported beside it.

A result passes when its error is strictly below the tolerance: 1e-5 for float32 (one op's float32
tolerance; measured errors of the tiny preset are about 1e-7) and 2e-2 for float16 and bfloat16
(the model tolerance under half precision, docs/OPS.md).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..testing import rel_err

__all__ = ["TOLERANCE", "CheckResult", "ExportReport", "ExportCheckError", "check_onnx", "check_program", "checked",
           "compare", "resolve_tolerance"]

#: Relative error an artifact may show against the model, by the artifact's dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class CheckResult:
    """How an artifact compares with its model: per input shape, the worst relative error over
    the outputs and the largest absolute difference."""

    artifact: str
    runner: str
    dtype: torch.dtype
    tolerance: float
    shapes: Tuple[Tuple[int, ...], ...]
    rel_errors: Tuple[float, ...]
    abs_errors: Tuple[float, ...]
    failure: str = ""  # why the artifact did not run at one of the inputs (its errors are then inf)

    @property
    def worst(self) -> float:
        return max(self.rel_errors)

    @property
    def ok(self) -> bool:
        return self.worst < self.tolerance

    def summary(self) -> str:
        per_shape = ", ".join(f"{'x'.join(map(str, s))}: {r:.1e} (abs {a:.1e})"
                              for s, r, a in zip(self.shapes, self.rel_errors, self.abs_errors))
        verdict = "ok" if self.ok else f"MISMATCH: {self.worst:.2e} is not below the tolerance {self.tolerance:.0e}"
        if self.failure:
            verdict = f"FAILED to run: {self.failure}"
        return (f"{self.runner} vs PyTorch, {str(self.dtype).replace('torch.', '')}, relative error "
                f"{per_shape}; tolerance {self.tolerance:.0e}: {verdict}")


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: the file, its format and dtype, whether its axes are dynamic, and
    the check against PyTorch (None when not checked)."""

    path: Path
    format: str
    dtype: torch.dtype
    dynamic: bool
    check: Optional[CheckResult]
    note: str = ""


class ExportCheckError(RuntimeError):
    """An exported artifact does not match its model; ``result`` holds the numbers."""

    def __init__(self, message: str, result: CheckResult):
        super().__init__(message)
        self.result = result


def _outputs(value) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, torch.Tensor) for v in value):
        return list(value)
    raise TypeError(f"expected a tensor or a list of tensors as outputs, got {type(value).__name__}")


def _model_dtype(model: nn.Module) -> torch.dtype:
    param = next(model.parameters(), None)
    return torch.float32 if param is None else param.dtype


def resolve_tolerance(tolerance: Optional[float], dtype: torch.dtype) -> float:
    """`tolerance`, or TOLERANCE[dtype] for None; ValueError naming it when it is not a number >= 0."""
    if tolerance is None:
        return TOLERANCE[dtype]
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance >= 0:
        raise ValueError(f"tolerance: expected a number >= 0, got {tolerance!r}")
    return float(tolerance)


def checked(path: Path, check: Callable[[], CheckResult], caller: str) -> CheckResult:
    """check() of the file at `path`; when it fails, or the file cannot even be run, the file is
    removed (an export never leaves a wrong file behind) and ExportCheckError / ValueError says why."""
    try:
        result = check()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    if not result.ok:
        path.unlink(missing_ok=True)
        raise ExportCheckError(f"{caller}: {path} does not match the model and was removed: {result.summary()}", result)
    return result


def compare(run: Callable[[torch.Tensor], Sequence[torch.Tensor]], model: nn.Module,
            inputs: Sequence[torch.Tensor], dtype: torch.dtype, *, artifact: str, runner: str,
            tolerance: Optional[float] = None) -> CheckResult:
    """run(x) (the artifact, fed `dtype` inputs) against model(x) on each input."""
    tolerance = resolve_tolerance(tolerance, dtype)
    model_dtype = _model_dtype(model)
    was_training = model.training
    model.eval()
    rels, abss, shapes, failure = [], [], [], ""
    try:
        for x in inputs:
            x = x.to(dtype)
            shapes.append(tuple(x.shape))
            with torch.no_grad():
                expected = _outputs(model(x.to(model_dtype)))
            try:
                got = _outputs(run(x))
                wrong = [i for i, (g, e) in enumerate(zip(got, expected)) if g.shape != e.shape]
                if len(got) != len(expected) or wrong:
                    raise ValueError(f"{len(got)} outputs of shapes {[tuple(g.shape) for g in got]}, the model's "
                                     f"{[tuple(e.shape) for e in expected]}")
            except Exception as e:  # a file that does not run at a size it claims to take is a failed check
                failure = f"{'x'.join(map(str, x.shape))}: {type(e).__name__}: {_first_line(e)}"
                rels.append(float("inf"))
                abss.append(float("inf"))
                continue
            rels.append(max(rel_err(g, e) for g, e in zip(got, expected)))
            abss.append(max(float((g.double() - e.double()).abs().max()) for g, e in zip(got, expected)))
    finally:
        model.train(was_training)
    return CheckResult(artifact=artifact, runner=runner, dtype=dtype, tolerance=tolerance, shapes=tuple(shapes),
                       rel_errors=tuple(rels), abs_errors=tuple(abss), failure=failure)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


# onnxruntime's element types that numpy can feed, for the dtype a file takes
_ONNX_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16}


def check_onnx(path, model: nn.Module, inputs: Sequence[torch.Tensor], *,
               tolerance: Optional[float] = None) -> CheckResult:
    """The ONNX file at `path`, run in onnxruntime's CPU provider, against `model` on `inputs`
    (fed in the file's input dtype). Raises ValueError when onnxruntime cannot run it."""
    import onnxruntime as ort

    path = os.fspath(path)
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (InvalidGraph, NotImplemented, ...)
        raise ValueError(f"{path}: onnxruntime cannot load this file, so it cannot be checked: "
                         f"{_first_line(e)}") from None
    (feed,) = session.get_inputs()
    dtype = _ONNX_TYPES.get(feed.type)
    if dtype is None:
        raise ValueError(f"{path}: input {feed.name!r} is {feed.type}; only float and float16 files can be checked")

    def run(x):
        return [torch.from_numpy(o) for o in session.run(None, {feed.name: x.numpy()})]

    return compare(run, model, inputs, dtype, artifact=path, runner="onnxruntime", tolerance=tolerance)


def check_program(path, model: nn.Module, inputs: Sequence[torch.Tensor], *,
                  tolerance: Optional[float] = None) -> CheckResult:
    """The torch.export program at `path`, loaded with torch.export.load and run, against `model`
    on `inputs` (fed in the program's input dtype)."""
    path = os.fspath(path)
    with warnings.catch_warnings():
        # torch warns about MPRNet's shared PReLU (one tensor stored under many names), which it
        # loads right; the comparison below is what says whether the values are.
        warnings.filterwarnings("ignore", message="No complete tensor found in the group")
        program = torch.export.load(path)
    names = set(program.graph_signature.user_inputs)
    (placeholder,) = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in names]
    dtype = placeholder.meta["val"].dtype
    module = program.module()

    def run(x):
        with torch.no_grad():
            return _outputs(module(x))

    return compare(run, model, inputs, dtype, artifact=path, runner="torch.export.load", tolerance=tolerance)
