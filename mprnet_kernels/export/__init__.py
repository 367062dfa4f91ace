"""Exports of MPRNet (the fast model with any Rewrites, or the reference) that are checked
against PyTorch before they are reported written: ONNX (onnx.py), torch.export programs
(program.py, including one that loads without mprnet_kernels) and weights-only checkpoints
(weights.py). The fused ops are lowered to standard ops first (lowering.py); check.py runs each
artifact where it will be used and measures it against the model.
"""

from .check import TOLERANCE, CheckResult, ExportCheckError, ExportReport, check_onnx, check_program
from .lowering import LOWERINGS, UnsupportedOpError, decomposition_table, lowered, mprnet_ops_in, require_lowered
from .onnx import EXPORTERS, export_onnx
from .program import export_program
from .weights import export_weights

__all__ = ["CheckResult", "EXPORTERS", "ExportCheckError", "ExportReport", "LOWERINGS", "TOLERANCE",
           "UnsupportedOpError", "check_onnx", "check_program", "decomposition_table", "export_onnx",
           "export_program", "export_weights", "lowered", "mprnet_ops_in", "require_lowered"]
