"""MPRNet (the fast model, the reference, any Rewrites) to ONNX, checked in onnxruntime.

Both of torch's exporters work, and both see only standard ops (lowering.py):

- ``exporter="dynamo"`` (the default, torch's own default): torch.export, then
  run_decompositions with the mprnet lowerings, then torch.onnx.export of that program.
- ``exporter="legacy"`` (the TorchScript-based ``torch.onnx.export(..., dynamo=False)``): traced
  with the lowerings switched in (``lowered()``). Much quicker to export (seconds, where
  dynamo takes tens of seconds with dynamic shapes on a CPU); torch deprecates it.

Why lower rather than translate each op into ONNX by hand (custom_translation_table,
register_custom_op_symbolic): the lowerings are the ops' functional references, one table
serving both exporters and torch.export; the ONNX of the standard ops (bilinear resize with its
border clamping, pooling) is the exporters' own, tested translation; and nothing depends on an
opset's spelling of an ONNX op or on process-wide symbolic registrations.

Every Rewrites combination exports to a correct file with either exporter. checkpoint_stages is
a no-op in an export (no gradients), and channels_last only changes memory layouts, which ONNX
has none of: the files are the same with or without either (tests/export/test_onnx.py).
bfloat16 files are refused when checked: onnxruntime's CPU provider has no bfloat16 Conv, so
such a file cannot be checked here.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from .check import ExportReport, check_onnx, checked, resolve_tolerance
from .inputs import DYNAMIC_AXES, check_inputs, dynamic_shapes, example_input, prepared, resolve_dtype
from .lowering import decomposition_table, lowered, require_lowered

__all__ = ["EXPORTERS", "export_onnx", "output_names"]

EXPORTERS = ("dynamo", "legacy")
INPUT_NAME = "input"


def output_names(count: int):
    """MPRNet's outputs are [stage3, stage2, stage1] images; other models' outputs are numbered."""
    return ["stage3", "stage2", "stage1"] if count == 3 else [f"output{i}" for i in range(count)]


def _count_outputs(model: nn.Module, example: torch.Tensor) -> int:
    out = model(example)
    return 1 if isinstance(out, torch.Tensor) else len(out)


def _dynamo(model: nn.Module, example: torch.Tensor, dynamic: bool, names, opset: Optional[int]):
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes() if dynamic else None)
    program = program.run_decompositions(decomposition_table(core=False))
    require_lowered(program.graph)
    return torch.onnx.export(program, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=names,
                             opset_version=opset, optimize=True, verbose=False)


def _legacy(model: nn.Module, example: torch.Tensor, dynamic: bool, names, opset: Optional[int]) -> bytes:
    buffer = io.BytesIO()
    axes = {name: DYNAMIC_AXES for name in [INPUT_NAME, *names]} if dynamic else None
    with lowered(), warnings.catch_warnings():
        # MPRNet's input check reads the traced sizes as Python numbers: a check, not part of the
        # graph. Whether the file generalises to other sizes is what check_onnx's second input shows.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes=axes, opset_version=opset)
    return buffer.getvalue()


def export_onnx(model: nn.Module, path: Union[str, os.PathLike], *, example: Optional[torch.Tensor] = None,
                dynamic: bool = True, dtype: Union[torch.dtype, str, None] = None, exporter: str = "dynamo",
                check: bool = True, tolerance: Optional[float] = None, opset: Optional[int] = None) -> ExportReport:
    """Writes `model` as an ONNX file at `path` and, with `check`, runs it in onnxruntime against
    the model.

    Args:
        model: the fast MPRNet (any Rewrites) or the reference, on the CPU; left as it was.
        example: the input to trace with, (N, C, H, W) with H and W multiples of 8; default a
            random 2 x in_c x 32 x 32 image. A static file (dynamic=False) runs only at its size.
        dynamic: batch, height and width dynamic (H and W multiples of 8; the example needs H,
            W >= 16).
        dtype: the file's dtype: None (the model's), torch.float32 / float16 / bfloat16 or
            'fp32' / 'fp16' / 'bf16'. The model is converted on a copy.
        exporter: 'dynamo' or 'legacy' (module docstring).
        check: compare onnxruntime's outputs with the model's on the example and, when dynamic,
            on an input of another batch, height and width (check.py for the measure).
        tolerance: the relative error allowed (default check.TOLERANCE for the dtype).
        opset: the ONNX opset (default: the exporter's).

    Returns an ExportReport. Raises ExportCheckError when the file does not match (the file is
    removed: a wrong file is never left behind), ValueError for a bfloat16 file with check=True
    (onnxruntime cannot run it on a CPU) and for bad arguments, UnsupportedOpError for a model
    calling an mprnet op without a lowering.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter: expected one of {', '.join(EXPORTERS)}, got {exporter!r}")
    dtype = resolve_dtype(dtype, model)
    resolve_tolerance(tolerance, dtype)  # a bad tolerance is reported before the export's work
    if dtype == torch.bfloat16 and check:
        raise ValueError("dtype: a bfloat16 ONNX file cannot be checked here (onnxruntime's CPU provider has no "
                         "bfloat16 convolution); export float16 or float32, or pass check=False to write it unchecked")
    path = Path(path)
    example = example_input(model, example, dtype, dynamic)
    with prepared(model, dtype) as target:
        names = output_names(_count_outputs(target, example))
        if exporter == "dynamo":
            program = _dynamo(target, example, dynamic, names, opset)
            program.save(path, external_data=False)
        else:
            path.write_bytes(_legacy(target, example, dynamic, names, opset))
    result = None
    if check:
        inputs = check_inputs(example, dynamic)
        result = checked(path, lambda: check_onnx(path, model, inputs, tolerance=tolerance), "export_onnx")
    return ExportReport(path=path, format="onnx", dtype=dtype, dynamic=dynamic, check=result)
