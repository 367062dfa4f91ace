"""mprnet::edge_loss forward alone and forward+backward: ours vs the eager reference vs
torch.compile of it, at the stage-output shape the model produces (bench/ops/_common.py).

The prediction x requires grad, the target y does not (training). Bytes moved: the pass counts of
its registry entry (docs/OPS.md). The eager reference makes about 30 passes each way (two
Laplacians of two pads, two depthwise convolutions, a zeros_like, a strided copy and a subtraction,
then the Charbonnier terms).

torch.compile of the reference runs with inductor's layout optimization off: with it, the
convolutions turn channels_last and on CPU the eager replication_pad2d_backward then returns
strides its meta function does not predict, and the generated code fails its stride assert (a
PyTorch bug of the kind of pytorch/pytorch#171622). Checked against float64 before timing.

    python -m pytest bench/ops/bench_edge_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_edge_loss_forward, bench_edge_loss_forward_backward = op_benchmarks("edge_loss")
