"""mprnet::mprnet_loss (MPRNetLoss) forward+backward over three stage outputs: ours vs the eager
reference vs torch.compile of it, for the deblurring/deraining recipe (Charbonnier + 0.05 edge)
and the denoising one (Charbonnier alone on clamped outputs).

The stage outputs require grad, the target does not (training). Bytes the fused op must move:
forward reads the 3 outputs and the target once and writes 3 gradients (7 passes); backward
reads the 3 gradients and writes 3 (6 passes): 13 passes of one stage output in all. The eager
reference makes about 30 passes per stage each way for the edge term alone.

    python -m pytest bench/ops/bench_mprnet_loss.py --benchmark-only
"""

import pytest
import torch

import mprnet_kernels
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.reference import MPRNetLoss as Reference
from mprnet_kernels.testing import rel_err

STAGES = 3
RECIPES = {"deblur": dict(edge_weight=0.05), "denoise": dict(edge_weight=0.0, clamp=True)}

_compiled = {}


def compiled(recipe):
    if recipe not in _compiled:
        # Layout optimization off: with it, inductor makes the edge term's convolutions
        # channels_last and CPU replication_pad2d_backward then breaks its stride assert (see
        # bench_edge_loss.py). Checked against float64 before timing like the others.
        _compiled[recipe] = torch.compile(Reference(**RECIPES[recipe]), options={"layout_optimization": False})
    return _compiled[recipe]


def impl_fn(impl, recipe):
    if impl == "ours":
        return mprnet_kernels.MPRNetLoss(**RECIPES[recipe])
    if impl == "eager":
        return Reference(**RECIPES[recipe])
    return compiled(recipe)


def shape_for(device):
    # One stage output of a deblur batch: 3 channels of 256x256 patches.
    return (8, 3, 256, 256) if device.type == "cpu" else (16, 3, 256, 256)


@pytest.mark.parametrize("impl", ["ours", "eager", "compile"])
@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def bench_mprnet_loss_forward_backward(benchmark, device, dtype, recipe, impl):
    if device.type == "cpu" and dtype != torch.float32:
        pytest.skip("CPU is measured in float32 (the issue's target); bf16 runs on the GPU")
    shape = shape_for(device)
    g = torch.Generator(device=device).manual_seed(0)
    # Outputs spill a little past [0, 1] so that the denoising recipe's clamp cuts some.
    outs = [(torch.rand(shape, device=device, dtype=dtype, generator=g) * 1.2 - 0.1).requires_grad_()
            for _ in range(STAGES)]
    y = torch.rand(shape, device=device, dtype=dtype, generator=g)
    fn = impl_fn(impl, recipe)

    # Check before timing: a fast wrong answer must fail the run.
    grads = torch.autograd.grad(fn(outs, y), outs)
    outs64 = [o.detach().double().requires_grad_() for o in outs]
    loss64 = Reference(**RECIPES[recipe])(outs64, y.double())
    grads64 = torch.autograd.grad(loss64, outs64)
    assert max(rel_err(a, b) for a, b in zip(grads, grads64)) < 1e-2
    with torch.no_grad():
        assert rel_err(fn(outs, y), loss64) < 1e-2

    def step():
        torch.autograd.grad(fn(outs, y), outs)

    run_benchmark(benchmark, step, device, bytes_moved=(2 * STAGES + 1 + 2 * STAGES) * tensor_bytes(y),
                  op="mprnet_loss", recipe=recipe, impl=impl, dtype=str(dtype), shape=[STAGES, *shape])
