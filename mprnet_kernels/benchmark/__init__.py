"""The benchmarks of the project, by job: `timing` (medians, bytes, the copy-bandwidth roofline,
peak memory), `config` (what a run is asked for), `cases` (the op cases from the model's shapes,
checked against float64, then called), `op_runs` and `model_runs` (the rows), `runs` (plan and
run), `report` (table, environment, JSON), `plots`, and `cli` (`mprnet-kernels bench`).

The ops themselves (inputs, ours, the reference, pass counts) are `mprnet_kernels.registry`; the
pytest-benchmark suite in bench/ reads the same registry and times with `timing`. This package is
installed and imports nothing from the repository's bench/ directory.

`mprnet-kernels bench` = `run(BenchConfig(...))`: each op's forward+backward (and, with --full,
its forward alone), ours vs the eager reference vs torch.compile of the reference, and the fast
model vs the reference end to end: inference, and a training step (forward, MPRNetLoss, backward,
Adam step), each with its peak memory. Every timed implementation is first checked against the
reference on the same inputs; a mismatch marks the row FAIL and is not timed.
"""

from .cases import CHECK_TOLERANCE, OpCase, check_against_reference, lazily_compiled, op_cases, reference_float64, timed_call
from .config import TINY, TINY_MODEL, BenchConfig, Sizes, default_sizes
from .model_runs import (TRAIN_LR, autocast, first_step_error, flat_grads, model_impls, model_pair, model_tolerance,
                         training_step)
from .plots import matplotlib_missing, write_plots
from .report import environment, format_table, results_dict
from .results import IMPLS, Row
from .runs import plan, run
from .timing import MEMORY_MEASURE, copy_bandwidth, median_time, peak_memory, synchronize, tensor_bytes

__all__ = [
    "BenchConfig", "CHECK_TOLERANCE", "IMPLS", "MEMORY_MEASURE", "OpCase", "Row", "Sizes", "TINY", "TINY_MODEL",
    "TRAIN_LR", "autocast", "check_against_reference", "copy_bandwidth", "default_sizes", "environment",
    "first_step_error", "flat_grads", "format_table", "lazily_compiled", "matplotlib_missing", "median_time",
    "model_impls", "model_pair", "model_tolerance", "op_cases", "peak_memory", "plan", "reference_float64",
    "results_dict", "run", "synchronize", "tensor_bytes", "timed_call", "training_step", "write_plots",
]
