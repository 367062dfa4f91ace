"""A checkpoint's weights alone, for inference, checked by loading them back.

``mprnet_kernels.checkpoint.save_weights`` writes the file; ``export_weights`` adds the check
the other formats have: the file is read back with ``load_model`` (a float32 fast model, as a
user would load it) and its outputs are compared with the source model's. float32 weights give
the same numbers; float16/bfloat16 weights are rounded, and the outputs are held to that dtype's
tolerance (check.TOLERANCE).

Why not safetensors: it is not a dependency, and upstream's loader and this library's read
torch.save files (``torch.load(path)["state_dict"]``), which torch.load(weights_only=True) opens
without running code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn

from ..checkpoint import load_model, save_weights
from .check import TOLERANCE, ExportReport, checked, compare, resolve_tolerance
from .inputs import check_inputs, example_input

__all__ = ["export_weights"]


def export_weights(source: Union[nn.Module, str, os.PathLike, Mapping], path: Union[str, os.PathLike], *,
                   dtype: Optional[torch.dtype] = None, check: bool = True,
                   tolerance: Optional[float] = None) -> ExportReport:
    """save_weights(source, path, dtype), then (with `check`) the file loaded with load_model and
    run against the source's model on a small seeded input. Raises ExportCheckError on a mismatch
    (the file is removed), and what save_weights and load_model raise."""
    if tolerance is not None:
        resolve_tolerance(tolerance, torch.float32)  # reported before anything is written
    path = Path(path)
    written = save_weights(source, path, dtype=dtype)
    stored = next(iter(written["state_dict"].values())).dtype
    result = None
    if check:
        model = source if isinstance(source, nn.Module) else load_model(source)
        reloaded = load_model(path)
        inputs = check_inputs(example_input(model, None, torch.float32, dynamic=False), dynamic=False)

        def run(x):
            with torch.no_grad():
                return reloaded(x)

        allowed = TOLERANCE.get(stored, TOLERANCE[torch.float32]) if tolerance is None else tolerance
        result = checked(path, lambda: compare(run, model, inputs, torch.float32, artifact=str(path),
                                               runner="load_model", tolerance=allowed), "export_weights")
    return ExportReport(path=path, format="weights", dtype=stored, dynamic=False, check=result)
