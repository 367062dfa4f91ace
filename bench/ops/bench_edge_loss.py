"""mprnet::edge_loss forward+backward: ours vs the eager reference vs torch.compile of it.

The prediction x requires grad, the target y does not (training). Bytes the fused op must move:
forward reads x and y and writes the gradient in the same pass (3 passes); backward reads it
and writes dL/dx (2 passes): 5 passes of x in all. The eager reference makes about 30 passes
each way (two Laplacians of two pads, two depthwise convolutions, a zeros_like, a strided copy
and a subtraction, then the Charbonnier terms).

    python -m pytest bench/ops/bench_edge_loss.py --benchmark-only
"""

import pytest
import torch

from _common import check_loss, dtypes, forward_backward_step, lazily_compiled, skip_cpu_half, stage_output_shape
from harness import run_benchmark, tensor_bytes
from mprnet_kernels.ops import edge_loss
from mprnet_kernels.reference.losses import edge_loss as reference

# Inductor's layout optimization turns the convolutions channels_last, and on CPU the eager
# replication_pad2d_backward then returns channels_last strides its meta function does not
# predict: the generated code fails its stride assert, or with the asserts off reads the buffer
# wrongly (a PyTorch bug of the kind of pytorch/pytorch#171622). With the layout optimization
# off the compiled reference is correct (checked before timing).
IMPLS = {"ours": edge_loss, "eager": reference,
         "compile": lazily_compiled(reference, options={"layout_optimization": False})}


def on_first(fn):
    """fn(x, y) as a loss of the list [x] and y, the form check_loss takes."""
    return lambda xs, y: fn(xs[0], y)


@pytest.mark.parametrize("impl", list(IMPLS))
@dtypes
def bench_edge_loss_forward_backward(benchmark, device, dtype, impl):
    skip_cpu_half(device, dtype)
    shape = stage_output_shape(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, device=device, dtype=dtype, generator=g).requires_grad_()
    y = torch.randn(shape, device=device, dtype=dtype, generator=g)
    fn = IMPLS[impl]
    check_loss(on_first(fn), on_first(reference), [x], y)
    run_benchmark(benchmark, forward_backward_step(fn, (x, y), (x,)), device, bytes_moved=5 * tensor_bytes(x), op="edge_loss", impl=impl,
                  dtype=str(dtype), shape=list(shape))
