"""Comparison helpers and tolerances, shared by the tests and `mprnet-kernels verify`.

Errors are ||out - ref|| / ||ref|| against a float64 reference (docs/OPS.md, "Numerics").
"""

import torch

# Relative tolerance of one op against its float64 reference, by the dtype it ran in.
OP_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.bfloat16: 1e-2,
    torch.float16: 1e-2,
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64. NaN or Inf in either gives inf, so it never passes a
    tolerance; tests of NaN/Inf propagation compare the non-finite masks instead."""
    a = a.detach().to(device="cpu", dtype=torch.float64)
    b = b.detach().to(device="cpu", dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_err: shapes differ, {list(a.shape)} vs {list(b.shape)}")
    diff = torch.linalg.vector_norm(a - b)
    ref = torch.linalg.vector_norm(b)
    if not torch.isfinite(diff) or not torch.isfinite(ref):
        return float("inf")
    if ref == 0:
        return float(diff)
    return float(diff / ref)


def layouts(t: torch.Tensor) -> dict:
    """The same 4-D values in three memory layouts: contiguous, channels_last, and a strided
    view (every other element of a twice-as-wide buffer), for layout-independence checks."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    strided = wide[..., ::2]
    strided.copy_(t)
    return {
        "contiguous": t.contiguous(),
        "channels_last": t.contiguous(memory_format=torch.channels_last),
        "strided": strided,
    }
