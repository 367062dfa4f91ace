"""mprnet::ca_tail forward+backward: ours (the C++ CPU kernel; on CUDA each backend) vs the
eager reference tail vs torch.compile of it.

The reference tail is what a CAB does after its body: ``x * CALayer gate + r`` with the gate
from adaptive_avg_pool2d, 1x1 conv, ReLU, 1x1 conv, sigmoid (no biases, as the presets).
Bytes the fused op must move (OPS.md section 1): forward reads x (pool), then x and r, and
writes out (4 passes); backward reads g and x (reduction), then g, and writes dx (4 passes;
dr = g is free): 8 passes of x's size in all. Eager makes about 6 + 10.

    python -m pytest bench/ops/bench_ca_tail.py --benchmark-only
"""

import pytest
import torch
import torch.nn.functional as F

from _common import check_output, forward_backward_step, lazily_compiled, skip_missing_backend
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.ops import _backend, ca_tail


def reference(x, r, w1, w2):
    gate = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(F.adaptive_avg_pool2d(x, 1), w1)), w2))
    return x * gate + r


def ours(x, r, w1, w2):
    return ca_tail(x, r, w1, None, w2, None)


# "ours" is the CPU kernel; "triton" and "cuda" are ours on CUDA tensors with that backend.
IMPLS = {"ours": ours, "triton": ours, "cuda": ours, "eager": reference, "compile": lazily_compiled(reference)}


def shapes_for(device):
    # CPU: the target. GPU: a batch of 16 256x256 patches at the preset widths
    # (derain 40, denoise 80, deblur 96) and deblur's widest U-Net level (96 + 2 * 48 = 192,
    # at 64x64).
    if device.type == "cpu":
        return [(4, 96, 256, 256)]
    return [(16, 40, 256, 256), (16, 80, 256, 256), (16, 96, 256, 256), (16, 192, 64, 64)]


def _cases():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        dtypes = [torch.float32] if device == "cpu" else [torch.bfloat16]
        for shape in shapes_for(torch.device(device)):
            for dtype in dtypes:
                for layout in ("contiguous", "channels_last"):
                    for impl in (("ours",) if device == "cpu" else ("triton", "cuda")) + ("eager", "compile"):
                        yield pytest.param(device, shape, dtype, layout, impl,
                                           id=f"{device}-{'x'.join(map(str, shape))}-{str(dtype)[6:]}-{layout}-{impl}")


@pytest.mark.parametrize("device_name, shape, dtype, layout, impl", list(_cases()))
def bench_ca_tail_forward_backward(benchmark, device_name, shape, dtype, layout, impl):
    device = torch.device(device_name)
    skip_missing_backend("ca_tail", impl)
    n, c, h, w = shape
    g = torch.Generator(device=device).manual_seed(0)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x, r, grad = (torch.randn(shape, device=device, dtype=dtype, generator=g).contiguous(memory_format=fmt)
                  for _ in range(3))
    w1 = (torch.randn(c // 4, c, 1, 1, device=device, generator=g) * (2 / c ** 0.5)).to(dtype)
    w2 = (torch.randn(c, c // 4, 1, 1, device=device, generator=g) * (2 / (c // 4) ** 0.5)).to(dtype)
    leaves = [t.requires_grad_() for t in (x, r, w1, w2)]
    fn = IMPLS[impl]
    with _backend.using_cuda_backend("ca_tail", impl if impl in _backend.BACKENDS else None):
        check_output(fn, reference, leaves)
        run_benchmark(benchmark, forward_backward_step(fn, leaves, leaves, grad), device,
                      bytes_moved=8 * tensor_bytes(x), op="ca_tail", impl=impl, dtype=str(dtype),
                      shape=list(shape), layout=layout)
