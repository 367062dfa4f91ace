"""mprnet::local_ca_tail forward alone and forward+backward: ours (the C++ CPU kernel; on CUDA the
Triton kernels) vs the eager reference (reference.local_ca_tail: integral-image means, 1x1
convs, replicated gate) vs torch.compile of it, at the CAB input shapes each preset's model
produces with the window the registry gives them (3/4 of the map each way: TLC on an image twice
the train size), bench/ops/_common.py. Bytes moved: the pass counts of its registry entry
(docs/OPS.md section 7). Layouts: channels_last at every shape, contiguous at the heaviest.

    python -m pytest bench/ops/bench_local_ca_tail.py --benchmark-only [-k "cpu and deblur and not compile"]
"""

from _common import op_benchmarks

CASES, bench_local_ca_tail_forward, bench_local_ca_tail_forward_backward = op_benchmarks(
    "local_ca_tail", ("channels_last", "contiguous"))
