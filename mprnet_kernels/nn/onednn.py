"""CPU inference convolutions on weights prepacked once for oneDNN, with what follows a
convolution fused into it as oneDNN post-ops: the CAB's PReLU (one shared slope, so a leaky
ReLU), and residual adds (a binary add, or a sum into a buffer the caller owns).

``PackedConv2d`` is an ``nn.Conv2d`` (same parameters, state_dict and ``isinstance``) whose
forward takes this path when ``applies(x)``: a non-empty channels_last CPU tensor (the fast
model's layout; a packed weight makes oneDNN return channels_last, so other layouts would change
the output's), gradients off (``torch.no_grad`` or ``torch.inference_mode``; train or eval mode
does not matter to a convolution), oneDNN built and enabled, and no tracer, compiler, tensor
subclass, vmap or dispatch mode watching (exports, torch.compile and FlopCounterMode see plain
convs). Anything else (float64, CUDA, autograd, NCHW, a dtype mix autocast would not make) runs
``nn.Conv2d.forward`` unchanged. TorchScript and FX's symbolic tracing do not support the class.

The caller of ``into`` promises that no one else reads the buffer afterwards (a forward hook
that kept it would see the sum); a buffer sharing memory with the input is never written.

Stale weights. A pack keeps an exact copy of the weight and bias values it was made from and
is rebuilt when the module's differ: optimizer steps, ``load_state_dict``, a new Parameter and
writes through ``.data`` (which bypass the version counter) are all seen the same way. The
comparison reads the weights once per call (a few ms beside a forward of seconds); the copy
costs their size in memory.

Autocast (CPU, bfloat16): the convolution runs in bfloat16 on a bfloat16 pack, the input cast
as autocast would cast it, where oneDNN has bfloat16 convolutions for the CPU (AVX-512 BW/VL/DQ
or avx_ne_convert); elsewhere bfloat16 runs the eager convolution. A sum into a buffer of
another dtype is not fused (the caller's add then promotes, as the reference's does). The fused
leaky ReLU and adds round once, in float32, where eager rounds the convolution's bfloat16 output
first (and autocast rounds the PReLU slope to bfloat16): within the bf16 tolerance, not bitwise.
"""

from __future__ import annotations

import weakref
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cpu_cache import plain_cpu_inference

__all__ = ["PackedConv2d", "applies", "conv_add", "conv_prelu", "pack_convs"]


def _fusable() -> tuple:
    # oneDNN refuses bfloat16 convolutions on CPUs without avx_ne_convert or AVX-512 BW/VL/DQ
    # (eager's bfloat16 convolution then takes another path, which the fallback keeps).
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


_FUSABLE = _fusable()


def applies(x: torch.Tensor) -> bool:
    """Whether a convolution of `x` takes the prepacked oneDNN path (module docstring)."""
    # A packed weight makes oneDNN compute and return channels_last, so only channels_last
    # inputs (the fast model's layout) take the path: the output keeps the input's layout.
    return (plain_cpu_inference(x) and x.layout == torch.strided and x.dim() == 4 and x.numel() > 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype F.conv2d would compute in, where the packed path supports it; else None."""
    if torch.is_autocast_enabled("cpu"):
        bf16 = torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.bfloat16 in _FUSABLE
        if bf16 and x.dtype in (torch.float32, torch.bfloat16) and weight.dtype in (torch.float32, torch.bfloat16):
            return torch.bfloat16
        return None
    return x.dtype if x.dtype == weight.dtype and x.dtype in _FUSABLE else None


class _Pack:
    """A convolution's packed weight and bias, with exact copies of the values they came from."""
    __slots__ = ("copy", "bias_copy", "dtype", "packed", "packed_bias")

    def fresh(self, conv: nn.Conv2d, dtype: torch.dtype) -> bool:
        # The values decide: an equal weight packs to the same thing, whatever object, storage
        # or version counter holds it (a changed shape is unequal).
        b = conv.bias
        return (self.dtype == dtype and (b is None) == (self.bias_copy is None)
                and (b is None or torch.equal(self.bias_copy, b)) and torch.equal(self.copy, conv.weight))


_packs: "weakref.WeakKeyDictionary[nn.Conv2d, _Pack]" = weakref.WeakKeyDictionary()


def _pack(conv: nn.Conv2d, x: torch.Tensor, dtype: torch.dtype) -> _Pack:
    found = _packs.get(conv)
    if found is not None and found.fresh(conv, dtype):
        return found
    w, b = conv.weight.detach(), conv.bias
    p = _Pack()
    p.copy, p.dtype = w.clone(), dtype
    p.bias_copy = None if b is None else b.detach().clone()
    p.packed = torch.ops.mkldnn._reorder_convolution_weight(
        w.to(dtype), list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape))
    p.packed_bias = None if b is None else b.detach().to(dtype)
    _packs[conv] = p
    return p


