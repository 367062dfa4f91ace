"""mprnet::charbonnier_loss of one stage output against the target: ours vs the eager reference
vs torch.compile of it, forward alone (no gradient wanted: evaluation) and forward+backward
(training: the output requires grad, the target not), at the stage-output shape the model
produces (bench/ops/_common.py; the same for every preset).

Bytes moved: the pass counts of its registry entry (docs/OPS.md). The eager reference makes about 5
passes forward and 6 backward.

    python -m pytest bench/ops/bench_charbonnier_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_charbonnier_loss_forward, bench_charbonnier_loss_forward_backward = op_benchmarks("charbonnier_loss")
