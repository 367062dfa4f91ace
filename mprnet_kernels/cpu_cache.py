"""A scoped cache of CPU buffers for the fast model's inference (csrc/memory/cpu_buffer_cache.h).

A forward of the fast MPRNet on CPU allocates and frees gigabytes of feature maps; each is
large enough that malloc maps fresh pages for it, which the kernel faults in and zeroes on first
touch: about a quarter of an inference at 256x256 on a 2-core EPYC. Inside ``reuse_cpu_buffers()``
CPU allocations of 64 KiB or more are served from blocks freed earlier in the scope, or in the
last scope, so their pages are touched once. The fast model opens the scope itself around a CPU
forward with gradients off (rewrite ``reuse_cpu_buffers``, on by default).

Memory: when a scope closes, the cache keeps the blocks freed since the last scope closed (about
the forward's working set at that input size, as CUDA's caching allocator keeps its blocks) and
frees the older ones nobody took; ``empty_cpu_cache()`` gives back the rest. On out-of-memory
it gives its blocks back and retries. Outputs and anything else still alive
at the end go back to the system when freed, not to the cache.

While a scope is open the cache is the process's CPU allocator (c10's), for every thread: a
tensor another thread allocates then may come from it too, which is harmless (its memory goes
where it should when freed). The profiler's memory view sees its allocations. Nothing is cached
where another CPU allocator than PyTorch's default is installed, or off glibc (the cache checks
block sizes with malloc_usable_size); a forked child starts with no scope open.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

from ._extension import _C

__all__ = ["cpu_cache_stats", "empty_cpu_cache", "plain_cpu_inference", "reuse_cpu_buffers"]


def plain_cpu_inference(x: torch.Tensor) -> bool:
    """Whether `x` runs eagerly on the CPU with gradients off, with nobody watching: no
    compiler, tracer, tensor subclass (fake tensors), vmap or dispatch mode (FlopCounterMode)."""
    # The compiler and tracer checks first: Dynamo refuses to trace the rest.
    return (not torch.compiler.is_compiling() and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and type(x) is torch.Tensor and _get_current_dispatch_mode() is None
            and not torch._C._functorch.is_functorch_wrapped_tensor(x)
            and x.device.type == "cpu" and not torch.is_grad_enabled())


@contextmanager
def reuse_cpu_buffers() -> Iterator[None]:
    """CPU allocations of 64 KiB or more inside reuse freed blocks (module docstring)."""
    _C.cpu_cache.enter()
    try:
        yield
    finally:
        _C.cpu_cache.exit()


def empty_cpu_cache() -> int:
    """Frees the blocks the cache holds for the next scope; returns how many bytes."""
    return _C.cpu_cache.empty()


def cpu_cache_stats() -> dict:
    """hits, misses, cached_bytes, live_bytes, scopes (closed), depth (open), active, supported."""
    return dict(_C.cpu_cache.stats())