class PackedConv2d(nn.Conv2d):
    """An nn.Conv2d that runs on a prepacked oneDNN weight where ``applies`` (module docstring).

    ``fused(x, slope=None, add=None, into=None)`` is ``conv(x)``, then a leaky ReLU of negative
    slope `slope` (a one-element tensor: a single-parameter PReLU's weight), then ``+ add``
    (a new output) or ``into + ...`` (written in place into `into`, which the caller owns and no
    one else reads, where the dtypes allow; use the returned tensor); one oneDNN primitive where
    it applies, the same eager ops otherwise.
    """

    def _usable(self, x: torch.Tensor) -> Optional[torch.dtype]:
        if self.padding_mode != "zeros" or isinstance(self.padding, str) or not applies(x):
            return None
        return _compute_dtype(x, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x)

    def fused(self, x: torch.Tensor, slope: Optional[torch.Tensor] = None, add: Optional[torch.Tensor] = None,
              into: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = self._usable(x)
        if dtype is None:
            return _eager(super().forward(x), slope, add, into)
        p = _pack(self, x, dtype)
        args = (list(self.padding), list(self.stride), list(self.dilation), self.groups)
        x = x.to(dtype)
        if slope is not None:  # oneDNN would apply a binary post-op before the unary one
            y = torch.ops.mkldnn._convolution_pointwise(x, p.packed, p.packed_bias, *args, "leaky_relu",
                                                        [float(slope)], "")
            return _eager(y, None, add, into)
        shape = _out_shape(self, x)
        # `into` is written while x is read: never when they share memory.
        if (into is not None and into.dtype == dtype and into.shape == shape
                and into.is_contiguous(memory_format=torch.channels_last)
                and into.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()):
            return torch.ops.mkldnn._convolution_pointwise_.binary(
                into, x, p.packed, p.packed_bias, *args, "add", 1.0, None, [], None)
        if (into is None and add is not None and add.dtype == dtype and add.shape == shape
                and add.is_contiguous(memory_format=torch.channels_last)):
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, add, p.packed, p.packed_bias, *args, "add", None, None, [], None)
        y = torch.ops.mkldnn._convolution_pointwise(x, p.packed, p.packed_bias, *args, "none", [], "")
        return _eager(y, None, add, into)


def _out_shape(conv: nn.Conv2d, x: torch.Tensor) -> torch.Size:
    return torch.Size((x.shape[0], conv.out_channels) + tuple((x.shape[2 + i] + 2 * conv.padding[i] - conv.dilation[i] * (conv.kernel_size[i] - 1) - 1)
                 // conv.stride[i] + 1 for i in range(2)))


def _eager(y: torch.Tensor, slope, add, into) -> torch.Tensor:
    if slope is not None:
        y = F.prelu(y, slope)
    if add is not None:
        y = y + add
    return y if into is None else into + y


def pack_convs(module: nn.Module) -> nn.Module:
    """Makes every plain ``nn.Conv2d`` in `module` a ``PackedConv2d`` in place (the same object
    and parameters; only the class changes) and returns `module`."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = PackedConv2d
    return module


def conv_add(conv: nn.Conv2d, x: torch.Tensor, add: Optional[torch.Tensor] = None,
             into: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x) + add`` (or ``into + conv(x)``, possibly written into `into`), fused where
    `conv` is a PackedConv2d and the packed path applies."""
    if isinstance(conv, PackedConv2d):
        return conv.fused(x, add=add, into=into)
    return _eager(conv(x), None, add, into)


def conv_prelu(conv: nn.Conv2d, act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(conv(x))``, fused where `conv` is a PackedConv2d and `act` a single-slope PReLU."""
    if isinstance(conv, PackedConv2d) and type(act) is nn.PReLU and act.num_parameters == 1:
        return conv.fused(x, slope=act.weight)
    return act(conv(x))
