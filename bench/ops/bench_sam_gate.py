"""mprnet::sam_gate (SAM's ``x1 * sigmoid(z) + x``): ours (the C++ CPU kernel; on CUDA each
backend) vs the eager reference vs torch.compile of it, forward alone and forward+backward, at
the SAM feature shapes each preset's model produces (bench/ops/_common.py).

Bytes moved: the pass counts of its registry entry (docs/OPS.md).
Layouts: channels_last (what the fast model feeds it) at every shape, contiguous at the heaviest.

    python -m pytest bench/ops/bench_sam_gate.py --benchmark-only [-k "cpu and deblur and not compile"]
"""

from _common import op_benchmarks

CASES, bench_sam_gate_forward, bench_sam_gate_forward_backward = op_benchmarks("sam_gate", ("channels_last", "contiguous"))
