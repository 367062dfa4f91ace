"""The op rows of `bench`: one op case checked against float64, then timed for ours (each CUDA
backend here), the eager reference and torch.compile of it."""

from __future__ import annotations

import contextlib
from typing import List

import torch

from ..ops import _backend
from ..registry import OpSpec
from .cases import CHECK_TOLERANCE, check_against_reference, lazily_compiled, reference_float64, timed_call
from .config import BenchConfig, Sizes
from .results import Row
from .timing import median_time

__all__ = ["op_rows"]


def op_rows(spec: OpSpec, preset: str, shape, dtype, cfg: BenchConfig, sizes: Sizes, copy_bw,
            compile_: bool = True, mode: str = "forward+backward") -> List[Row]:
    """The rows of one op case (one per CUDA backend on a GPU)."""
    device = cfg.device
    g = torch.Generator(device=device).manual_seed(0)
    inputs = spec.bench_inputs(tuple(shape), preset, device, dtype, g)
    eager = spec.eager(preset)
    backends = ["cpu"] if device == "cpu" else (_backend.available_backends(spec.name) or ["none"])
    base = dict(kind="op", name=spec.name, preset=preset, shape=list(shape), device=device,
                dtype=str(dtype).replace("torch.", ""), mode=mode)
    bytes_moved = spec.bytes_moved(inputs, mode)

    def step(fn):
        return timed_call(fn, inputs, mode)

    reference64 = reference_float64(eager, inputs)
    # The reference implementations, checked then timed once for every backend's row.
    shared_errors, shared_times, failed = {}, {}, []
    impls = {"eager": eager}
    if cfg.compile and compile_:
        impls["compile"] = lazily_compiled(eager, **spec.compile_options)
    for name, fn in impls.items():
        try:
            err = check_against_reference(fn, reference64, inputs, mode)
        except Exception as e:  # a compile failure is reported, not fatal to the run
            failed.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
            continue
        shared_errors[name] = err
        # The eager reference is the yardstick: in a half dtype its own rounding is a fact to
        # report, not a failure (ours and compile must still be within CHECK_TOLERANCE).
        if err < CHECK_TOLERANCE or name == "eager":
            shared_times[name] = median_time(step(fn), device, sizes.warmup, sizes.reps) * 1e3
        if err >= CHECK_TOLERANCE:
            failed.append(f"{name} {err:.1e} off float64" + (" (its own rounding)" if name == "eager" else ""))

    rows = []
    for backend in backends:
        row = Row(backend=backend, bytes_moved=bytes_moved, errors=dict(shared_errors), **base)
        row.eager_ms, row.compile_ms = shared_times.get("eager"), shared_times.get("compile")
        notes = list(failed)
        if backend == "none":
            notes.append("no CUDA backend in this install")
        else:
            ours = spec.ours(preset)
            # verify's context manager: the backend for CUDA tensors, put back afterwards.
            ctx = _backend.using_cuda_backend(spec.name, backend) if backend in _backend.BACKENDS else contextlib.nullcontext()
            with ctx:
                err = check_against_reference(ours, reference64, inputs, mode)
                row.errors["ours"] = err
                if err < CHECK_TOLERANCE:
                    row.ours_ms = median_time(step(ours), device, sizes.warmup, sizes.reps) * 1e3
                else:
                    notes.append(f"ours {err:.1e} off float64")
            if row.ours_ms:
                row.gb_per_s = bytes_moved / (row.ours_ms / 1e3) / 1e9
                row.pct_of_copy = 100 * bytes_moved / (row.ours_ms / 1e3) / copy_bw
        # Only a wrong answer fails the run (a missing backend or a compile error is a note).
        row.ok = all(e < CHECK_TOLERANCE for name, e in row.errors.items() if name != "eager")
        row.note = "; ".join(notes)
        rows.append(row)
    return rows


