"""mprnet::sam_gate, the gate of MPRNet's supervised attention module (OPS.md section 2).

    out = x1 * sigmoid(z) + x        grad_x1 = g * s,  grad_z = g * x1 * s * (1 - s),  grad_x = g

Schema and CPU kernel: csrc/ops/sam_gate.cpp and csrc/ops/cpu/; CUDA C++: csrc/ops/cuda/.
This file adds what Python owns: the fake function, autograd, the Triton kernels and the CUDA
dispatch (``set_cuda_backend("sam_gate", "triton" | "cuda")``).
"""

import torch

from ._backend import HAS_TRITON, cuda_cpp_kernel, register_cuda
from ._checks import check_real_inputs, checks
from ._layout import empty_output

_OP = "mprnet::sam_gate"


@torch.library.register_fake(_OP)
def _fake(x1, z, x):
    check_real_inputs(checks.sam_gate, x1, z, x)
    return empty_output(x1)


@torch.library.register_fake("mprnet::sam_gate_backward")
def _fake_backward(grad, x1, z):
    check_real_inputs(checks.sam_gate_backward, grad, x1, z)
    return empty_output(x1), empty_output(x1)


if HAS_TRITON:
    import triton
    import triton.language as tl

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

    def _sam_gate_triton(x1, z, x):
        """The Triton kernel on any device Triton runs on (CUDA; CPU under TRITON_INTERPRET=1)."""
        x1_d, z_d, x_d = checks.sam_gate(x1, z, x)
        out = empty_output(x1)
        n = x1.numel()
        if n:
            _sam_gate_kernel[(triton.cdiv(n, _BLOCK),)](x1_d, z_d, x_d, out, n,
                                                         F64=x1.dtype == torch.float64, BLOCK=_BLOCK,
                                                         num_warps=8)
        return out

    def _sam_gate_backward_triton(grad, x1, z):
        x1_d, grad_d, z_d = checks.sam_gate_backward(grad, x1, z)
        grad_x1, grad_z = empty_output(x1), empty_output(x1)
        n = x1.numel()
        if n:
            _sam_gate_backward_kernel[(triton.cdiv(n, _BLOCK),)](
                grad_d, x1_d, z_d, grad_x1, grad_z, n, F64=x1.dtype == torch.float64,
                BLOCK=_BLOCK, num_warps=8)
        return grad_x1, grad_z

else:
    _sam_gate_triton = _sam_gate_backward_triton = None

# Triton by default until the committed GPU benchmark measures the two (see _backend.py).
register_cuda("sam_gate", "sam_gate", default="triton", triton=_sam_gate_triton,
              cuda=cuda_cpp_kernel("sam_gate"))
register_cuda("sam_gate", "sam_gate_backward", default="triton", triton=_sam_gate_backward_triton,
              cuda=cuda_cpp_kernel("sam_gate_backward"))


def _setup_context(ctx, inputs, output):
    x1, z, _ = inputs
    ctx.save_for_backward(x1, z)


def _backward(ctx, grad):
    x1, z = ctx.saved_tensors
    grad_x1 = grad_z = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_x1, grad_z = torch.ops.mprnet.sam_gate_backward(grad, x1, z)
    return grad_x1, grad_z, grad


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def sam_gate(x1: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x1 * sigmoid(z) + x in one pass. All three must share shape, dtype and device."""
    return torch.ops.mprnet.sam_gate(x1, z, x)
