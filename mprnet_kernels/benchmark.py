"""Timing for every benchmark of the project: the harness (medians, bytes moved, the
copy-bandwidth roofline) and the runs behind `mprnet-kernels bench`.

bench/harness.py (the pytest-benchmark suite) re-exports the harness from here, so there is one
home for timing code; this module is part of the installed package and imports nothing from the
repository's bench/ directory.

Memory-bound kernels are judged by achieved bandwidth = bytes the op must move / median time,
against the bandwidth of a plain device-to-device copy measured in the same run (a copy reads and
writes every byte once, the best a streaming kernel can do). Bytes are the OPS.md pass counts
times the size of the op's main operand (see `OP_BENCHES`).

`mprnet-kernels bench` = `run(BenchConfig(...))`: each op's forward+backward (and, with --full,
its forward alone), ours vs the eager reference vs torch.compile of the reference, at shapes from
`mprnet_kernels.shapes` (`op_cases`, which the pytest-benchmark suite in bench/ uses too), and the
fast model vs the reference end to end: inference, and a training step (forward, MPRNetLoss,
backward, Adam step), each with its peak memory (`peak_memory`). Every timed implementation is
first checked against the reference on the same inputs (an op against float64; a model's output,
or its first training step's loss and gradients, against the eager reference model); a mismatch
marks the row FAIL and is not timed.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

__all__ = [
    "BenchConfig", "OP_BENCHES", "Row", "copy_bandwidth", "environment", "format_table",
    "median_time", "op_cases", "peak_memory", "run", "synchronize", "tensor_bytes", "write_plots",
]


# ---------------------------------------------------------------------------------- harness
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


# ---------------------------------------------------------------------------------- the ops
#: Relative error a timed implementation may show against float64 before it is timed.
CHECK_TOLERANCE = 1e-2

# The denoising model is trained with Charbonnier alone on clamped outputs, the others with
# Charbonnier + 0.05 edge (MPRNET.md, "Losses").
LOSS_RECIPES = {"deblur": dict(edge_weight=0.05), "derain": dict(edge_weight=0.05),
                "denoise": dict(edge_weight=0.0, clamp=True)}


@dataclass
class Inputs:
    args: List[torch.Tensor]      # fn(*args)
    leaves: List[torch.Tensor]    # what gradients are taken with respect to
    grad: Optional[torch.Tensor]  # the output's gradient (None for a scalar loss)
    main: torch.Tensor            # the operand whose size the pass count multiplies


@dataclass
class OpBench:
    """One fused op as `bench` times it: inputs at a shape, ours, the eager reference."""
    op: str
    passes: int                                   # OPS.md passes of `main` for forward+backward
    make_inputs: Callable[..., Inputs]            # (shape, preset, device, dtype, generator)
    ours: Callable[[str], Callable]               # preset -> fn
    eager: Callable[[str], Callable]              # preset -> fn
    compile_options: dict = field(default_factory=dict)
    forward_passes: int = 0                       # passes of the forward alone (no grad wanted)

    def bytes_moved(self, inputs: Inputs, mode: str = "forward+backward") -> int:
        passes = self.passes if mode == "forward+backward" else self.forward_passes
        return passes * tensor_bytes(inputs.main)


def _randn(shape, device, dtype, g, scale=1.0):
    return (scale * torch.randn(shape, device=device, generator=g)).to(dtype)


def _sam_gate_inputs(shape, preset, device, dtype, g):
    x1, z, x, grad = (_randn(shape, device, dtype, g) for _ in range(4))
    leaves = [t.requires_grad_() for t in (x1, z, x)]
    return Inputs(leaves, leaves, grad, x1)


def _ca_tail_inputs(shape, preset, device, dtype, g):
    from .reference import PRESETS

    c = shape[1]
    hidden = max(c // PRESETS[preset]["reduction"], 1)
    x, r, grad = (_randn(shape, device, dtype, g) for _ in range(3))
    w1 = _randn((hidden, c, 1, 1), device, dtype, g, 2 / c ** 0.5)
    w2 = _randn((c, hidden, 1, 1), device, dtype, g, 2 / hidden ** 0.5)
    leaves = [t.requires_grad_() for t in (x, r, w1, w2)]
    return Inputs(leaves, leaves, grad, x)


def _image_pair_inputs(shape, preset, device, dtype, g):
    x = torch.rand(shape, device=device, generator=g).to(dtype).requires_grad_()
    y = torch.rand(shape, device=device, generator=g).to(dtype)
    return Inputs([x, y], [x], None, x)


def _stage_outputs_inputs(shape, preset, device, dtype, g):
    # Outputs spill a little past [0, 1] so that the denoising recipe's clamp cuts some.
    outs = [(torch.rand(shape, device=device, generator=g) * 1.2 - 0.1).to(dtype).requires_grad_()
            for _ in range(3)]
    y = torch.rand(shape, device=device, generator=g).to(dtype)
    return Inputs(outs + [y], outs, None, y)


def _upsample_add_inputs(shape, preset, device, dtype, g):
    n, c, h, w = shape  # x, the low-resolution operand; y, out and grad are twice as high and wide
    x = _randn(shape, device, dtype, g).requires_grad_()
    y, grad = (_randn((n, c, 2 * h, 2 * w), device, dtype, g) for _ in range(2))
    y.requires_grad_()
    return Inputs([x, y], [x, y], grad, x)


def _upsample_add_reference(x, y):
    import torch.nn.functional as F

    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False) + y


def _sam_gate_reference(x1, z, x):
    return x1 * torch.sigmoid(z) + x


def _ca_tail_reference(x, r, w1, w2):
    import torch.nn.functional as F

    return x * torch.sigmoid(F.conv2d(torch.relu(F.conv2d(F.adaptive_avg_pool2d(x, 1), w1)), w2)) + r


def _ops():
    from . import ops, reference

    def ca_tail(x, r, w1, w2):
        return ops.ca_tail(x, r, w1, None, w2, None)

    def mprnet_loss_ours(preset):
        kwargs = LOSS_RECIPES[preset]
        return lambda o1, o2, o3, y: ops.mprnet_loss([o1, o2, o3], y, **kwargs)

    def mprnet_loss_eager(preset):
        loss = reference.MPRNetLoss(**LOSS_RECIPES[preset])
        return lambda o1, o2, o3, y: loss([o1, o2, o3], y)

    # Inductor's layout optimization makes the Laplacian's convolutions channels_last, and CPU
    # replication_pad2d_backward then breaks the generated code's stride assert (bench/ops/
    # bench_edge_loss.py): the loss references are compiled with it off.
    no_layout = {"options": {"layout_optimization": False}}
    return {b.op: b for b in [
        # Forward alone: sam_gate reads x1, z, x and writes out (4); ca_tail reads x (pool),
        # then x and r, and writes out (4); without a gradient wanted the losses only read their
        # inputs: x and y (2), or 3 stage outputs and the target (4).
        OpBench("sam_gate", 9, _sam_gate_inputs, lambda p: ops.sam_gate, lambda p: _sam_gate_reference,
                forward_passes=4),
        OpBench("ca_tail", 8, _ca_tail_inputs, lambda p: ca_tail, lambda p: _ca_tail_reference, forward_passes=4),
        OpBench("charbonnier_loss", 5, _image_pair_inputs, lambda p: ops.charbonnier_loss,
                lambda p: reference.charbonnier_loss, forward_passes=2),
        OpBench("edge_loss", 5, _image_pair_inputs, lambda p: ops.edge_loss, lambda p: reference.edge_loss,
                no_layout, forward_passes=2),
        OpBench("mprnet_loss", 13, _stage_outputs_inputs, mprnet_loss_ours, mprnet_loss_eager, no_layout,
                forward_passes=4),
        # In passes of x (a quarter of y): forward reads x and y and writes out (1 + 4 + 4);
        # backward reads grad and writes grad_x (4 + 1; grad_y is grad itself).
        OpBench("upsample2x_add", 14, _upsample_add_inputs, lambda p: ops.upsample2x_add,
                lambda p: _upsample_add_reference, forward_passes=9),
    ]}


class _LazyOps(dict):
    def _fill(self):
        if not dict.__len__(self):
            self.update(_ops())

    def __getitem__(self, key):
        self._fill()
        return dict.__getitem__(self, key)

    def __iter__(self):
        self._fill()
        return dict.__iter__(self)

    def __len__(self):
        self._fill()
        return dict.__len__(self)

    def __contains__(self, key):
        self._fill()
        return dict.__contains__(self, key)

    def keys(self):
        self._fill()
        return dict.keys(self)

    def values(self):
        self._fill()
        return dict.values(self)

    def items(self):
        self._fill()
        return dict.items(self)


#: {op: OpBench}; tests monkeypatch entries to check that a wrong op fails the run.
OP_BENCHES: Dict[str, OpBench] = _LazyOps()


# ---------------------------------------------------------------------------------- config
@dataclass
class Sizes:
    """Input sizes: op shapes come from the model at (batch, 3, image, image); the inference rows
    run at each of `model_images` with batch 1; the training-step rows at (train_batch, 3,
    train_image, train_image)."""
    batch: int
    image: int
    model_images: Sequence[int]
    warmup: int
    reps: int
    model_overrides: dict = field(default_factory=dict)  # from_preset overrides (tests only)
    model_reps: Optional[int] = None  # timed model calls (default: reps), one warm-up fewer
    train_batch: int = 1
    train_image: int = 64
    train_warmup: int = 0             # untimed steps after the checked first step (itself a warm-up)
    train_reps: int = 3               # timed training steps


def default_sizes(device: str, full: bool) -> Sizes:
    from .shapes import BENCH_INPUTS

    batch, image = BENCH_INPUTS["cuda" if device == "cuda" else "cpu"]["full" if full else "quick"]
    if device == "cuda":
        # The GPU training step: 16 patches of 256x256.
        return (Sizes(batch, image, (256, 512), 5, 20, train_batch=16, train_image=256, train_warmup=2, train_reps=10)
                if full else Sizes(batch, image, (256,), 3, 10, train_batch=16, train_image=256, train_warmup=1,
                                   train_reps=5))
    # This 2-core CPU. --full: the CPU training step, 1x3x128x128 (about 6 s a step for
    # each model). Quick (under 3 minutes, verification included): one training row at 64x64
    # (about 1.7 s a step), three timed steps after the checked first one.
    return (Sizes(batch, image, (256,), 2, 5, train_batch=1, train_image=128, train_reps=3) if full
            else Sizes(batch, image, (64,), 2, 10, model_reps=3, train_batch=1, train_image=64, train_reps=3))


#: A small model of the preset's architecture for tests: one CAB per group, 16 features (the
#: per-op overhead of the full one makes even a 16x16 training step about a second here).
TINY_MODEL = {"num_cab": 1, "n_feat": 16, "scale_unetfeats": 8, "scale_orsnetfeats": 8}

#: Hidden `--tiny` (tests): every op shape from a 16x16 input, one timed call, the TINY_MODEL
#: (a cold first forward of the full deblur model costs ~10 s of oneDNN set-up here).
TINY = Sizes(1, 16, (16,), 0, 1, TINY_MODEL, train_batch=1, train_image=16, train_reps=1)


@dataclass
class BenchConfig:
    device: str = "cpu"
    full: bool = False
    compile: bool = False
    ops: Sequence[str] = ()          # op names and "model"; empty = all
    presets: Sequence[str] = ()      # empty = deblur (quick) or all three (--full)
    sizes: Optional[Sizes] = None
    progress: bool = True
    compile_model: bool = False      # torch.compile the whole reference model too (minutes)

    def resolved_sizes(self) -> Sizes:
        return self.sizes or default_sizes(self.device, self.full)

    def dtypes(self) -> List[torch.dtype]:
        if not self.full:
            return [torch.float32]
        if self.device == "cuda":
            return [torch.float32, torch.bfloat16, torch.float16]
        return [torch.float32, torch.bfloat16]

    def selected_presets(self) -> List[str]:
        return list(self.presets) or (["deblur", "derain", "denoise"] if self.full else ["deblur"])

    def selected_ops(self) -> List[str]:
        from .shapes import OPS

        return [op for op in OPS if not self.ops or op in self.ops]

    def with_model(self) -> bool:
        return not self.ops or "model" in self.ops

    def op_modes(self) -> List[str]:
        """Op rows: forward+backward (what training runs), and with --full the forward alone."""
        return ["forward+backward", "forward"] if self.full else ["forward+backward"]

    def model_dtypes(self) -> List[torch.dtype]:
        """Inference rows: float32, and with --full bf16 autocast too."""
        return [torch.float32, torch.bfloat16] if self.full else [torch.float32]

    def train_dtypes(self) -> List[torch.dtype]:
        """Training-step rows: with --full float32 and bf16 autocast; quick, float32 on a CPU and
        bf16 autocast on a GPU (how MPRNet trains there: in float32 a 16x3x256x256 step of
        the reference needs about 80 GiB, more than an H100 has; it is reported, not failed)."""
        if self.full:
            return [torch.float32, torch.bfloat16]
        return [torch.bfloat16] if self.device == "cuda" else [torch.float32]


@dataclass
class Row:
    kind: str                    # "op" or "model"
    name: str                    # op name, "mprnet_inference" or "mprnet_training_step"
    preset: str
    shape: List[int]
    device: str
    dtype: str
    backend: str                 # "cpu", "triton" or "cuda" (ours); "-" for the model
    ours_ms: Optional[float] = None
    eager_ms: Optional[float] = None
    compile_ms: Optional[float] = None
    bytes_moved: Optional[int] = None
    gb_per_s: Optional[float] = None
    pct_of_copy: Optional[float] = None
    errors: Dict[str, float] = field(default_factory=dict)  # impl -> worst rel. error vs float64
    ok: bool = True
    note: str = ""
    # Ops: "forward+backward" or "forward"; models: "inference" or "training step" (forward,
    # MPRNetLoss, backward, Adam step).
    mode: str = "forward+backward"
    ours_compile_ms: Optional[float] = None  # models: torch.compile of the fast MPRNet
    peak_mib: Dict[str, float] = field(default_factory=dict)  # models: impl -> peak_memory in MiB

    @property
    def speedup(self) -> Optional[float]:
        if self.ours_ms and self.eager_ms:
            return self.eager_ms / self.ours_ms
        return None


# ---------------------------------------------------------------------------------- progress
class _Progress:
    """tqdm when it is installed, else one rewritten stderr line; nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.bar = total, 0, enabled, None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, file=sys.stderr, leave=False, unit="case")

    def step(self, label: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(label)
        else:
            sys.stderr.write(f"\r[{self.done + 1}/{self.total}] {label:<60.60}")
            sys.stderr.flush()

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\r" + " " * 80 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------- checks
def _rel_err(a, b) -> float:
    from .testing import rel_err

    return rel_err(a, b)


def _output_and_grads(fn, inputs: Inputs):
    out = fn(*inputs.args)
    grads = torch.autograd.grad(out, inputs.leaves, inputs.grad, allow_unused=True)
    return out, [torch.zeros_like(t) if g is None else g for t, g in zip(inputs.leaves, grads)]


def _float64_twin(inputs: Inputs) -> Inputs:
    twins = {id(t): t.detach().double().requires_grad_(t.requires_grad) for t in inputs.args}
    return Inputs([twins[id(t)] for t in inputs.args], [twins[id(t)] for t in inputs.leaves],
                  None if inputs.grad is None else inputs.grad.double(), twins[id(inputs.main)])


def reference_float64(eager, inputs: Inputs):
    """The reference's output and input gradients in float64 on the same (rounded) inputs."""
    return _output_and_grads(eager, _float64_twin(inputs))


def check_against_reference(fn, reference64, inputs: Inputs, mode: str = "forward+backward") -> float:
    """Worst relative error of fn's output and input gradients against `reference64`
    (reference_float64's result); with mode "forward", of its output alone, computed without
    autograd as a forward-only call runs."""
    ref_out, ref_grads = reference64
    if mode == "forward":
        with torch.no_grad():
            return _rel_err(fn(*inputs.args).float(), ref_out)
    out, grads = _output_and_grads(fn, inputs)
    return max([_rel_err(out.float(), ref_out)] + [_rel_err(a.float(), b) for a, b in zip(grads, ref_grads)])


def timed_call(fn, inputs: Inputs, mode: str = "forward+backward") -> Callable[[], object]:
    """What a timing repeats: fn's forward and the gradients with respect to inputs.leaves, or
    with mode "forward" the forward alone under no_grad (inference; a loss in evaluation)."""
    if mode == "forward":
        def forward():
            with torch.no_grad():
                return fn(*inputs.args)
        return forward
    return lambda: torch.autograd.grad(fn(*inputs.args), inputs.leaves, inputs.grad)


@dataclass(frozen=True)
class OpCase:
    """One op shape to time: the preset whose model produces it, and its rank among that
    preset's shapes (0 = the most traffic)."""
    op: str
    preset: str
    shape: tuple
    rank: int
    calls: int


def op_cases(op: str, presets: Sequence[str], batch: int, image: int, top: int) -> List[OpCase]:
    """The `top` heaviest shapes `op` sees in one forward of each preset's model on a (batch, 3,
    image, image) input (mprnet_kernels.shapes), in preset order, each distinct call once: the
    losses see the same stage outputs under every preset, and deblur and derain share a loss
    recipe, so a call another preset already made is left out."""
    from .shapes import shapes_for

    done, cases = set(), []
    for preset in presets:
        for rank, s in enumerate(shapes_for(op, preset, batch, image, image)[:top]):
            key = (s.shape, repr(LOSS_RECIPES[preset]) if op == "mprnet_loss" else None)
            if key not in done:
                done.add(key)
                cases.append(OpCase(op, preset, s.shape, rank, s.calls))
    return cases


def lazily_compiled(fn, **compile_options):
    """fn through torch.compile(fn, **compile_options), made on the first call (so building a
    benchmark list compiles nothing) and kept for the next calls."""
    compiled = None

    def call(*args):
        nonlocal compiled
        if compiled is None:
            compiled = torch.compile(fn, **compile_options)
        return compiled(*args)

    return call


# ---------------------------------------------------------------------------------- runs
def _op_rows(bench: OpBench, preset: str, shape, dtype, cfg: BenchConfig, sizes: Sizes, copy_bw,
             compile_: bool = True, mode: str = "forward+backward") -> List[Row]:
    from .ops import _backend

    device = cfg.device
    g = torch.Generator(device=device).manual_seed(0)
    inputs = bench.make_inputs(tuple(shape), preset, device, dtype, g)
    eager = bench.eager(preset)
    backends = ["cpu"] if device == "cpu" else (_backend.available_backends(bench.op) or ["none"])
    base = dict(kind="op", name=bench.op, preset=preset, shape=list(shape), device=device,
                dtype=str(dtype).replace("torch.", ""), mode=mode)
    bytes_moved = bench.bytes_moved(inputs, mode)

    def step(fn):
        return timed_call(fn, inputs, mode)

    reference64 = reference_float64(eager, inputs)
    # The reference implementations, checked then timed once for every backend's row.
    shared_errors, shared_times, failed = {}, {}, []
    impls = {"eager": eager}
    if cfg.compile and compile_:
        impls["compile"] = lazily_compiled(eager, **bench.compile_options)
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
            ours = bench.ours(preset)
            # verify's context manager: the backend for CUDA tensors, put back afterwards.
            ctx = _backend.using_cuda_backend(bench.op, backend) if backend in _backend.BACKENDS else contextlib.nullcontext()
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


_models: Dict[tuple, tuple] = {}
_compiled: Dict[tuple, object] = {}

#: Adam's learning rate in the timed training steps (MPRNet's initial one).
TRAIN_LR = 2e-4


def _model_pair(preset: str, device: str, overrides: Optional[dict] = None):
    from . import reference
    from .model import MPRNet

    overrides = overrides or {}
    key = (preset, device, tuple(sorted(overrides.items())))
    if key not in _models:
        _models.clear()  # one pair at a time: the deblur model is 20M parameters
        _compiled.clear()
        torch.manual_seed(0)
        ref = reference.MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours = MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours.load_state_dict(ref.state_dict())
        _models[key] = (ref, ours)
    return _models[key]


def _compiled_once(key: tuple, fn, **options):
    if key not in _compiled:
        _compiled[key] = torch.compile(fn, **options)
    return _compiled[key]


def model_impls(preset: str, device: str, overrides: Optional[dict] = None, compile_: bool = False) -> dict:
    """The end-to-end implementations, {name: (model to call, module holding its weights, the
    preset's training loss)}: "eager" (the reference model and reference.MPRNetLoss, the
    yardstick, first), "compile" (torch.compile of both; the loss without inductor's layout
    optimization, see _ops), "ours" (the fast MPRNet and the fused MPRNetLoss) and "ours_compile"
    (torch.compile of the fast MPRNet; the fused loss is one op already). The two models share
    their initial weights; the compiled ones wrap the same modules."""
    from . import nn as fused
    from . import reference

    ref, ours = _model_pair(preset, device, overrides)
    recipe = LOSS_RECIPES[preset]
    impls = {"eager": (ref, ref, reference.MPRNetLoss(**recipe))}
    if compile_:
        key = (preset, device, tuple(sorted((overrides or {}).items())))
        impls["compile"] = (_compiled_once(key + ("reference",), ref), ref,
                            _compiled_once(key + ("reference_loss",), reference.MPRNetLoss(**recipe),
                                           options={"layout_optimization": False}))
    impls["ours"] = (ours, ours, fused.MPRNetLoss(**recipe))
    if compile_:
        impls["ours_compile"] = (_compiled_once(key + ("ours",), ours), ours, fused.MPRNetLoss(**recipe))
    return impls


def autocast(device, dtype: torch.dtype):
    """bf16/fp16 autocast for a half dtype; a disabled autocast for float32."""
    half = dtype != torch.float32
    return torch.autocast(torch.device(device).type, dtype=dtype if half else torch.bfloat16, enabled=half)


def model_tolerance(device, dtype: torch.dtype) -> float:
    """Relative error an end-to-end result may show against the eager reference model. CUDA
    float32 convolutions may run in TF32 (PyTorch's default for cuDNN)."""
    return 1e-4 if torch.device(device).type == "cpu" and dtype == torch.float32 else 2e-2


def training_step(model, weights: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype,
                  lr: float = TRAIN_LR):
    """One training step of `model` (whose parameters live in `weights`) with a fresh Adam:
    (step, body, zero_grad) where step() = zero_grad() then body(), and body() = forward under
    autocast(dtype), loss, backward, Adam step; both return the loss."""
    optimizer = torch.optim.Adam(weights.parameters(), lr=lr)

    def zero_grad():
        optimizer.zero_grad(set_to_none=True)

    def body():
        with autocast(x.device, dtype):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def step():
        zero_grad()
        return body()

    return step, body, zero_grad


def flat_grads(module: torch.nn.Module) -> torch.Tensor:
    """Every parameter's gradient in float32, flattened and joined in parameter-name order
    (the same order for the reference and the fast model, which share their names)."""
    named = sorted(module.named_parameters(remove_duplicate=False), key=lambda kv: kv[0])
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).detach().float().reshape(-1)
                      for _, p in named])


