"""mprnet::upsample2x_add (bilinear x2 of x, align_corners=False, plus y, in one pass): ours (the
C++ CPU kernel; on CUDA the Triton one) vs the eager ``F.interpolate(x, scale_factor=2,
mode="bilinear") + y`` vs torch.compile of it, at the shapes of x (the low-resolution operand)
the fast model's resize-and-adds see for each preset (bench/ops/_common.py).

Bytes moved: the pass counts of its registry entry (docs/OPS.md). Eager writes the resized x and
reads it again forward, and its backward (upsample_bilinear2d_backward) zero-fills grad_x before
scattering into it.
Layouts: channels_last (what the fast model feeds it) at every shape, contiguous at the heaviest.

    python -m pytest bench/ops/bench_upsample2x_add.py --benchmark-only [-k "cpu and deblur and not compile"]
"""

from _common import op_benchmarks

CASES, bench_upsample2x_add_forward, bench_upsample2x_add_forward_backward = op_benchmarks("upsample2x_add", ("channels_last", "contiguous"))
