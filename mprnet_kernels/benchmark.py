"""Timing for every benchmark of the project: the harness (medians, bytes moved, the
copy-bandwidth roofline) and the runs behind `mprnet-kernels bench`.

bench/harness.py (the pytest-benchmark suite) re-exports the harness from here, so there is one
home for timing code; this module is part of the installed package and imports nothing from the
repository's bench/ directory.

Memory-bound kernels are judged by achieved bandwidth = bytes the op must move / median time,
against the bandwidth of a plain device-to-device copy measured in the same run (a copy reads and
writes every byte once, the best a streaming kernel can do). Bytes are the OPS.md pass counts
times the size of the op's main operand (see `OP_BENCHES`).

`mprnet-kernels bench` = `run(BenchConfig(...))`: each op's forward+backward, ours vs the eager
reference vs torch.compile of the reference, at shapes from `mprnet_kernels.shapes`, and the fast
model vs the reference at inference. Every timed implementation is first checked against the
float64 reference on the same inputs; a mismatch marks the row FAIL and is not timed.
"""

from __future__ import annotations

import contextlib
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
    "median_time", "run", "synchronize", "tensor_bytes", "write_plots",
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
        OpBench("sam_gate", 9, _sam_gate_inputs, lambda p: ops.sam_gate, lambda p: _sam_gate_reference),
        OpBench("ca_tail", 8, _ca_tail_inputs, lambda p: ca_tail, lambda p: _ca_tail_reference),
        OpBench("charbonnier_loss", 5, _image_pair_inputs, lambda p: ops.charbonnier_loss,
                lambda p: reference.charbonnier_loss),
        OpBench("edge_loss", 5, _image_pair_inputs, lambda p: ops.edge_loss, lambda p: reference.edge_loss,
                no_layout),
        OpBench("mprnet_loss", 13, _stage_outputs_inputs, mprnet_loss_ours, mprnet_loss_eager, no_layout),
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
    """Input sizes: op shapes come from the model at (batch, 3, image, image); the model rows
    run at each of `model_images` with batch 1."""
    batch: int
    image: int
    model_images: Sequence[int]
    warmup: int
    reps: int
    model_overrides: dict = field(default_factory=dict)  # from_preset overrides (tests only)
    model_reps: Optional[int] = None  # timed model calls (default: reps), one warm-up fewer


def default_sizes(device: str, full: bool) -> Sizes:
    if device == "cuda":
        return Sizes(16, 256, (256, 512), 5, 20) if full else Sizes(4, 256, (256,), 3, 10)
    # This 2-core CPU: the quick run stays under 3 minutes, verification included.
    return Sizes(4, 256, (256,), 2, 5) if full else Sizes(1, 256, (64,), 2, 10, model_reps=3)


#: Hidden `--tiny` (tests): every shape from a 16x16 input, one timed call, a one-CAB-per-group
#: model (a cold first forward of the full deblur model costs ~10 s of oneDNN set-up here).
TINY = Sizes(1, 16, (16,), 0, 1, {"num_cab": 1})


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


@dataclass
class Row:
    kind: str                    # "op" or "model"
    name: str                    # op name, or "mprnet_inference"
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


def check_against_reference(fn, reference64, inputs: Inputs) -> float:
    """Worst relative error of fn's output and input gradients against `reference64`
    (reference_float64's result)."""
    ref_out, ref_grads = reference64
    out, grads = _output_and_grads(fn, inputs)
    return max([_rel_err(out.float(), ref_out)] + [_rel_err(a.float(), b) for a, b in zip(grads, ref_grads)])


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
             compile_: bool = True) -> List[Row]:
    from .ops import _backend

    device = cfg.device
    g = torch.Generator(device=device).manual_seed(0)
    inputs = bench.make_inputs(tuple(shape), preset, device, dtype, g)
    eager = bench.eager(preset)
    backends = ["cpu"] if device == "cpu" else (_backend.available_backends(bench.op) or ["none"])
    base = dict(kind="op", name=bench.op, preset=preset, shape=list(shape), device=device,
                dtype=str(dtype).replace("torch.", ""))
    bytes_moved = bench.passes * tensor_bytes(inputs.main)

    def step(fn):
        return lambda: torch.autograd.grad(fn(*inputs.args), inputs.leaves, inputs.grad)

    reference64 = reference_float64(eager, inputs)
    # The reference implementations, checked then timed once for every backend's row.
    shared_errors, shared_times, failed = {}, {}, []
    impls = {"eager": eager}
    if cfg.compile and compile_:
        impls["compile"] = lazily_compiled(eager, **bench.compile_options)
    for name, fn in impls.items():
        try:
            err = check_against_reference(fn, reference64, inputs)
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
                err = check_against_reference(ours, reference64, inputs)
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


