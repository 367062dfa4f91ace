"""mprnet::sam_gate forward+backward: ours vs the eager reference vs torch.compile of it.

Bytes the fused op must move: forward reads x1, z, x and writes out (4 passes); backward reads
g, x1, z and writes grad_x1, grad_z (5 passes; grad_x = g is free): 9 passes in all.
"""

import pytest
import torch

from harness import run_benchmark, tensor_bytes
from mprnet_kernels.ops import _backend, sam_gate
from mprnet_kernels.testing import rel_err


def reference(x1, z, x):
    return x1 * torch.sigmoid(z) + x


_compiled = {}


def compiled_reference(x1, z, x):
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(reference)
    return _compiled["fn"](x1, z, x)


# "ours" is the CPU kernel; "triton" and "cuda" are ours on CUDA tensors with that backend.
IMPLS = {"ours": sam_gate, "triton": sam_gate, "cuda": sam_gate, "eager": reference, "compile": compiled_reference}


def shape_for(device):
    # The deblur preset's SAM sees n_feat=96 channels at full resolution.
    return (4, 96, 256, 256) if device.type == "cpu" else (16, 96, 256, 256)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def bench_sam_gate_forward_backward(benchmark, device, dtype, impl):
    if impl in ("ours", "triton", "cuda") and (impl == "ours") != (device.type == "cpu"):
        pytest.skip("the CPU has one kernel (ours); CUDA has two backends (triton, cuda)")
    if impl in ("triton", "cuda") and impl not in _backend.available_backends("sam_gate"):
        pytest.skip(f"no {impl} backend for sam_gate in this install")
    shape = shape_for(device)
    x1, z, x = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device=device, dtype=dtype)
    fn = IMPLS[impl]
    previous = _backend._chosen.get("sam_gate")
    if impl in ("triton", "cuda"):
        _backend.set_cuda_backend("sam_gate", impl)
    try:
        # Check before timing: a fast wrong answer must fail the run.
        with torch.no_grad():
            assert rel_err(fn(x1, z, x), reference(x1.double(), z.double(), x.double())) < 1e-2

        def step():
            out = fn(x1, z, x)
            torch.autograd.grad(out, (x1, z, x), grad)

        run_benchmark(benchmark, step, device, bytes_moved=9 * tensor_bytes(x1), op="sam_gate", impl=impl,
                      dtype=str(dtype), shape=list(shape))
    finally:
        if previous is None:
            _backend._chosen.pop("sam_gate", None)
        else:
            _backend._chosen["sam_gate"] = previous
