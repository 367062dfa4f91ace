"""Launch helpers shared by the Triton modules: grid and tile arithmetic, float64 scalars passed
as float32 pairs, and the deterministic finish of a partial-sum reduction (docs/OPS.md "Numerics").
Imports no triton.

The Triton loss kernels write one partial sum per program into a buffer whose size depends only
on the input size; the buffer is then summed by torch.sum, whose reduction order is fixed for a
fixed size and device. There are no float atomics, so the loss has the same bits run after run.
"""

import math
import struct

import torch


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for b > 0."""
    return -(-a // b)


def next_pow2(v: int) -> int:
    """The smallest power of two >= v (v >= 1)."""
    return 1 << max(0, (int(v) - 1).bit_length())


def prev_pow2(v: int) -> int:
    """The largest power of two <= v (v >= 1)."""
    return 1 << (int(v).bit_length() - 1)


def split_f32(value: float) -> tuple:
    """(hi, lo), two float32-representable floats with hi + lo == value to about 2^-48.

    Triton passes Python floats to kernels as float32, which would round constants such as eps^2
    or an edge weight to 2^-24 relative: too coarse for float64 kernels (1e-12 tolerance). A
    float64 kernel rebuilds value as hi.to(float64) + lo.to(float64); a float32 one uses hi + lo.
    """
    def to_f32(v):
        if not math.isfinite(v):
            return v
        try:
            return struct.unpack("f", struct.pack("f", v))[0]
        except OverflowError:  # beyond float32's range: its value in float32 is infinite
            return math.copysign(math.inf, v)

    hi = to_f32(value)
    lo = to_f32(value - hi) if math.isfinite(hi) else 0.0
    return hi, lo


def mean_of_partials(partials: torch.Tensor, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """sum(partials) / numel as a 0-dim tensor of `dtype`: NaN when numel is 0, as torch.mean."""
    return (partials.sum() / numel if numel else partials.new_full((), math.nan)).to(dtype)
