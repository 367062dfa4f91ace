"""The benchmark harness of the pytest-benchmark suite in bench/: run_benchmark, plus the
timing code it shares with `mprnet-kernels bench`, which lives in mprnet_kernels.benchmark (one
home for timing code) and is re-exported here: warm-up and medians (CUDA events on GPU), bytes
moved and the copy-bandwidth roofline.

Memory-bound kernels are judged by achieved bandwidth = bytes the op must move / median time,
against the bandwidth of a plain device-to-device copy measured in the same run (a copy reads
and writes every byte once, the best a streaming kernel can do).
"""

from typing import Callable

import torch

from mprnet_kernels.benchmark import copy_bandwidth, median_time, synchronize, tensor_bytes

__all__ = ["copy_bandwidth", "median_time", "run_benchmark", "synchronize", "tensor_bytes"]


def _significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


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
            gb_per_s=_significant(achieved / 1e9),
            copy_gb_per_s=_significant(copy / 1e9),
            pct_of_copy=_significant(100 * achieved / copy),
        )
    return median
