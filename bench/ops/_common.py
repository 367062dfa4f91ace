"""What the op benchmarks in bench/ops/ share (timing and the roofline are in bench/harness.py):
which cases run, the implementations, the check against float64 before timing, and the timed
call. The ops themselves (inputs, ours, the eager reference, compile options, docs/OPS.md pass
counts) are `mprnet_kernels.registry.OPS`, the ones `mprnet-kernels bench` times.

Cases: each op at the shapes MPRNet really produces, derived from the model (never typed here):
`mprnet_kernels.benchmark.op_cases` over `mprnet_kernels.shapes`, for every preset, at the model
input `shapes.BENCH_INPUTS[device]["full"]` (GPU: 16 patches of 256x256, the training batch;
CPU: 4 of them), the three heaviest shapes of each preset, a call another preset already makes
left out. Then every dtype of the device (CPU: float32, bfloat16; GPU: also float16), every
implementation (ours: the CPU kernel, or on CUDA each backend this install has; the eager
reference; torch.compile of it, at each preset's heaviest shape only, since compiling is per
shape and dtype), and each layout asked for (the first at every shape, the others at the
heaviest). Each op file has a forward-alone benchmark (under no_grad: inference, or a loss in
evaluation) and a forward+backward one (training).

Imported as `_common` (pytest puts bench/ops/, which holds no __init__.py, on sys.path).
"""

from typing import List, Sequence

import pytest
import torch

from harness import run_benchmark
from mprnet_kernels import benchmark as mk
from mprnet_kernels.ops import _backend
from mprnet_kernels.reference import PRESETS
from mprnet_kernels.registry import Inputs, spec
from mprnet_kernels.shapes import BENCH_INPUTS

# Relative error a benchmarked implementation may show against float64 before it is timed.
CHECK_TOLERANCE = mk.CHECK_TOLERANCE

MODES = ("forward", "forward+backward")
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def devices() -> List[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def dtypes_for(device: str) -> List[torch.dtype]:
    if device == "cuda":
        return [torch.float32, torch.bfloat16, torch.float16]
    return [torch.float32, torch.bfloat16]


def impls_for(op: str, device: str) -> List[str]:
    """"ours" is the CPU kernel; on CUDA, "triton" and "cuda" are ours with that backend (those
    this install has)."""
    ours = ["ours"] if device == "cpu" else list(_backend.available_backends(op))
    return ours + ["eager", "compile"]


DTYPE_IDS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def case_id(device: str, preset: str, shape: Sequence[int], dtype: torch.dtype, layout: str, impl: str) -> str:
    """e.g. cpu-deblur-4x96x256x256-fp32-channels_last-ours (select with -k, e.g. -k "fp32 and ours")."""
    return f"{device}-{preset}-{'x'.join(map(str, shape))}-{DTYPE_IDS[dtype]}-{layout}-{impl}"


def op_params(op: str, layouts: Sequence[str] = ("contiguous",), top: int = 3) -> list:
    """pytest params (device, preset, shape, dtype, layout, impl) of every case of `op`."""
    params = []
    for device in devices():
        batch, image = BENCH_INPUTS[device]["full"]
        for case in mk.op_cases(op, list(PRESETS), batch, image, top):
            for dtype in dtypes_for(device):
                for layout in layouts if case.rank == 0 else layouts[:1]:
                    for impl in impls_for(op, device):
                        if impl == "compile" and case.rank != 0:
                            continue
                        params.append(pytest.param(device, case.preset, case.shape, dtype, layout, impl,
                                                   id=case_id(device, case.preset, case.shape, dtype, layout, impl)))
    return params


def make_inputs(op: str, preset: str, shape, device: str, dtype: torch.dtype, layout: str = "contiguous") -> Inputs:
    """The op's benchmark inputs (the registry's) at `shape`, its feature maps (4-D tensors with `shape`'s
    batch and channels, whatever their height and width: upsample2x_add's y is twice x's) in
    `layout`."""
    g = torch.Generator(device=device).manual_seed(0)
    inputs = spec(op).bench_inputs(tuple(shape), preset, device, dtype, g)
    if layout == "contiguous":
        return inputs
    fmt = LAYOUTS[layout]

    def convert(t):
        if t is None or t.dim() != 4 or tuple(t.shape[:2]) != tuple(shape[:2]):
            return t
        return t.detach().contiguous(memory_format=fmt).requires_grad_(t.requires_grad)

    new = {id(t): convert(t) for t in inputs.args}
    return Inputs([new[id(t)] for t in inputs.args], [new[id(t)] for t in inputs.leaves], convert(inputs.grad),
                     new[id(inputs.main)])


def implementation(op: str, preset: str, impl: str):
    bench = spec(op)
    if impl == "eager":
        return bench.eager(preset)
    if impl == "compile":
        # A compiled function per case: compiling is per shape and dtype anyway.
        return mk.lazily_compiled(bench.eager(preset), **bench.compile_options)
    return bench.ours(preset)


def run_op(benchmark, op: str, mode: str, device: str, preset: str, shape, dtype: torch.dtype, layout: str,
           impl: str) -> float:
    """Checks `impl` of `op` against the float64 reference on the case's inputs (its output, and
    for forward+backward its input gradients), then times it. A wrong result fails the case
    (the eager reference in a half dtype is the yardstick: its own rounding is recorded, not
    failed). Returns the median in seconds."""
    bench = spec(op)
    inputs = make_inputs(op, preset, shape, device, dtype, layout)
    fn = implementation(op, preset, impl)
    with _backend.using_cuda_backend(op, impl if impl in _backend.BACKENDS else None):
        reference64 = mk.reference_float64(bench.eager(preset), inputs)
        err = mk.check_against_reference(fn, reference64, inputs, mode)
        if impl != "eager" or dtype == torch.float32:
            assert err < CHECK_TOLERANCE, f"{op} {impl} ({mode}) is {err:.2e} off float64"
        return run_benchmark(benchmark, mk.timed_call(fn, inputs, mode), device,
                             bytes_moved=bench.bytes_moved(inputs, mode), op=op, preset=preset, impl=impl, mode=mode,
                             dtype=str(dtype), shape=list(shape), layout=layout, rel_err=err)


def op_benchmarks(op: str, layouts: Sequence[str] = ("contiguous",)) -> tuple:
    """(CASES, forward benchmark, forward+backward benchmark) for a bench_<op>.py module, which
    binds them to bench_<op>_forward and bench_<op>_forward_backward (pytest collects a module's
    functions by those names)."""
    cases = op_params(op, layouts)

    def benchmark_of(mode: str):
        @pytest.mark.parametrize("device_name, preset, shape, dtype, layout, impl", cases)
        def bench(benchmark, device_name, preset, shape, dtype, layout, impl):
            run_op(benchmark, op, mode, device_name, preset, shape, dtype, layout, impl)

        bench.__name__ = f"bench_{op}_{mode.replace('+', '_')}"
        return bench

    return cases, benchmark_of("forward"), benchmark_of("forward+backward")
