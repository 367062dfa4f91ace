"""The Triton path of mprnet::mprnet_loss (mprnet_kernels/ops/mprnet_loss.py): a launcher that
composes the edge loss's kernels and the Charbonnier kernel, per stage output."""

import torch

from .._checks import checks
from .._dtypes import accumulation_dtype
from .._layout import empty_output, output_memory_format
from .charbonnier_loss import BLOCK, NUM_WARPS, charbonnier_kernel
from .edge_loss import edge_loss
from .utils import cdiv, split_f32


def mprnet_loss(outputs, y, eps, edge_weight, clamp, grad_outputs, grad_y):
    """Not one fused kernel: per stage, the edge loss's Triton kernels (on clamp(out) when
    clamp, an extra pass) give the edge term and its gradient e_s, then one pass of
    charbonnier_kernel reads out_s, y and e_s and writes grads[s] = mask (u_s + w e_s) and
    the running target gradient. The stage outputs, the target and the gradients are each
    read or written once by that last pass; the edge kernels add their own traffic.
    """
    checks.mprnet_loss(outputs, y)
    grads = [empty_output(o) if grad_outputs else o.new_empty((0,)) for o in outputs]
    gy = empty_output(y) if grad_y else y.new_empty((0,))
    n = y.numel()
    acc_ty = accumulation_dtype(y.dtype)
    if n == 0:
        return y.new_full((), float("nan")), grads, gy
    # One flat layout for every buffer the Charbonnier pass indexes together: y's.
    fmt = output_memory_format(y)
    y_d = y.contiguous(memory_format=fmt)
    want_grad = grad_outputs or grad_y
    edge = edge_weight != 0
    programs = cdiv(n, BLOCK)
    partials = torch.empty((len(outputs), programs), dtype=acc_ty, device=y.device)
    edge_means = []
    # The target's gradient sums the stages in the working dtype, rounded once at the end;
    # for float32/float64 the output itself holds the running sum.
    gy_acc = None
    if grad_y:
        gy_acc = gy if gy.dtype == acc_ty or len(outputs) == 1 else torch.empty_like(gy, dtype=acc_ty)
    eps2_hi, eps2_lo = split_f32(float(eps) * float(eps))
    w_hi, w_lo = split_f32(float(edge_weight))
    for s, out in enumerate(outputs):
        out_d = out.contiguous(memory_format=fmt)
        e = None
        if edge:
            edge_mean, e = edge_loss(out.clamp(0, 1) if clamp else out, y, eps, want_grad)
            edge_means.append(edge_mean)
            e = e.contiguous(memory_format=fmt) if want_grad else None
        g = None
        if grad_outputs:
            same = output_memory_format(out) == fmt
            g = grads[s] if same else torch.empty_like(y_d)
        last = s == len(outputs) - 1
        charbonnier_kernel[(programs,)](
            out_d, y_d, g, partials[s], n, eps2_hi, eps2_lo, e, w_hi, w_lo,
            gy_acc if s > 0 else None, (gy if last else gy_acc) if grad_y else None,
            BLOCK=BLOCK, WRITE_GRAD=grad_outputs, CLAMP=clamp, ADDEND=e is not None,
            GY_LOAD=grad_y and s > 0, GY_STORE=grad_y, num_warps=NUM_WARPS)
        if g is not None and g is not grads[s]:
            grads[s].copy_(g)
    total = partials.sum() / n
    if edge:
        total = total + edge_weight * torch.stack(edge_means).to(acc_ty).sum()
    return total.to(y.dtype), grads, gy
