"""mprnet::local_ca_tail, the channel-attention tail of a CAB with local statistics (TLC's
test-time local converter; docs/OPS.md section 7).

    p   = mean of x over every k1 x k2 window inside the map          (N, C, H-k1+1, W-k2+1)
    s   = sigmoid(W2 relu(W1 p + b1) + b2)                            per pooled position
    out = x * replicate(s) + r                                        replicate: mprnet_kernels.reference.replicate_to

``torch.ops.mprnet.local_ca_tail(x, r, w1, b1, w2, b2, k1, k2)`` takes the effective window
(1 <= k1 <= H, 1 <= k2 <= W); k1 = H and k2 = W give ca_tail. Dtypes and layouts as ca_tail: x
any floating dtype, r of x's dtype or float32 beside a float16/bfloat16 x (autocast), weights of
one floating dtype of their own; out has r's dtype and x's layout.

Forward: the CPU kernel (csrc/ops/cpu/local_ca_tail_kernel.cpp) and the Triton kernels
(triton/local_ca_tail.py), each a pass computing the window means and a pass computing the gate
and the output without storing the gate. Backward: the adjoint as a composition of PyTorch ops
(in the accumulation dtype, below), recomputing the means; the forward is the fused part.
"""

import numbers
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ..reference import ops as reference_ops
from ._autograd import refuse_double_backward
from ._backend import HAS_TRITON, register_cuda
from ._checks import check_real_inputs, checks
from ._dtypes import accumulation_dtype
from ._layout import empty_output, output_memory_format
from .ca_tail import _strided_like

_OP = "mprnet::local_ca_tail"


@torch.library.register_fake(_OP)
def _fake(x, r, w1, b1, w2, b2, k1, k2):
    check_real_inputs(checks.local_ca_tail, x, r, w1, b1, w2, b2, k1, k2)
    return empty_output(x, r.dtype)


if HAS_TRITON:  # the Triton module imports triton
    from .triton import local_ca_tail as _triton
else:
    _triton = None

register_cuda("local_ca_tail", "local_ca_tail", default="triton", triton=_triton and _triton.local_ca_tail)


# -------------------------------------------------------------------------------------------
# Backward.

def _fold(t: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The adjoint of reference.replicate_to: t (N, C, H, W) summed onto the (h', w') positions
    each output position takes its gate from (the border rows and columns collect the rest).
    Written out rather than aten's replication_pad2d_backward, whose CPU kernel returns other
    strides than its meta function and so breaks Inductor's stride checks."""
    for dim, keep in ((-2, size[0]), (-1, size[1])):
        total = t.shape[dim]
        lo = (total - keep) // 2
        hi = lo + keep
        mid = t.narrow(dim, lo, keep)
        if lo:
            first = mid.narrow(dim, 0, 1) + t.narrow(dim, 0, lo).sum(dim, keepdim=True)
            mid = torch.cat([first, mid.narrow(dim, 1, keep - 1)], dim)
        if hi < total:
            last = mid.narrow(dim, keep - 1, 1) + t.narrow(dim, hi, total - hi).sum(dim, keepdim=True)
            mid = torch.cat([mid.narrow(dim, 0, keep - 1), last], dim)
        t = mid
    return t


def _mean_adjoint(dp: torch.Tensor, window: Sequence[int], out_dtype: torch.dtype) -> torch.Tensor:
    """The adjoint of reference.local_mean: dx[t, u] = the sum of dp / (k1 k2) over the windows
    holding (t, u). Autograd takes it back through the reference's integral
    image (corner slices, padding, two reverse cumsums), which makes it a flat sum of
    +-dp[a, b] over four quadrants from (t + 1 - k1, u + 1 - k2) and (t + 1, u + 1); here the
    same four quadrant sums come from one table of suffix sums of dp, so a NaN or Inf spreads
    exactly as in the reference's backward. The table is float64: its entries are sums over up
    to the whole map, and the differences of float32 ones would lose a small window's digits."""
    k1, k2 = window
    ph, pw = dp.shape[-2:]
    d = (dp / (k1 * k2)).double()
    suffix = F.pad(d.flip(-2).cumsum(-2).flip(-2).flip(-1).cumsum(-1).flip(-1), (0, 1, 0, 1))  # zero past the end
    # Row t takes suffix rows max(t + 1 - k1, 0) and min(t + 1, h'); then the same for columns.
    rows = _clamped_difference(suffix, -2, k1, ph, suffix.dtype)
    return _clamped_difference(rows, -1, k2, pw, out_dtype)


def _clamped_difference(t: torch.Tensor, dim: int, k: int, keep: int, dtype: torch.dtype) -> torch.Tensor:
    """out[i] = t[max(i + 1 - k, 0)] - t[min(i + 1, keep)] along dim, for i in [0, keep + k - 1)
    (t has keep + 1 entries there), rounded to dtype. Each of the (at most three) runs of i
    between k - 1 and keep is a difference of two slices of t or of one and an end entry
    broadcast, so no gathered copy of t is made."""
    n = keep + k - 1
    shape = list(t.shape)
    shape[dim] = n
    out = t.new_empty(shape, dtype=dtype)
    cuts = sorted({0, min(k - 1, n), min(keep, n), n})
    for i0, i1 in zip(cuts, cuts[1:]):
        size = list(t.shape)
        size[dim] = i1 - i0
        lo = t.narrow(dim, 0, 1).expand(size) if i1 <= k - 1 else t.narrow(dim, i0 + 1 - k, i1 - i0)
        hi = t.narrow(dim, keep, 1).expand(size) if i0 >= keep else t.narrow(dim, i0 + 1, i1 - i0)
        out.narrow(dim, i0, i1 - i0).copy_(lo - hi)
    return out


def _adjoint(grad, x, w1, b1, w2, b2, window):
    """(grad_x, grad_w1, grad_b1, grad_w2, grad_b2) of out = x * replicate(s(p(x))) + r, in the
    accumulation dtype (float32, float64 for float64 x), the biases' even when they were None."""
    acc = accumulation_dtype(x.dtype)
    n, c, h, w = x.shape
    hidden = w1.shape[0]
    xa, ga = x.to(acc), grad.to(acc)
    m1 = w1.reshape(hidden, c).to(acc)
    m2 = w2.reshape(c, hidden).to(acc)
    p = reference_ops.local_mean(xa, window)
    hid = torch.relu(F.conv2d(p, m1[:, :, None, None], None if b1 is None else b1.to(acc)))
    s = torch.sigmoid(F.conv2d(hid, m2[:, :, None, None], None if b2 is None else b2.to(acc)))
    grad_x = ga * reference_ops.replicate_to(s, (h, w))
    ds = _fold(ga * xa, s.shape[-2:])
    dz2 = ds * s * (1 - s)
    grad_w2 = torch.einsum("nchw,njhw->cj", dz2, hid)
    dh = F.conv2d(dz2, m2.t()[:, :, None, None])
    # ReLU's backward as torch's threshold_backward: zero where the output is <= 0 (a NaN output
    # passes its gradient on).
    dz1 = torch.where(hid <= 0, 0.0, dh)
    grad_w1 = torch.einsum("njhw,nchw->jc", dz1, p)
    dp = F.conv2d(dz1, m1.t()[:, :, None, None])
    grad_x = grad_x + _mean_adjoint(dp, window, acc)
    return grad_x, grad_w1, dz1.sum((0, 2, 3)), grad_w2, dz2.sum((0, 2, 3))


def _setup_context(ctx, inputs, output):
    x, r, w1, b1, w2, b2, k1, k2 = inputs
    ctx.window = (k1, k2)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, w1, b1, w2, b2)


