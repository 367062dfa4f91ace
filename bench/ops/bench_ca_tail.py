"""mprnet::ca_tail forward alone and forward+backward: ours (the C++ CPU kernel; on CUDA each
backend) vs the eager reference tail vs torch.compile of it, at the CAB input shapes each
preset's model produces (bench/ops/_common.py).

The reference tail is what a CAB does after its body: ``x * CALayer gate + r`` with the gate
from adaptive_avg_pool2d, 1x1 conv, ReLU, 1x1 conv, sigmoid (no biases, as the presets).
Bytes the fused op must move (OPS.md section 1): forward reads x (pool), then x and r, and
writes out (4 passes); backward reads g and x (reduction), then g, and writes dx (4 passes;
dr = g is free): 8 passes of x's size in all. Eager makes about 6 + 10.
Layouts: channels_last (what the fast model feeds it) at every shape, contiguous at the heaviest.

    python -m pytest bench/ops/bench_ca_tail.py --benchmark-only [-k "cpu and deblur and not compile"]
"""

from _common import op_benchmarks

CASES, bench_ca_tail_forward, bench_ca_tail_forward_backward = op_benchmarks("ca_tail", ("channels_last", "contiguous"))
