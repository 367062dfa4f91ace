"""mprnet::mprnet_loss (MPRNetLoss) over the model's three stage outputs: ours vs the eager
reference vs torch.compile of it, forward alone and forward+backward, for each preset's recipe
(deblur and derain: Charbonnier + 0.05 edge; denoise: Charbonnier alone on clamped outputs), at
the stage-output shape the model produces (bench/ops/_common.py).

The stage outputs require grad, the target does not (training). Bytes moved: the pass counts of its
registry entry (docs/OPS.md). The eager reference makes about 30 passes per stage each way for the
edge term alone. Compiled without inductor's layout optimization (see bench_edge_loss.py).

    python -m pytest bench/ops/bench_mprnet_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_mprnet_loss_forward, bench_mprnet_loss_forward_backward = op_benchmarks("mprnet_loss")