def first_step_error(result, expected) -> float:
    """Worst relative error of (loss, flat grads) of a first training step against the
    reference's."""
    return max(_rel_err(result[0], expected[0]), _rel_err(result[1], expected[1]))


def _mib(nbytes: Optional[int]) -> Optional[float]:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0][:100] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _free_device_memory(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _model_row(preset: str, image: int, dtype, cfg: BenchConfig, sizes: Sizes) -> Row:
    device = cfg.device
    impls = model_impls(preset, device, sizes.model_overrides, cfg.compile_model)
    x = torch.rand(1, 3, image, image, device=device, generator=torch.Generator(device=device).manual_seed(0))
    half = dtype != torch.float32
    row = Row(kind="model", name="mprnet_inference", preset=preset, shape=list(x.shape), device=device,
              dtype=("autocast " if half else "") + str(dtype).replace("torch.", ""), backend="-", mode="inference")
    tolerance = model_tolerance(device, dtype)
    reps = sizes.model_reps or sizes.reps
    notes = []
    expected = None
    with torch.no_grad(), autocast(device, dtype):
        for name, (model, weights, _) in impls.items():
            weights.eval()
            try:
                out = model(x)[0].float()
            except Exception as e:  # a compile failure or an out-of-memory is a note
                notes.append(f"{name}: {_short(e)}")
                _free_device_memory(device)
                continue
            if name == "eager":
                expected, err = out, 0.0  # the yardstick itself
            elif expected is None:
                notes.append(f"{name} not timed: no reference output to check it against")
                continue
            else:
                err = _rel_err(out, expected)
            row.errors[name] = err
            if err < tolerance:
                setattr(row, f"{name}_ms", median_time(lambda: model(x), device, max(sizes.warmup - 1, 0), reps) * 1e3)
                peak = _mib(peak_memory(lambda: model(x), device))
                if peak is not None:
                    row.peak_mib[name] = peak
            else:
                notes.append(f"{name} {err:.1e} off the reference")
    row.ok = all(e < tolerance for e in row.errors.values())
    row.note = "; ".join(notes)
    return row


def _train_row(preset: str, batch: int, image: int, dtype, cfg: BenchConfig, sizes: Sizes) -> Row:
    """A training step (forward, MPRNetLoss, backward, Adam step) of each implementation. Each
    starts from the same weights with a fresh Adam; its first step's loss and gradients are
    checked against the eager reference's first step before any step is timed."""
    device = cfg.device
    impls = model_impls(preset, device, sizes.model_overrides, cfg.compile_model)
    ref, ours = _model_pair(preset, device, sizes.model_overrides)
    initial = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, image, image, device=device, generator=g)
    y = torch.rand(batch, 3, image, image, device=device, generator=g)
    half = dtype != torch.float32
    row = Row(kind="model", name="mprnet_training_step", preset=preset, shape=list(x.shape), device=device,
              dtype=("autocast " if half else "") + str(dtype).replace("torch.", ""), backend="-",
              mode="training step")
    tolerance = model_tolerance(device, dtype)
    notes = []
    expected = None
    try:
        for name, (model, weights, loss_fn) in impls.items():
            weights.load_state_dict(initial)
            weights.train()
            step, body, zero_grad = training_step(model, weights, loss_fn, x, y, dtype)
            try:
                result = (step().detach().float(), flat_grads(weights))  # the first step
            except Exception as e:  # a compile failure or an out-of-memory is a note
                notes.append(f"{name}: {_short(e)}")
                weights.zero_grad(set_to_none=True)
                del step, body, zero_grad
                _free_device_memory(device)
                continue
            if name == "eager":
                expected, err = result, 0.0
            elif expected is None:
                notes.append(f"{name} not timed: no reference step to check it against")
                continue
            else:
                err = first_step_error(result, expected)
            del result
            row.errors[name] = err
            if err < tolerance:
                setattr(row, f"{name}_ms", median_time(step, device, sizes.train_warmup, sizes.train_reps) * 1e3)
                peak = _mib(peak_memory(body, device, before=zero_grad))
                if peak is not None:
                    row.peak_mib[name] = peak
            else:
                notes.append(f"{name} {err:.1e} off the reference's first step (loss and gradients)")
            zero_grad()
            del step, body, zero_grad  # and the optimizer with them
    finally:
        for m in (ref, ours):
            m.load_state_dict(initial)
            m.zero_grad(set_to_none=True)
            m.eval()
        _free_device_memory(device)
    row.ok = all(e < tolerance for e in row.errors.values())
    row.note = "; ".join(notes)
    return row


