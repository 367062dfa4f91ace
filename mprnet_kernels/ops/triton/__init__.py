"""The Triton kernels, one module per op: its @triton.jit kernels and their launchers (one per
schema, named after it), which the op's own file, mprnet_kernels/ops/<op>.py, registers as its
Triton CUDA backend. The launchers run on any device Triton runs on (CUDA; the CPU under
TRITON_INTERPRET=1) and call the op's C++ checks first (mprnet_kernels/ops/_checks.py).

The op modules import triton, so the op files import them only when _backend.HAS_TRITON; this
package and utils (the launch helpers they share) import without it.
"""
