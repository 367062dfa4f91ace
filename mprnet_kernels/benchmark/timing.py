"""Timing and memory: medians after warm-up (CUDA events on a GPU), bytes moved, the measured
copy bandwidth that is the roofline of a memory-bound op, and peak memory of one call.

Memory-bound kernels are judged by achieved bandwidth = bytes the op must move / median time,
against a plain device-to-device copy measured in the same run (a copy reads and writes every
byte once, the best a streaming kernel can do). The pytest-benchmark suite in bench/ times with
these too (bench/harness.py).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Dict, Optional

import torch

__all__ = ["MEMORY_MEASURE", "copy_bandwidth", "median_time", "median_times_in_turns", "peak_memory", "synchronize",
           "tensor_bytes"]


def synchronize(device) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device, warmup: int = 3, reps: int = 10) -> float:
    """Median wall time of fn() in seconds, after `warmup` untimed calls. On CUDA each call is
    timed with CUDA events; on CPU with perf_counter."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median_times_in_turns(fns: Dict[str, Callable[[], object]], device, warmup: int = 1,
                          reps: int = 3) -> Dict[str, float]:
    """{name: median wall time of fn() in seconds}: after `warmup` untimed calls of each, the
    functions take turns, one timed call each per round (median_time's timing), so that a drift
    of a shared machine falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, list] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(median_time(fn, device, 0, 1))
    return {k: statistics.median(v) for k, v in times.items()}


_copy_bw_cache: Dict[tuple, float] = {}


def copy_bandwidth(device, nbytes: int = 256 * 2**20) -> float:
    """Measured copy bandwidth of `device` in bytes/s, counting the read and the write."""
    device = torch.device(device)
    if device.type == "cpu":
        nbytes = min(nbytes, 128 * 2**20)
    key = (str(device), nbytes)
    if key not in _copy_bw_cache:
        src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
        dst = torch.empty_like(src)
        t = median_time(lambda: dst.copy_(src), device, warmup=3, reps=15)
        _copy_bw_cache[key] = 2 * nbytes / t
    return _copy_bw_cache[key]


def tensor_bytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


#: What `peak_memory` measures on each device (the JSON's "memory_measure").
MEMORY_MEASURE = {
    "cuda": "peak bytes allocated during one call above what was allocated when it started "
            "(torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus memory_allocated)",
    "cpu": "peak tensor memory allocated during one call above what was live when it started: the "
           "running sum of the CPU allocator's allocation and free events recorded by torch.profiler "
           "(profile_memory=True); memory that libraries take outside PyTorch's allocator (oneDNN "
           "scratchpads) is not counted",
}


@contextlib.contextmanager
def _quiet_stderr():
    """Silences file descriptor 2 (kineto's C++ log lines on CPU) for the block."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device, before: Optional[Callable[[], object]] = None) -> Optional[int]:
    """Peak bytes allocated while fn() runs, above what was allocated when it started (see
    MEMORY_MEASURE); `before()`, if given, runs first, outside the measurement (a training step's
    zero_grad). None where it cannot be measured."""
    device = torch.device(device)
    if before is not None:
        before()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        return None
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # a torch whose profiler keeps its raw events elsewhere
        return None
    cpu = torch.autograd.DeviceType.CPU
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]" and e.device_type() == cpu)
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return peak

