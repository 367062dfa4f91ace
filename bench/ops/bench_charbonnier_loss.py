"""mprnet::charbonnier_loss of one stage output against the target: ours vs the eager reference
vs torch.compile of it, forward alone (no gradient wanted: evaluation) and forward+backward
(training: the output requires grad, the target not), at the stage-output shape the model
produces (bench/ops/_common.py; the same for every preset).

Bytes the fused op must move: forward reads x and y and, when a gradient is wanted, writes the
per-element gradient in the same pass (3 passes; 2 without); backward reads it and writes dL/dx
(2 passes): 5 passes in all. The eager reference makes about 5 passes forward and 6 backward.

    python -m pytest bench/ops/bench_charbonnier_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_charbonnier_loss_forward, bench_charbonnier_loss_forward_backward = op_benchmarks("charbonnier_loss")