def _model_pair(preset: str, device: str, overrides: Optional[dict] = None):
    from . import reference
    from .model import MPRNet

    overrides = overrides or {}
    key = (preset, device, tuple(sorted(overrides.items())))
    if key not in _models:
        _models.clear()  # one pair at a time: the deblur model is 20M parameters
        torch.manual_seed(0)
        ref = reference.MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours = MPRNet.from_preset(preset, **overrides).to(device).eval()
        ours.load_state_dict(ref.state_dict())
        _models[key] = (ref, ours)
    return _models[key]


def _model_row(preset: str, image: int, dtype, cfg: BenchConfig, sizes: Sizes) -> Row:
    device = cfg.device
    ref, ours = _model_pair(preset, device, sizes.model_overrides)
    x = torch.rand(1, 3, image, image, device=device, generator=torch.Generator(device=device).manual_seed(0))
    half = dtype != torch.float32
    row = Row(kind="model", name="mprnet_inference", preset=preset, shape=list(x.shape), device=device,
              dtype=("autocast " if half else "") + str(dtype).replace("torch.", ""), backend="-")
    autocast = torch.autocast(device, dtype=dtype if half else torch.bfloat16, enabled=half)
    # CUDA float32 convolutions may run in TF32 (PyTorch's default for cuDNN).
    tolerance = 1e-4 if device == "cpu" and not half else 2e-2
    notes = []
    with torch.no_grad(), autocast:
        expected = ref(x)[0].float()
        impls = {"ours": ours, "eager": ref}
        if cfg.compile_model:
            impls["compile"] = lazily_compiled(ref)
        for name, model in impls.items():
            try:
                # The eager reference is the yardstick itself (error 0 by definition).
                err = 0.0 if name == "eager" else _rel_err(model(x)[0].float(), expected)
            except Exception as e:
                notes.append(f"{name}: {type(e).__name__}")
                continue
            row.errors[name] = err
            if err < tolerance:
                reps = sizes.model_reps or sizes.reps
                setattr(row, f"{name}_ms", median_time(lambda: model(x), device, max(sizes.warmup - 1, 0), reps) * 1e3)
            else:
                notes.append(f"{name} {err:.1e} off the reference")
    row.ok = all(e < tolerance for e in row.errors.values())
    row.note = "; ".join(notes)
    return row


def plan(cfg: BenchConfig) -> List[tuple]:
    """The cases `run` times, as (label, thunk) pairs; a thunk returns a list of Rows."""
    from .shapes import shapes_for

    sizes = cfg.resolved_sizes()
    cases = []
    copy_bw = {}

    def bw():
        if "bw" not in copy_bw:
            copy_bw["bw"] = copy_bandwidth(cfg.device)
        return copy_bw["bw"]

    done = set()
    for preset in cfg.selected_presets():
        for op in cfg.selected_ops():
            found = shapes_for(op, preset, sizes.batch, sizes.image, sizes.image)
            # Quick: the shape carrying most of the op's traffic; full: the three heaviest.
            for rank, s in enumerate(found[: 3 if cfg.full else 1]):
                for dtype in cfg.dtypes():
                    # The same call under another preset (the losses' stage outputs are the
                    # same for all three; deblur and derain share a loss recipe) runs once.
                    key = (op, s.shape, dtype, repr(LOSS_RECIPES[preset]) if op == "mprnet_loss" else None)
                    if key in done:
                        continue
                    done.add(key)
                    label = f"{op} {preset} {'x'.join(map(str, s.shape))} {str(dtype)[6:]}"
                    # Compiling is per shape and dtype: only the heaviest shape is compiled.
                    cases.append((label, lambda op=op, preset=preset, s=s, dtype=dtype, rank=rank: _op_rows(
                        OP_BENCHES[op], preset, s.shape, dtype, cfg, sizes, bw(), compile_=rank == 0)))
        if cfg.with_model():
            model_dtypes = [torch.float32] + ([torch.bfloat16] if cfg.full and cfg.device == "cuda" else [])
            for image in sizes.model_images:
                for dtype in model_dtypes:
                    label = f"MPRNet {preset} {image}x{image} {str(dtype)[6:]}"
                    cases.append((label, lambda preset=preset, image=image, dtype=dtype: [
                        _model_row(preset, image, dtype, cfg, sizes)]))
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
    return rows


