"""nn.Module front ends of the fused ops."""

from .blocks import CAB, SAM, CALayer, replace_blocks
from .losses import CharbonnierLoss, EdgeLoss, MPRNetLoss

__all__ = ["CAB", "CALayer", "CharbonnierLoss", "EdgeLoss", "MPRNetLoss", "SAM", "replace_blocks"]
