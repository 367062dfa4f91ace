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
from _common import check_loss, dtypes, forward_backward_step, lazily_compiled, skip_cpu_half, stage_output_shape
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.reference import MPRNetLoss as Reference

STAGES = 3
RECIPES = {"deblur": dict(edge_weight=0.05), "denoise": dict(edge_weight=0.0, clamp=True)}

# Layout optimization off: with it, inductor makes the edge term's convolutions channels_last
# and CPU replication_pad2d_backward then breaks its stride assert (see bench_edge_loss.py).
# Checked against float64 before timing like the others.
_compiled = {recipe: lazily_compiled(Reference(**kwargs), options={"layout_optimization": False})
             for recipe, kwargs in RECIPES.items()}


def impl_fn(impl, recipe):
    if impl == "ours":
        return mprnet_kernels.MPRNetLoss(**RECIPES[recipe])
    if impl == "eager":
        return Reference(**RECIPES[recipe])
    return _compiled[recipe]


@pytest.mark.parametrize("impl", ["ours", "eager", "compile"])
@pytest.mark.parametrize("recipe", list(RECIPES))
@dtypes
def bench_mprnet_loss_forward_backward(benchmark, device, dtype, recipe, impl):
    skip_cpu_half(device, dtype)
    shape = stage_output_shape(device)
    g = torch.Generator(device=device).manual_seed(0)
    # Outputs spill a little past [0, 1] so that the denoising recipe's clamp cuts some.
    outs = [(torch.rand(shape, device=device, dtype=dtype, generator=g) * 1.2 - 0.1).requires_grad_()
            for _ in range(STAGES)]
    y = torch.rand(shape, device=device, dtype=dtype, generator=g)
    fn = impl_fn(impl, recipe)
    check_loss(fn, Reference(**RECIPES[recipe]), outs, y)
    run_benchmark(benchmark, forward_backward_step(fn, (outs, y), outs), device, bytes_moved=(2 * STAGES + 1 + 2 * STAGES) * tensor_bytes(y),
                  op="mprnet_loss", recipe=recipe, impl=impl, dtype=str(dtype), shape=[STAGES, *shape])