# ---------------------------------------------------------------------------------- reports
def _ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def format_table(rows: Sequence[Row]) -> str:
    header = ("op / model", "preset", "shape", "device", "dtype", "backend", "ours ms", "eager ms",
              "compile ms", "speedup", "GB/s", "% copy", "")
    lines = []
    for r in rows:
        name = r.name if r.kind == "op" else "MPRNet inference"
        lines.append((name, r.preset, "x".join(map(str, r.shape)), r.device, r.dtype, r.backend,
                      _ms(r.ours_ms), _ms(r.eager_ms), _ms(r.compile_ms),
                      "-" if r.speedup is None else f"{r.speedup:.2f}x",
                      "-" if r.gb_per_s is None else f"{r.gb_per_s:.1f}",
                      "-" if r.pct_of_copy is None else f"{r.pct_of_copy:.0f}%",
                      ("ok" if r.ok else "FAIL") + (f" ({r.note})" if r.note else "")))
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header) - 1)]
    right = {6, 7, 8, 9, 10, 11}

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
        "config": {"full": cfg.full, "compile": cfg.compile, "presets": cfg.selected_presets(),
                   "ops": cfg.selected_ops() + (["model"] if cfg.with_model() else []),
                   "sizes": {"batch": sizes.batch, "image": sizes.image, "model_images": list(sizes.model_images),
                             "warmup": sizes.warmup, "reps": sizes.reps,
                             "model_reps": sizes.model_reps, "model_overrides": sizes.model_overrides}},
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


def write_plots(rows: Sequence[Row], directory) -> List[Path]:
    """PNG plots into `directory`: op times (ours/eager/compile) and achieved GB/s per op and
    shape, and the model bars. Needs matplotlib (see matplotlib_missing)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    def label(r):
        return f"{r.name}\n{r.preset} {'x'.join(map(str, r.shape))}\n{r.dtype} {r.backend}"

    def bars(selected, fname, title):
        if not selected:
            return
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(selected)), 4.5))
        width = 0.27
        for k, impl in enumerate(("ours", "eager", "compile")):
            values = [getattr(r, f"{impl}_ms") or 0 for r in selected]
            ax.bar([i + (k - 1) * width for i in range(len(selected))], values, width, label=impl)
        ax.set_xticks(range(len(selected)))
        ax.set_xticklabels([label(r) for r in selected], fontsize=7)
        ax.set_ylabel("median time (ms)")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        path = directory / fname
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    ops = [r for r in rows if r.kind == "op"]
    models = [r for r in rows if r.kind == "model"]
    device = rows[0].device if rows else "cpu"
    bars(ops, "ops_time.png", f"forward+backward per op ({device})")
    bars(models, "model_inference.png", f"MPRNet inference ({device})")
    with_bw = [r for r in ops if r.gb_per_s is not None]
    if with_bw:
        fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(with_bw)), 4.5))
        ax.bar(range(len(with_bw)), [r.gb_per_s for r in with_bw])
        copy = copy_bandwidth(device) / 1e9
        ax.axhline(copy, color="k", linestyle="--", label=f"copy {copy:.0f} GB/s")
        ax.set_xticks(range(len(with_bw)))
        ax.set_xticklabels([label(r) for r in with_bw], fontsize=7)
        ax.set_ylabel("achieved GB/s (OPS.md bytes / median time)")
        ax.set_title(f"roofline: fused ops vs copy bandwidth ({device})")
        ax.legend()
        fig.tight_layout()
        path = directory / "ops_bandwidth.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
