"""mprnet::charbonnier_loss of one stage output against the target: ours vs the eager reference
vs torch.compile of it, forward alone (no gradient wanted: evaluation) and forward+backward
(training: the output requires grad, the target not), at the stage-output shape the model
produces (bench/ops/_common.py; the same for every preset).

Bytes the fused op must move: forward reads x and y and, when a gradient is wanted, writes the
per-element gradient in the same pass (3 passes; 2 without); backward reads it and writes dL/dx
(2 passes): 5 passes in all. The eager reference makes about 5 passes forward and 6 backward.

    python -m pytest bench/ops/bench_charbonnier_loss.py --benchmark-only
"""

import pytest

from _common import op_params, run_op

CASES = op_params("charbonnier_loss")


@pytest.mark.parametrize("device_name, preset, shape, dtype, layout, impl", CASES)
def bench_charbonnier_loss_forward(benchmark, device_name, preset, shape, dtype, layout, impl):
    run_op(benchmark, "charbonnier_loss", "forward", device_name, preset, shape, dtype, layout, impl)


@pytest.mark.parametrize("device_name, preset, shape, dtype, layout, impl", CASES)
def bench_charbonnier_loss_forward_backward(benchmark, device_name, preset, shape, dtype, layout, impl):
    run_op(benchmark, "charbonnier_loss", "forward+backward", device_name, preset, shape, dtype, layout, impl)
