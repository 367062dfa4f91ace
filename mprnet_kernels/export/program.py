"""MPRNet as a torch.export program (.pt2), checked through torch.export.load.

Which artifacts need ``import mprnet_kernels`` in the process that loads them:

- ``export_program(model, path)`` (decompose=True, the default): no. The program is
  decomposed to core ATen with the mprnet ops lowered (lowering.py), so it holds standard ops
  only; ``torch.export.load(path).module()(x)`` runs in any process with torch.
- ``export_program(model, path, decompose=False)``, like ``torch.export.save`` of
  ``torch.export.export(fast_model, ...)``: yes. The program calls torch.ops.mprnet.*, and
  torch.export.load in a process without them fails ("failed to resolve
  torch.ops.mprnet.ca_tail.default"); with them it runs the fused kernels.
- ``torch.jit.trace(fast_model, x)`` saved with torch.jit.save: yes (torch.jit.load fails on
  the unknown mprnet ops). Traced under ``mprnet_kernels.export.lowered()`` it does not.

The reference MPRNet (mprnet_kernels.reference) calls no mprnet op: its programs never need
the import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn

from .check import ExportReport, check_program, checked, resolve_tolerance
from .inputs import check_inputs, dynamic_shapes, example_input, prepared, resolve_dtype
from .lowering import decomposition_table, mprnet_ops_in, require_lowered

__all__ = ["export_program", "NEEDS_IMPORT_NOTE"]

NEEDS_IMPORT_NOTE = ("this program calls torch.ops.mprnet.*: `import mprnet_kernels` before torch.export.load, "
                     "in every process that loads it")


def export_program(model: nn.Module, path: Union[str, os.PathLike], *, example: Optional[torch.Tensor] = None,
                   dynamic: bool = True, dtype: Union[torch.dtype, str, None] = None, decompose: bool = True,
                   check: bool = True, tolerance: Optional[float] = None) -> ExportReport:
    """Writes `model` as a torch.export program at `path` (torch.export.save) and, with `check`,
    loads it back with torch.export.load and compares it with the model.

    Args:
        model, example, dynamic, dtype, check, tolerance: as for export_onnx (all three dtypes
            can be checked: the program runs in PyTorch).
        decompose: lower the mprnet ops and decompose to core ATen, so the file loads without
            mprnet_kernels (module docstring); False keeps the program as torch.export gives it,
            fused ops included, and the report's note says it needs the import.

    Returns an ExportReport. Raises ExportCheckError on a mismatch (the file is removed),
    ValueError/TypeError for bad arguments.
    """
    if not isinstance(decompose, bool):
        raise TypeError(f"decompose: expected True or False, got {decompose!r}")
    dtype = resolve_dtype(dtype, model)
    resolve_tolerance(tolerance, dtype)  # a bad tolerance is reported before the export's work
    path = Path(path)
    example = example_input(model, example, dtype, dynamic)
    with prepared(model, dtype) as target:
        program = torch.export.export(target, (example,), dynamic_shapes=dynamic_shapes() if dynamic else None)
    if decompose:
        program = program.run_decompositions(decomposition_table(core=True))
        require_lowered(program.graph)
    note = "" if decompose or not mprnet_ops_in(program.graph) else NEEDS_IMPORT_NOTE
    torch.export.save(program, path)
    result = None
    if check:
        inputs = check_inputs(example, dynamic)
        result = checked(path, lambda: check_program(path, model, inputs, tolerance=tolerance), "export_program")
    return ExportReport(path=path, format="pt2", dtype=dtype, dynamic=dynamic, check=result, note=note)
