"""mprnet::ca_tail forward alone and forward+backward: ours (the C++ CPU kernel; on CUDA each
backend) vs the eager reference tail vs torch.compile of it, at the CAB input shapes each
preset's model produces (bench/ops/_common.py).

The reference tail is what a CAB does after its body: ``x * CALayer gate + r`` with the gate from
adaptive_avg_pool2d, 1x1 conv, ReLU, 1x1 conv, sigmoid (no biases, as the presets). Bytes moved:
the pass counts of its registry entry (docs/OPS.md).
Layouts: channels_last (what the fast model feeds it) at every shape, contiguous at the heaviest.

    python -m pytest bench/ops/bench_ca_tail.py --benchmark-only [-k "cpu and deblur and not compile"]
"""

from _common import op_benchmarks

CASES, bench_ca_tail_forward, bench_ca_tail_forward_backward = op_benchmarks("ca_tail", ("channels_last", "contiguous"))
