"""The Triton kernels of mprnet::sam_gate (mprnet_kernels/ops/sam_gate.py) and their launchers,
one per schema: out = x1 * sigmoid(z) + x over flat, dense buffers in x1's output layout."""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._layout import empty_output
from .utils import cdiv


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _sam_gate_kernel(x1_ptr, z_ptr, x_ptr, out_ptr, n, F64: tl.constexpr, BLOCK: tl.constexpr):
    """out = x1 * sigmoid(z) + x over flat, dense, same-layout buffers; float32 math for
    half types (float64 for float64); 64-bit offsets."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc_ty = tl.float64 if F64 else tl.float32
    x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    tl.store(out_ptr + offs, (x1 * _sigmoid(z) + x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _sam_gate_backward_kernel(g_ptr, x1_ptr, z_ptr, dx1_ptr, dz_ptr, n, F64: tl.constexpr,
                              BLOCK: tl.constexpr):
    """dx1 = g * s, dz = g * x1 * s * (1 - s) with s = sigmoid(z)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc_ty = tl.float64 if F64 else tl.float32
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    x1 = tl.load(x1_ptr + offs, mask=mask, other=0.0).to(acc_ty)
    s = _sigmoid(tl.load(z_ptr + offs, mask=mask, other=0.0).to(acc_ty))
    gs = g * s
    tl.store(dx1_ptr + offs, gs.to(dx1_ptr.dtype.element_ty), mask=mask)
    tl.store(dz_ptr + offs, (gs * x1 * (1.0 - s)).to(dz_ptr.dtype.element_ty), mask=mask)


_BLOCK = 2048


def sam_gate(x1, z, x):
    x1_d, z_d, x_d = checks.sam_gate(x1, z, x)
    out = empty_output(x1)
    n = x1.numel()
    if n:
        _sam_gate_kernel[(cdiv(n, _BLOCK),)](x1_d, z_d, x_d, out, n,
                                                     F64=x1.dtype == torch.float64, BLOCK=_BLOCK,
                                                     num_warps=8)
    return out


def sam_gate_backward(grad, x1, z):
    x1_d, grad_d, z_d = checks.sam_gate_backward(grad, x1, z)
    grad_x1, grad_z = empty_output(x1), empty_output(x1)
    n = x1.numel()
    if n:
        _sam_gate_backward_kernel[(cdiv(n, _BLOCK),)](
            grad_d, x1_d, z_d, grad_x1, grad_z, n, F64=x1.dtype == torch.float64,
            BLOCK=_BLOCK, num_warps=8)
    return grad_x1, grad_z
