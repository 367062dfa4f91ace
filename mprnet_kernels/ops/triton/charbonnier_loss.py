"""The Triton kernel of mprnet::charbonnier_loss (mprnet_kernels/ops/charbonnier_loss.py) and
its launcher. mprnet_loss's Triton path runs the same kernel with its options on."""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._dtypes import accumulation_dtype
from .._layout import empty_output
from .utils import cdiv, mean_of_partials, split_f32


@triton.jit
def charbonnier_terms(d, eps2):
    """sqrt(d^2 + eps2) and d / sqrt(d^2 + eps2), correctly rounded in float32 and float64
    (Triton's plain sqrt and division are approximate in float32)."""
    if d.dtype == tl.float64:
        r = tl.sqrt(d * d + eps2)
        u = d / r
    else:
        r = tl.sqrt_rn(d * d + eps2)
        u = tl.div_rn(d, r)
    return r, u


@triton.jit
def charbonnier_kernel(x_ptr, y_ptr, grad_ptr, partial_ptr, n, eps2_hi, eps2_lo,
                       addend_ptr, addend_w_hi, addend_w_lo, gy_in_ptr, gy_out_ptr,
                       BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr, CLAMP: tl.constexpr,
                       ADDEND: tl.constexpr, GY_LOAD: tl.constexpr, GY_STORE: tl.constexpr):
    """One block of BLOCK elements of flat, dense, same-layout buffers per program; the
    block's sum of sqrt(d^2 + eps^2) goes to partial_ptr[program], summed afterwards in a
    fixed order (no atomics). 64-bit offsets: n may pass 2^31.

    charbonnier_loss uses the plain form (d = x - y, grad = d / sqrt(d^2 + eps^2)); the
    options serve mprnet_loss, one launch per stage output: CLAMP takes d = clamp(x, 0, 1)
    - y and masks grad like torch.clamp's backward; ADDEND adds addend_w * addend[i] (the
    edge term's gradient) to the gradient; GY_STORE writes gy_in[i] (when GY_LOAD) minus
    the unmasked gradient to gy_out, the target's gradient summed over stages.
    """
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc_ty = partial_ptr.dtype.element_ty
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    eps2 = tl.cast(eps2_hi, acc_ty) + tl.cast(eps2_lo, acc_ty)
    if CLAMP:
        # NaN stays NaN, as in torch.clamp: both comparisons are false.
        v = tl.where(x < 0.0, 0.0, tl.where(x > 1.0, 1.0, x))
    else:
        v = x
    r, g = charbonnier_terms(v - y, eps2)
    if ADDEND:
        e = tl.load(addend_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        g = g + (tl.cast(addend_w_hi, acc_ty) + tl.cast(addend_w_lo, acc_ty)) * e
    if GY_STORE:
        gy = -g
        if GY_LOAD:
            gy = tl.load(gy_in_ptr + offs, mask=mask, other=0.0).to(acc_ty) - g
        tl.store(gy_out_ptr + offs, gy.to(gy_out_ptr.dtype.element_ty), mask=mask)
    if WRITE_GRAD:
        if CLAMP:
            # The library's clamp gradient (reference.clamp01): strictly inside (0, 1) only.
            g = tl.where((x > 0.0) & (x < 1.0), g, 0.0)
        tl.store(grad_ptr + offs, g.to(grad_ptr.dtype.element_ty), mask=mask)
    tl.store(partial_ptr + pid, tl.sum(tl.where(mask, r, 0.0), axis=0))


BLOCK = 4096
NUM_WARPS = 8


def charbonnier_loss(x, y, eps, compute_grad):
    x_d, y_d = checks.charbonnier_loss(x, y)
    n = x.numel()
    grad = empty_output(x) if compute_grad else x.new_empty((0,))
    programs = cdiv(n, BLOCK)
    partials = torch.empty(programs, dtype=accumulation_dtype(x.dtype), device=x.device)
    if n:
        eps2_hi, eps2_lo = split_f32(float(eps) * float(eps))
        charbonnier_kernel[(programs,)](
            x_d, y_d, grad, partials, n, eps2_hi, eps2_lo, None, 0.0, 0.0, None, None,
            BLOCK=BLOCK, WRITE_GRAD=compute_grad, CLAMP=False, ADDEND=False, GY_LOAD=False,
            GY_STORE=False, num_warps=NUM_WARPS)
    return mean_of_partials(partials, n, x.dtype), grad
