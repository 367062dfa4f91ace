"""mprnet::sam_gate forward+backward: ours vs the eager reference vs torch.compile of it.

Bytes the fused op must move: forward reads x1, z, x and writes out (4 passes); backward reads
g, x1, z and writes grad_x1, grad_z (5 passes; grad_x = g is free): 9 passes in all.
"""

import pytest
import torch

from _common import check_output, dtypes, forward_backward_step, lazily_compiled, skip_missing_backend
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.ops import _backend, sam_gate


def reference(x1, z, x):
    return x1 * torch.sigmoid(z) + x


# "ours" is the CPU kernel; "triton" and "cuda" are ours on CUDA tensors with that backend.
IMPLS = {"ours": sam_gate, "triton": sam_gate, "cuda": sam_gate, "eager": reference,
         "compile": lazily_compiled(reference)}


def shape_for(device):
    # The deblur preset's SAM sees n_feat=96 channels at full resolution.
    return (4, 96, 256, 256) if device.type == "cpu" else (16, 96, 256, 256)


@pytest.mark.parametrize("impl", list(IMPLS))
@dtypes
def bench_sam_gate_forward_backward(benchmark, device, dtype, impl):
    if impl in ("ours", "triton", "cuda") and (impl == "ours") != (device.type == "cpu"):
        pytest.skip("the CPU has one kernel (ours); CUDA has two backends (triton, cuda)")
    skip_missing_backend("sam_gate", impl)
    shape = shape_for(device)
    x1, z, x = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(shape, device=device, dtype=dtype)
    fn = IMPLS[impl]
    with _backend.using_cuda_backend("sam_gate", impl if impl in _backend.BACKENDS else None):
        check_output(fn, reference, (x1, z, x))
        run_benchmark(benchmark, forward_backward_step(fn, (x1, z, x), (x1, z, x), grad), device,
                      bytes_moved=9 * tensor_bytes(x1), op="sam_gate", impl=impl, dtype=str(dtype), shape=list(shape))