def plan(cfg: BenchConfig) -> List[tuple]:
    """The cases `run` times, as (label, thunk) pairs; a thunk returns a list of Rows."""
    sizes = cfg.resolved_sizes()
    cases = []
    copy_bw = {}

    def bw():
        if "bw" not in copy_bw:
            copy_bw["bw"] = copy_bandwidth(cfg.device)
        return copy_bw["bw"]

    # Quick: the shape carrying most of each op's traffic; full: the three heaviest. A call
    # another preset already makes runs once (op_cases).
    presets = cfg.selected_presets()
    found = {op: op_cases(op, presets, sizes.batch, sizes.image, 3 if cfg.full else 1) for op in cfg.selected_ops()}
    for preset in presets:
        for op in cfg.selected_ops():
            for case in [c for c in found[op] if c.preset == preset]:
                for dtype in cfg.dtypes():
                    for mode in cfg.op_modes():
                        label = (f"{op}{' fwd' if mode == 'forward' else ''} {preset} "
                                 f"{'x'.join(map(str, case.shape))} {str(dtype)[6:]}")
                        # Compiling is per shape and dtype: only the heaviest shape is compiled.
                        cases.append((label, lambda op=op, preset=preset, case=case, dtype=dtype, mode=mode: _op_rows(
                            OP_BENCHES[op], preset, case.shape, dtype, cfg, sizes, bw(), compile_=case.rank == 0,
                            mode=mode)))
        if cfg.with_model():
            for image in sizes.model_images:
                for dtype in cfg.model_dtypes():
                    label = f"MPRNet {preset} {image}x{image} {str(dtype)[6:]}"
                    cases.append((label, lambda preset=preset, image=image, dtype=dtype: [
                        _model_row(preset, image, dtype, cfg, sizes)]))
            for dtype in cfg.train_dtypes():
                b, i = sizes.train_batch, sizes.train_image
                label = f"MPRNet training step {preset} {b}x3x{i}x{i} {str(dtype)[6:]}"
                cases.append((label, lambda preset=preset, dtype=dtype: [
                    _train_row(preset, sizes.train_batch, sizes.train_image, dtype, cfg, sizes)]))
    return cases