def _backward(ctx, grad):
    refuse_double_backward(_OP)
    need_x, need_r, need_w1, need_b1, need_w2, need_b2 = ctx.needs_input_grad[:6]
    none = (None,) * 8
    if grad is None:
        return none
    grad_r = grad if need_r else None
    if not (need_x or need_w1 or need_b1 or need_w2 or need_b2):
        return (None, grad_r) + none[2:]
    x, w1, b1, w2, b2 = ctx.saved_tensors  # once: unpacking twice fails under non-reentrant checkpointing
    gx, gw1, gb1, gw2, gb2 = _adjoint(grad, x, w1, b1, w2, b2, ctx.window)
    gx = gx.to(x.dtype).contiguous(memory_format=output_memory_format(x)) if need_x else None
    gw1 = _strided_like(gw1.to(w1.dtype).view(w1.shape), w1) if need_w1 else None
    gw2 = _strided_like(gw2.to(w2.dtype).view(w2.shape), w2) if need_w2 else None
    gb1 = gb1.to(b1.dtype) if need_b1 else None
    gb2 = gb2.to(b2.dtype) if need_b2 else None
    return gx, grad_r, gw1, gb1, gw2, gb2, None, None


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def _window(window) -> tuple:
    """window as (k1, k2), ints (torch.SymInt under dynamic shapes) with the C++ check to come
    for their range; anything else is a TypeError naming the argument."""
    def is_int(k):
        return isinstance(k, (numbers.Integral, torch.SymInt)) and not isinstance(k, bool)

    if not isinstance(window, (tuple, list)) or len(window) != 2 or not all(is_int(k) for k in window):
        raise TypeError(f"mprnet::local_ca_tail: window must be a pair of ints (k1, k2), got {window!r}")
    return tuple(k if isinstance(k, torch.SymInt) else int(k) for k in window)


def local_ca_tail(x: torch.Tensor, r: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                  w2: torch.Tensor, b2: Optional[torch.Tensor], window: Sequence[int]) -> torch.Tensor:
    """x * replicate(sigmoid(W2 relu(W1 local_mean(x) + b1) + b2)) + r, fused (forward in 4
    passes and the window means).

    x: (N, C, H, W); r: like x (x's dtype, or float32 for a float16/bfloat16 x); w1: (C/r, C) or
    (C/r, C, 1, 1); w2: (C, C/r) or (C, C/r, 1, 1); b1, b2: biases or None; window: the effective
    (k1, k2), 1 <= k1 <= H and 1 <= k2 <= W (reference.effective_window gives it from a layer's
    window). The result has r's dtype and x's memory layout.
    """
    k1, k2 = _window(window)
    return torch.ops.mprnet.local_ca_tail(x, r, w1, b1, w2, b2, k1, k2)
