"""The benchmark harness shared by every benchmark in bench/: warm-up, medians, bytes moved
and the copy-bandwidth roofline.

Memory-bound kernels are judged by achieved bandwidth = bytes the op must move / median time,
against the bandwidth of a plain device-to-device copy measured in the same run (a copy reads
and writes every byte once, the best a streaming kernel can do).
"""

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
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


_copy_bw_cache = {}


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


def run_benchmark(benchmark, fn: Callable[[], object], device, bytes_moved: int = 0, **info) -> float:
    """Times fn with pytest-benchmark (warm-up rounds, then rounds whose median is reported),
    synchronising CUDA inside the timed call, and records GB/s and the share of the measured
    copy bandwidth in the benchmark's extra_info. Returns the median in seconds."""
    device = torch.device(device)

    def timed():
        fn()
        synchronize(device)

    rounds = 10 if device.type == "cuda" else 5
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=2, iterations=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(info)
    benchmark.extra_info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    benchmark.extra_info["threads"] = torch.get_num_threads()
    if bytes_moved:
        achieved = bytes_moved / median
        copy = copy_bandwidth(device)
        benchmark.extra_info.update(
            bytes_moved=bytes_moved,
            gb_per_s=round(achieved / 1e9, 2),
            copy_gb_per_s=round(copy / 1e9, 2),
            pct_of_copy=round(100 * achieved / copy, 1),
        )
    return median