def run(cfg: BenchConfig) -> List[Row]:
    cases = plan(cfg)
    progress = _Progress(len(cases), cfg.progress)
    rows: List[Row] = []
    try:
        for label, thunk in cases:
            progress.step(label)
            rows.extend(thunk())
            progress.advance()
    finally:
        progress.close()
        _models.clear()
        _compiled.clear()
    return rows


# ---------------------------------------------------------------------------------- reports
def _ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


#: Implementations in the order tables and plots show them.
IMPLS = ("ours", "eager", "compile", "ours_compile")


def display_name(r: Row) -> str:
    if r.kind == "model":
        return "MPRNet inference" if r.name == "mprnet_inference" else "MPRNet training step"
    return r.name + (" (fwd)" if r.mode == "forward" else "")


def format_table(rows: Sequence[Row]) -> str:
    """The table `mprnet-kernels bench` prints. The ours+compile and peak-memory columns appear
    when some row has them (model rows)."""
    with_oc = any(r.ours_compile_ms is not None for r in rows)
    peak_impls = [i for i in IMPLS if any(i in r.peak_mib for r in rows)]
    header = ["op / model", "preset", "shape", "device", "dtype", "backend", "ours ms", "eager ms",
              "compile ms"] + (["ours+compile ms"] if with_oc else []) + ["speedup", "GB/s", "% copy"]
    if peak_impls:
        header.append("peak MiB " + "/".join(i.replace("ours_compile", "ours+compile") for i in peak_impls))
    right = set(range(6, len(header)))
    header.append("")
    lines = []
    for r in rows:
        cells = [display_name(r), r.preset, "x".join(map(str, r.shape)), r.device, r.dtype, r.backend,
                 _ms(r.ours_ms), _ms(r.eager_ms), _ms(r.compile_ms)]
        if with_oc:
            cells.append(_ms(r.ours_compile_ms))
        cells += ["-" if r.speedup is None else f"{r.speedup:.2f}x",
                  "-" if r.gb_per_s is None else f"{r.gb_per_s:.1f}",
                  "-" if r.pct_of_copy is None else f"{r.pct_of_copy:.0f}%"]
        if peak_impls:
            cells.append("-" if not r.peak_mib else "/".join(
                "-" if r.peak_mib.get(i) is None else f"{r.peak_mib[i]:.0f}" for i in peak_impls))
        cells.append(("ok" if r.ok else "FAIL") + (f" ({r.note})" if r.note else ""))
        lines.append(cells)
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header) - 1)]

    def fmt(cells):
        out = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out + [str(cells[-1])]).rstrip()

    return "\n".join([fmt(header), fmt(["-" * w for w in widths] + [""])] + [fmt(line) for line in lines])


