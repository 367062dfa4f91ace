"""mprnet-kernels: fused kernels and a drop-in fast MPRNet.

    import mprnet_kernels                 # registers torch.ops.mprnet.*
    mprnet_kernels.ops.sam_gate(x1, z, x)
    mprnet_kernels.MPRNet(...)            # the fast drop-in model (same state_dict)
    mprnet_kernels.reference.MPRNet(...)  # the pure-PyTorch oracle
"""

from . import _extension  # noqa: F401  (loads the compiled ops first)
from . import ops
from .nn import CharbonnierLoss, EdgeLoss, MPRNetLoss
from ._build_info import build_info
from .cpu_cache import cpu_cache_stats, empty_cpu_cache
from .checkpoint import checkpoint_config, load_checkpoint, load_model, save_weights
from .export import ExportCheckError, export_onnx, export_program
from .model import MPRNet, Rewrites
from .restoration import restore
from .restoration.evaluate import Evaluation, evaluate
from .version import __version__

__all__ = ["CharbonnierLoss", "EdgeLoss", "Evaluation", "ExportCheckError", "MPRNet", "MPRNetLoss", "Rewrites",
           "build_info", "checkpoint_config", "cpu_cache_stats", "empty_cpu_cache", "evaluate", "export_onnx", "export_program", "load_checkpoint",
           "load_model", "ops", "restore", "save_weights", "__version__"]
