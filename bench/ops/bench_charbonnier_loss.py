"""mprnet::charbonnier_loss forward+backward over MPRNet's three stage outputs: ours vs the eager
reference vs torch.compile of it.

The loss is sum_s charbonnier(out_s, y), with the stage outputs requiring grad and the target
not (training). Bytes the fused op must move per stage: forward reads out_s and y and writes
the per-element gradient in the same pass (3 passes); backward reads it and writes dL/dout_s
(2 passes): 5 passes per stage, 15 in all. The eager reference makes about 5 passes forward
and 6 backward per stage.

    python -m pytest bench/ops/bench_charbonnier_loss.py --benchmark-only
"""

import pytest
import torch

from _common import check_loss, dtypes, forward_backward_step, lazily_compiled, skip_cpu_half, stage_output_shape
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.ops import charbonnier_loss
from mprnet_kernels.reference.losses import charbonnier_loss as reference_single

STAGES = 3


def reference(outs, y):
    return sum(reference_single(o, y) for o in outs)


def ours(outs, y):
    return sum(charbonnier_loss(o, y) for o in outs)


IMPLS = {"ours": ours, "eager": reference, "compile": lazily_compiled(reference)}


@pytest.mark.parametrize("impl", list(IMPLS))
@dtypes
def bench_charbonnier_loss_forward_backward(benchmark, device, dtype, impl):
    skip_cpu_half(device, dtype)
    shape = stage_output_shape(device)
    g = torch.Generator(device=device).manual_seed(0)
    outs = [torch.rand(shape, device=device, dtype=dtype, generator=g).requires_grad_() for _ in range(STAGES)]
    y = torch.rand(shape, device=device, dtype=dtype, generator=g)
    fn = IMPLS[impl]
    check_loss(fn, reference, outs, y)
    run_benchmark(benchmark, forward_backward_step(fn, (outs, y), outs), device, bytes_moved=5 * STAGES * tensor_bytes(y), op="charbonnier_loss",
                  impl=impl, dtype=str(dtype), shape=[STAGES, *shape])
