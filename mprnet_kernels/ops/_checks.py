"""The ops' input checks are C++'s: one function per schema in csrc/ops/checks.h, which the CPU
and CUDA C++ kernels call and python/module.cpp binds as `checks` (mprnet_kernels._C.checks).
The Triton launchers call them before launching, so every backend rejects an input with the
same exception and message.

The fake functions compute only what the outputs need (shapes, dtypes, layout). Under
torch.compile they run on FakeTensors, possibly with symbolic sizes, and a bad input is
reported when the graph runs, by the kernel. A fake function is also the op's Meta kernel,
though, and there it receives real tensors (meta tensors, or meta mixed with another device,
which the dispatcher sends to Meta): those it checks like any kernel, with check_real_inputs.
"""

import torch
from torch._subclasses.fake_tensor import is_fake

from .._extension import _C

checks = _C.checks


def _tensors(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _tensors(a)
        elif isinstance(a, torch.Tensor):
            yield a


def check_real_inputs(check, *args) -> None:
    """check(*args), one of `checks`, unless the tensors among args are FakeTensors."""
    if not any(is_fake(t) for t in _tensors(args)):
        check(*args)
