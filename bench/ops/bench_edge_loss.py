"""mprnet::edge_loss forward alone and forward+backward: ours vs the eager reference vs
torch.compile of it, at the stage-output shape the model produces (bench/ops/_common.py).

The prediction x requires grad, the target y does not (training). Bytes the fused op must move:
forward reads x and y and writes the gradient in the same pass (3 passes; 2 when no gradient is
wanted); backward reads it and writes dL/dx (2 passes): 5 passes of x in all. The eager reference
makes about 30 passes each way (two Laplacians of two pads, two depthwise convolutions, a
zeros_like, a strided copy and a subtraction, then the Charbonnier terms).

torch.compile of the reference runs with inductor's layout optimization off: with it, the
convolutions turn channels_last and on CPU the eager replication_pad2d_backward then returns
strides its meta function does not predict, and the generated code fails its stride assert (a
PyTorch bug of the kind of pytorch/pytorch#171622). Checked against float64 before timing.

    python -m pytest bench/ops/bench_edge_loss.py --benchmark-only
"""

from _common import op_benchmarks

CASES, bench_edge_loss_forward, bench_edge_loss_forward_backward = op_benchmarks("edge_loss")
