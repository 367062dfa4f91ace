"""Loss modules backed by the fused ops: drop-in replacements for the reference modules in
mprnet_kernels.reference.losses (subclasses of them: the same constructors, attributes and calls;
only forward differs).

Mixed dtypes (autocast): the ops take two tensors of one dtype. When the prediction and the
target differ, as with a bfloat16 or float16 prediction under autocast and a float32 target,
both are brought to their promoted dtype (torch.promote_types: float32 there), as `x - y` does
in the reference; the cast is differentiable, so the prediction's gradient comes back in its
own dtype. Autocast itself does not lower the ops (custom ops are not on its cast lists), so
the loss is computed, and returned, in that promoted dtype.
"""

from typing import Sequence, Union

import torch

from ..ops.charbonnier_loss import charbonnier_loss
from ..ops.edge_loss import edge_loss
from ..ops.mprnet_loss import mprnet_loss
from ..reference import losses as reference

__all__ = ["CharbonnierLoss", "EdgeLoss", "MPRNetLoss"]


def promote_pair(x: torch.Tensor, y: torch.Tensor):
    """x and y in their promoted dtype (a no-op when they already share it)."""
    if x.dtype == y.dtype:
        return x, y
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype)


class EdgeLoss(reference.EdgeLoss):
    """mean(sqrt(lap(x - y)^2 + eps^2)), the Laplacian edge loss of MPRNet, for (N, C, H, W)
    inputs of any channel count: one fused op (mprnet::edge_loss) that reads x and y once and
    writes the gradient in the same pass when one is needed."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reference.check_floating("EdgeLoss", prediction=x, target=y)
        x, y = promote_pair(x, y)
        return edge_loss(x, y, self.eps)


class CharbonnierLoss(reference.CharbonnierLoss):
    """mean(sqrt((x - y)^2 + eps^2)) over all elements, any shape: one fused op
    (mprnet::charbonnier_loss) that reads x and y once and writes the gradient in the same pass
    when one is needed."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reference.check_floating("CharbonnierLoss", prediction=x, target=y)
        x, y = promote_pair(x, y)
        return charbonnier_loss(x, y, self.eps)


class MPRNetLoss(reference.MPRNetLoss):
    """The MPRNet training objective over all stage outputs, as one fused op
    (mprnet::mprnet_loss) that reads the target once for every stage and both terms:

        loss(outputs, target) = sum_s Charbonnier(out_s, target)
                                + edge_weight * sum_s Edge(out_s, target)

    ``outputs`` is the list the model returns (or one tensor). ``MPRNetLoss()`` is the
    deblurring/deraining recipe; ``MPRNetLoss(edge_weight=0, clamp=True)`` the denoising one
    (Charbonnier alone on outputs clamped to [0, 1]; the target is not clamped). edge_weight=0
    skips the edge term entirely, as the reference does. Stage outputs and target in different
    dtypes are all brought to their promoted dtype (module docstring). The edge term needs
    (N, C, H, W) tensors; with edge_weight=0 any shape is accepted, as by the reference.
    """

    def forward(self, outputs: Union[Sequence[torch.Tensor], torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        outputs = reference.stage_outputs(outputs)
        reference.check_floating("MPRNetLoss", target=target, **{f"outputs[{i}]": o for i, o in enumerate(outputs)})
        dtype = target.dtype
        for out in outputs:
            dtype = torch.promote_types(dtype, out.dtype)
        outputs = [out.to(dtype) for out in outputs]
        target = target.to(dtype)
        if self.edge_weight == 0 and target.dim() != 4 and all(o.shape == target.shape for o in outputs):
            # Charbonnier alone is elementwise: any shape works as a 4-D view of itself (the op
            # reads any strides; reshape copies only what cannot be viewed).
            outputs = [_as_4d(out) for out in outputs]
            target = _as_4d(target)
        return mprnet_loss(outputs, target, self.eps, self.edge_weight, self.clamp)


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(1, 1, 1, -1) if t.dim() < 2 else t.reshape(1, 1, -1, t.shape[-1])
