"""mprnet::mprnet_loss (MPRNetLoss) over the model's three stage outputs: ours vs the eager
reference vs torch.compile of it, forward alone and forward+backward, for each preset's recipe
(deblur and derain: Charbonnier + 0.05 edge; denoise: Charbonnier alone on clamped outputs), at
the stage-output shape the model produces (bench/ops/_common.py).

The stage outputs require grad, the target does not (training). Bytes the fused op must move:
forward reads the 3 outputs and the target once and writes 3 gradients (7 passes; 4 when no
gradient is wanted); backward reads the 3 gradients and writes 3 (6 passes): 13 passes of one
stage output in all. The eager reference makes about 30 passes per stage each way for the edge
term alone. Compiled without inductor's layout optimization (see bench_edge_loss.py).

    python -m pytest bench/ops/bench_mprnet_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_mprnet_loss_forward, bench_mprnet_loss_forward_backward = op_benchmarks("mprnet_loss")
