"""mprnet::charbonnier_loss, MPRNet's Charbonnier loss (OPS.md section 3).

    loss = mean(sqrt((x - y)^2 + eps^2))

The op returns the loss and, when asked (compute_grad), the per-element gradient of the *sum*,
grad = (x - y) / sqrt((x - y)^2 + eps^2), written in the same pass that reads x and y. The
backward is then one scale: dL/dx = grad * grad_loss / numel, dL/dy = -dL/dx. grad stays
unscaled, in [-1, 1], so float16 keeps its bits until the incoming (possibly GradScaler-scaled)
grad_loss is applied; dividing by numel first would make it subnormal for large images.

Schema and CPU kernel: csrc/ops/charbonnier_loss.cpp and csrc/ops/cpu/; CUDA tensors run the
Triton kernel below (there is no CUDA C++ kernel for the losses). This file adds what Python
owns: the fake function, the CUDA dispatch and the public function; the autograd is the one
the loss ops share (_loss_autograd.py).
"""

import torch

from ._backend import HAS_TRITON, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output
from ._loss_autograd import register_pair_loss_autograd, wants_grad
from ._dtypes import accumulation_dtype
from ._reduce import mean_of_partials, split_f32

_OP = "mprnet::charbonnier_loss"


@torch.library.register_fake(_OP)
def _fake(x, y, eps, compute_grad):
    check_real_inputs(checks.charbonnier_loss, x, y)
    grad = empty_output(x) if compute_grad else x.new_empty((0,))
    return x.new_empty(()), grad


if HAS_TRITON:
    import triton
    import triton.language as tl

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

    def _charbonnier_triton(x, y, eps, compute_grad):
        """The Triton kernel on any device Triton runs on (CUDA; CPU under TRITON_INTERPRET=1)."""
        x_d, y_d = checks.charbonnier_loss(x, y)
        n = x.numel()
        grad = empty_output(x) if compute_grad else x.new_empty((0,))
        programs = triton.cdiv(n, BLOCK)
        partials = torch.empty(programs, dtype=accumulation_dtype(x.dtype), device=x.device)
        if n:
            eps2_hi, eps2_lo = split_f32(float(eps) * float(eps))
            charbonnier_kernel[(programs,)](
                x_d, y_d, grad, partials, n, eps2_hi, eps2_lo, None, 0.0, 0.0, None, None,
                BLOCK=BLOCK, WRITE_GRAD=compute_grad, CLAMP=False, ADDEND=False, GY_LOAD=False,
                GY_STORE=False, num_warps=NUM_WARPS)
        return mean_of_partials(partials, n, x.dtype), grad

else:
    _charbonnier_triton = None

register_cuda("charbonnier_loss", "charbonnier_loss", default="triton", triton=_charbonnier_triton)


register_pair_loss_autograd(_OP)


def charbonnier_loss(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt((x - y)^2 + eps^2)) as a 0-dim tensor of x's dtype, in one pass over x and y.

    x and y must share shape, dtype and device (no broadcasting or promotion: see
    mprnet_kernels.nn.CharbonnierLoss for mixed dtypes). When grad is enabled and either input
    requires grad, the same pass also writes the gradient that backward scales.
    """
    return torch.ops.mprnet.charbonnier_loss(x, y, eps, wants_grad(x, y))[0]
