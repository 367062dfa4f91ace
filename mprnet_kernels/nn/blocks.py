"""Drop-in CALayer, CAB and SAM (docs/MPRNET.md "Building blocks") computing with the fused ops.

Each has the reference module's constructor, sub-module names and registration order, so the
state_dict keys are the same (``conv_du.0.weight``, ``conv_du.2.weight``, ``body.0.weight``,
``body.1.weight``, ``body.2.weight``, ``conv1/2/3.weight``) and a reference state_dict loads
as is. The convolutions stay cuDNN/oneDNN convolutions; what is fused is everything around
them:

* CAB: ``body`` (conv, the shared PReLU ``act``, conv) then one ``mprnet::ca_tail`` that pools,
  runs the 1x1-conv MLP, gates and adds the block input (4 passes forward, 4 backward);
* SAM: the three 1x1 convs, then ``mprnet::sam_gate`` for ``conv1(x) * sigmoid(conv3(img)) + x``.

``replace_blocks(model)`` swaps the reference blocks of an existing model for these in place
(``CAB.from_reference(block)`` etc. for one block), reusing their convolutions and activation, so
MPRNet's single shared PReLU stays shared and parameter names do not change.

Mixed dtypes (autocast). Under autocast the convolutions return float16/bfloat16 while a block's
input may be float32, and the reference's ``CA(body(x)) + x`` then promotes to float32. The
fused ops follow the same rule: ``ca_tail`` takes a half-precision body output with a float32
residual directly (no cast pass) and returns float32, as the reference does; other mixes are
first brought to ``torch.promote_types`` of the two (a cast, as the reference's add implies).
The gate's MLP runs in float32 from the float32 weights, where the reference runs its two 1x1
convs in the autocast dtype, so the fused result is the more precise one. SAM gates mixed
dtypes the same way: all three operands are brought to their promoted dtype.
"""

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ..ops.ca_tail import ca_tail
from ..ops.local_ca_tail import local_ca_tail
from ..ops.sam_gate import sam_gate
from .onednn import conv_add, conv_prelu
from ..reference import blocks as reference
from ..reference import ops as reference_ops

__all__ = ["CALayer", "CAB", "SAM", "replace_blocks"]

_HALF = (torch.float16, torch.bfloat16)


def _tail_operands(x: torch.Tensor, r: torch.Tensor):
    """x and r in dtypes ca_tail accepts, giving the reference's result dtype (module docstring)."""
    if x.dtype == r.dtype or (x.dtype in _HALF and r.dtype == torch.float32):
        return x, r
    dtype = torch.promote_types(x.dtype, r.dtype)
    return x.to(dtype), r.to(dtype)


class _FusedBlock(nn.Module):
    """A fused block made of a reference block's own sub-modules: the structure (sub-module
    names, registration order, parameter init) has one home, the reference module, and the
    fused one only changes ``forward``. ``_take(ref)`` registers what it keeps of `ref`."""

    _reference: type = nn.Module

    def _take(self, ref: nn.Module) -> None:
        raise NotImplementedError

    @classmethod
    def from_reference(cls, ref: nn.Module):
        """The fused twin of a reference block, sharing its convolutions and activation objects
        (no parameter created or copied; a PReLU shared between blocks stays shared)."""
        if not isinstance(ref, cls._reference):
            raise TypeError(f"{cls.__name__}.from_reference: expected a reference {cls._reference.__name__}, "
                            f"got {type(ref).__name__}")
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block._take(ref)
        block.train(ref.training)
        return block


class CALayer(_FusedBlock):
    """Channel attention, ``x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)``, as one fused op.

    ``forward(x, residual)`` adds ``residual`` in the same pass (what CAB uses); without it the
    residual is a zero tensor, one extra read that a standalone CALayer pays.
    """

    _reference = reference.CALayer

    def __init__(self, channel: int, reduction: int = 4, bias: bool = False):
        super().__init__()
        self._take(reference.CALayer(channel, reduction, bias=bias))

    def _take(self, ref: reference.CALayer) -> None:
        # The reference's Sequential (ReLU and Sigmoid included) keeps the weight keys conv_du.0
        # and conv_du.2; forward reads the weights, not the modules. Its pooling module is not
        # kept (no parameters; ca_tail pools).
        self.conv_du = ref.conv_du
        self.window = ref.window  # local attention (reference CALayer, MPRNet.set_local_attention)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is None:
            residual = torch.zeros_like(x)
        x, residual = _tail_operands(x, residual)
        down, up = self.conv_du[0], self.conv_du[2]
        if self.window is not None:
            window = reference_ops.effective_window(self.window, x.shape[-2:])
            return local_ca_tail(x, residual, down.weight, down.bias, up.weight, up.bias, window)
        return ca_tail(x, residual, down.weight, down.bias, up.weight, up.bias)


class CAB(_FusedBlock):
    """Channel attention block ``CA(conv(act(conv(x)))) + x``, the tail fused into one op.

    ``act`` is shared the way the reference shares it (MPRNet passes one ``nn.PReLU`` to every
    CAB); a private ``nn.PReLU()`` is made when it is omitted. ``CA`` is registered before
    ``body``, the upstream state_dict order.
    """

    _reference = reference.CAB

    def __init__(self, n_feat: int, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, act: Optional[nn.Module] = None):
        super().__init__()
        self._take(reference.CAB(n_feat, kernel_size, reduction, bias, act))

    def _take(self, ref: reference.CAB) -> None:
        self.CA = CALayer.from_reference(ref.CA)
        self.body = ref.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, act, second = self.body
        return self.CA(second(conv_prelu(first, act, x)), residual=x)


class SAM(_FusedBlock):
    """Supervised attention module: returns ``(conv1(x) * sigmoid(conv3(img)) + x, img)`` with
    ``img = conv2(x) + x_img``, the gate fused into one op."""

    _reference = reference.SAM

    def __init__(self, n_feat: int, kernel_size: int = 1, bias: bool = False,
                 img_channels: int = 3):
        super().__init__()
        self._take(reference.SAM(n_feat, kernel_size, bias, img_channels))

    def _take(self, ref: reference.SAM) -> None:
        self.conv1, self.conv2, self.conv3 = ref.conv1, ref.conv2, ref.conv3

    def forward(self, x: torch.Tensor, x_img: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        img = conv_add(self.conv2, x, add=x_img)
        x1, z = self.conv1(x), self.conv3(img)
        if not x1.dtype == z.dtype == x.dtype:
            dtype = torch.promote_types(torch.promote_types(x1.dtype, z.dtype), x.dtype)
            x1, z, x = x1.to(dtype), z.to(dtype), x.to(dtype)
        return sam_gate(x1, z, x), img


def _convert(module: nn.Module) -> Optional[nn.Module]:
    for fused in (CALayer, CAB, SAM):
        if isinstance(module, fused._reference):
            return fused.from_reference(module)
    return None


def replace_blocks(module: nn.Module) -> nn.Module:
    """Replaces every reference ``CALayer``, ``CAB`` and ``SAM`` in `module` (a reference MPRNet,
    say) by the fused ones, in place, and returns `module` (or its replacement, when `module`
    is itself such a block).

    The new blocks take over the old ones' convolutions and activation objects: parameters are
    the same tensors, ``named_parameters()`` and ``state_dict()`` keep their names and order,
    and MPRNet's shared PReLU stays one parameter shared by every CAB.
    """
    converted = _convert(module)
    if converted is not None:
        return converted
    for name, child in list(module.named_children()):
        new = replace_blocks(child)
        if new is not child:
            setattr(module, name, new)
    return module