def _git(*args: str) -> Optional[str]:
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    from .version import __version__

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit = _git("rev-parse", "HEAD")
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "versions": {"mprnet_kernels": __version__, "torch": torch.__version__, "cuda": torch.version.cuda,
                     "triton": triton_version, "python": platform.python_version()},
        "commit": commit,
        "dirty": None if commit is None else bool(_git("status", "--porcelain")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def results_dict(cfg: BenchConfig, rows: Sequence[Row], verify_results: Sequence, seconds: float) -> dict:
    sizes = cfg.resolved_sizes()
    return {
        **environment(cfg.device),
        "copy_gb_per_s": round(copy_bandwidth(cfg.device) / 1e9, 2) if any(r.kind == "op" for r in rows) else None,
        "memory_measure": MEMORY_MEASURE.get(torch.device(cfg.device).type),
        "config": {"full": cfg.full, "compile": cfg.compile, "presets": cfg.selected_presets(),
                   "ops": cfg.selected_ops() + (["model"] if cfg.with_model() else []),
                   "sizes": {"batch": sizes.batch, "image": sizes.image, "model_images": list(sizes.model_images),
                             "warmup": sizes.warmup, "reps": sizes.reps,
                             "model_reps": sizes.model_reps, "model_overrides": sizes.model_overrides,
                             "train_batch": sizes.train_batch, "train_image": sizes.train_image,
                             "train_warmup": sizes.train_warmup, "train_reps": sizes.train_reps},
                   "op_modes": cfg.op_modes(), "model_dtypes": [str(d)[6:] for d in cfg.model_dtypes()],
                   "train_dtypes": [str(d)[6:] for d in cfg.train_dtypes()],
                   "compile_model": cfg.compile_model, "train_lr": TRAIN_LR},
        "verify": [{"op": v.op, "device": v.device, "backend": v.backend, "dtype": str(v.dtype).replace("torch.", ""),
                    "forward": v.forward, "backward": v.backward, "tolerance": v.tolerance, "ok": v.ok}
                   for v in verify_results],
        "rows": [{**asdict(r), "speedup": r.speedup} for r in rows],
        "seconds": round(seconds, 1),
    }


def matplotlib_missing() -> Optional[str]:
    """None when plots can be drawn, else the message to show."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ("--plot needs matplotlib, which is not installed: pip install matplotlib "
                "(or install the bench extra: pip install 'mprnet-kernels[bench]')")
    return None


def write_plots(rows: Sequence[Row], directory, copy_gb_per_s: Optional[float] = None) -> List[Path]:
    """PNG plots into `directory`, returning their paths. ops_time.png: median time of ours,
    eager and compile per op (one panel each) and case (shape, dtype, pass, backend);
    ops_bandwidth.png: ours' achieved GB/s per op and case against the copy bandwidth (measured
    here unless `copy_gb_per_s` is given); model_inference.png and model_training.png: time and
    peak memory of each implementation per preset, shape and dtype. Plots without rows are not
    written. Needs matplotlib (see matplotlib_missing)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    colors = {"ours": "tab:green", "eager": "tab:blue", "compile": "tab:orange", "ours_compile": "tab:olive"}

    def case_label(r: Row) -> str:
        pass_ = {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(r.mode, "")
        backend = "" if r.backend in ("-", "cpu") else f" {r.backend}"
        return f"{r.preset} {'x'.join(map(str, r.shape))}\n{r.dtype} {pass_}{backend}".strip()

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = directory / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def grouped_bars(ax, selected, values_of, impls, ylabel, log=False):
        present = [i for i in impls if any(values_of(r, i) for r in selected)]
        width = 0.8 / max(len(present), 1)
        values = [v for r in selected for i in present for v in [values_of(r, i)] if v]
        if log and values:
            # Log bars start below the smallest value, so that their heights compare.
            ax.set_yscale("log")
            ax.set_ylim(min(values) / 4, max(values) * 2)
        for k, impl in enumerate(present):
            xs = [i + (k - (len(present) - 1) / 2) * width for i in range(len(selected))]
            bars = ax.bar(xs, [values_of(r, impl) or 0 for r in selected], width, label=impl.replace("_", "+"),
                          color=colors.get(impl))
            ax.bar_label(bars, labels=[_ms(values_of(r, impl)) if values_of(r, impl) else "" for r in selected],
                         fontsize=6)
        ax.set_xticks(range(len(selected)))
        ax.set_xticklabels([case_label(r) for r in selected], fontsize=7)
        ax.set_ylabel(ylabel)
        if present:
            ax.legend(fontsize=7)

    ops = [r for r in rows if r.kind == "op"]
    device = rows[0].device if rows else "cpu"
    names = list(dict.fromkeys(r.name for r in ops))

    def per_op_figure(selected_of, fname, draw):
        panels = [(n, selected_of(n)) for n in names]
        panels = [(n, sel) for n, sel in panels if sel]
        if not panels:
            return
        width = max(6.0, 1.1 * max(len(sel) for _, sel in panels))
        fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.2 * len(panels)), squeeze=False)
        for ax, (name, sel) in zip(axes[:, 0], panels):
            draw(ax, name, sel)
        save(fig, fname)

    def draw_time(ax, name, sel):
        grouped_bars(ax, sel, lambda r, i: getattr(r, f"{i}_ms"), ("ours", "eager", "compile"), "median ms", log=True)
        ax.set_title(f"{name}: time per call ({device})", fontsize=9)

    copy = copy_gb_per_s if copy_gb_per_s is not None else (
        copy_bandwidth(device) / 1e9 if any(r.gb_per_s is not None for r in ops) else None)

    def draw_bandwidth(ax, name, sel):
        ax.bar(range(len(sel)), [r.gb_per_s for r in sel], color=colors["ours"], label="ours")
        ax.axhline(copy, color="k", linestyle="--", label=f"copy {copy:.1f} GB/s")
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([case_label(r) for r in sel], fontsize=7)
        ax.set_ylabel("GB/s (OPS.md bytes / time)")
        ax.set_title(f"{name}: achieved bandwidth vs copy ({device})", fontsize=9)
        ax.legend(fontsize=7)

    per_op_figure(lambda n: [r for r in ops if r.name == n], "ops_time.png", draw_time)
    per_op_figure(lambda n: [r for r in ops if r.name == n and r.gb_per_s is not None], "ops_bandwidth.png",
                  draw_bandwidth)

    for name, fname, title in (("mprnet_inference", "model_inference.png", "MPRNet inference"),
                               ("mprnet_training_step", "model_training.png",
                                "MPRNet training step (forward, MPRNetLoss, backward, Adam)")):
        selected = [r for r in rows if r.kind == "model" and r.name == name]
        if not selected:
            continue
        has_memory = any(r.peak_mib for r in selected)
        fig, axes = plt.subplots(2 if has_memory else 1, 1, squeeze=False,
                                 figsize=(max(6.0, 2.2 * len(selected)), 7 if has_memory else 3.8))
        grouped_bars(axes[0, 0], selected, lambda r, i: getattr(r, f"{i}_ms"), IMPLS, "median ms")
        axes[0, 0].set_title(f"{title} ({device}): time", fontsize=9)
        if has_memory:
            grouped_bars(axes[1, 0], selected, lambda r, i: r.peak_mib.get(i), IMPLS, "peak MiB in the call")
            axes[1, 0].set_title(f"{title.split(' (')[0]} ({device}): peak memory", fontsize=9)
        save(fig, fname)
    return written
