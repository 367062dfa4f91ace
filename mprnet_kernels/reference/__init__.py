"""Pure-PyTorch reference MPRNet and losses: the oracle every test and benchmark compares to.

Written from ``docs/MPRNET.md``; it imports nothing else from ``mprnet_kernels`` and is never
optimised, so that it stays an independent, readable statement of the numbers to reproduce.
"""

from .blocks import (
    CAB,
    ORB,
    SAM,
    CALayer,
    Decoder,
    DownSample,
    Encoder,
    ORSNet,
    SkipUpSample,
    UpSample,
    conv,
)
from .losses import (
    CharbonnierLoss,
    EdgeLoss,
    MPRNetLoss,
    charbonnier_loss,
    clamp01,
    edge_loss,
    laplacian,
    mprnet_loss,
)
from .ops import ca_tail, local_ca_tail, local_mean, replicate_to, sam_gate, upsample2x_add
from .model import EXTRA_PRESETS, PRESETS, MPRNet, preset_config

__all__ = [
    "MPRNet",
    "PRESETS",
    "EXTRA_PRESETS",
    "preset_config",
    "conv",
    "CALayer",
    "CAB",
    "SAM",
    "DownSample",
    "UpSample",
    "SkipUpSample",
    "Encoder",
    "Decoder",
    "ORB",
    "ORSNet",
    "CharbonnierLoss",
    "EdgeLoss",
    "MPRNetLoss",
    "charbonnier_loss",
    "clamp01",
    "edge_loss",
    "laplacian",
    "mprnet_loss",
    "ca_tail",
    "local_ca_tail",
    "local_mean",
    "replicate_to",
    "sam_gate",
    "upsample2x_add",
]
