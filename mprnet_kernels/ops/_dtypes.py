"""The accumulation dtype of csrc/common/dtypes.h, under the same name: what the fake functions
give ca_tail's saved vectors, what the Triton launchers accumulate in, and the precision of the
loss ops' backward scale."""

import torch


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for float32, float16 and bfloat16 (docs/OPS.md "Numerics")."""
    return torch.float64 if dtype == torch.float64 else torch.float32
