"""Input checks for the fake (meta) functions, mirroring csrc/common/checks.h.

Under torch.compile the fake function runs instead of the kernel when the graph is traced, so
it must reject the same inputs with the same messages; eager calls are checked in C++.
"""

import torch

FLOATING = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def check_floating(op: str, name: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOATING:
        raise TypeError(f"{op}: {name} must be float64, float32, float16 or bfloat16, got {t.dtype}")


def check_like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    check_floating(op, name, t)
    if t.shape != ref.shape:
        raise ValueError(f"{op}: {name} must have shape {list(ref.shape)} like {ref_name}, got {list(t.shape)}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} must have dtype {ref.dtype} like {ref_name}, got {t.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} must be on {ref.device} like {ref_name}, got {t.device}")


def check_all_like(op: str, named: dict) -> torch.Tensor:
    """Checks every tensor of `named` against the first one; returns the first."""
    (ref_name, ref), *rest = named.items()
    check_floating(op, ref_name, ref)
    for name, t in rest:
        check_like(op, name, t, ref_name, ref)
    return ref
