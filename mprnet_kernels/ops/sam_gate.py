"""mprnet::sam_gate, the gate of MPRNet's supervised attention module (docs/OPS.md section 2).

    out = x1 * sigmoid(z) + x        grad_x1 = g * s,  grad_z = g * x1 * s * (1 - s),  grad_x = g

Schema and CPU kernel: csrc/ops/sam_gate.cpp and csrc/ops/cpu/; CUDA C++: csrc/ops/cuda/.
Triton: triton/sam_gate.py. This file adds the fake functions, autograd and the CUDA dispatch
(``set_cuda_backend("sam_gate", "triton" | "cuda")``).
"""

import torch

from ._autograd import refuse_double_backward
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


if HAS_TRITON:  # the Triton module imports triton
    from .triton import sam_gate as _triton
else:
    _triton = None

# Triton by default until the committed GPU benchmark measures the two (see _backend.py).
register_cuda("sam_gate", "sam_gate", default="triton", triton=_triton and _triton.sam_gate,
              cuda=cuda_cpp_kernel("sam_gate"))
register_cuda("sam_gate", "sam_gate_backward", default="triton", triton=_triton and _triton.sam_gate_backward,
              cuda=cuda_cpp_kernel("sam_gate_backward"))


def _setup_context(ctx, inputs, output):
    x1, z, _ = inputs
    ctx.save_for_backward(x1, z)


def _backward(ctx, grad):
    refuse_double_backward(_OP)
    x1, z = ctx.saved_tensors
    grad_x1 = grad_z = None
    if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
        grad_x1, grad_z = torch.ops.mprnet.sam_gate_backward(grad, x1, z)
    return grad_x1, grad_z, grad


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)


def sam_gate(x1: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x1 * sigmoid(z) + x in one pass. All three must share shape, dtype and device."""
    return torch.ops.mprnet.sam_gate(x1, z, x)
