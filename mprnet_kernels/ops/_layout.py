"""The output layout rule of csrc/common/layout.h, for the fake functions and the Triton
launchers.

Fake tensors must carry the strides the real kernels produce, or a compiled graph would
disagree with eager execution: channels_last when the reference input is 4-D and dense in
channels_last order (and not also plainly contiguous), contiguous otherwise. The C++ rule is the
one the kernels apply; this statement of it stays in Python because the fake functions must
run on FakeTensors with symbolic sizes (torch.compile(dynamic=True)), which C++'s sizes() cannot
take. torch.library.opcheck, run for every op in tests/ops, compares the fake strides with the
kernels', so the two cannot drift apart unnoticed. The Triton launchers allocate with it too,
so that their outputs have the fake's strides.
"""

from typing import Optional

import torch


def output_memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_output(t: torch.Tensor, dtype: Optional[torch.dtype] = None, shape=None) -> torch.Tensor:
    """An uninitialised output on t's device in t's output layout (as the kernels allocate), of
    t's shape and dtype unless `shape` or `dtype` say otherwise."""
    return torch.empty(t.shape if shape is None else shape, dtype=t.dtype if dtype is None else dtype,
                       device=t.device, memory_format=output_memory_format(t))
