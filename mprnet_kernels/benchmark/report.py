"""What a `bench` run reports: the table, the environment (device, versions, commit) and the
JSON document."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..version import __version__
from .config import BenchConfig
from .model_runs import TRAIN_LR
from .results import IMPLS, Row, format_ms
from .timing import MEMORY_MEASURE, copy_bandwidth

__all__ = ["display_name", "environment", "format_ms", "format_table", "results_dict"]


def display_name(r: Row) -> str:
    if r.kind == "model":
        return {"mprnet_inference": "MPRNet inference", "mprnet_inference_local": "MPRNet inference, local CA",
                "mprnet_training_step": "MPRNet training step"}[r.name]
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
                 format_ms(r.ours_ms), format_ms(r.eager_ms), format_ms(r.compile_ms)]
        if with_oc:
            cells.append(format_ms(r.ours_compile_ms))
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
    root = Path(__file__).resolve().parents[2]  # the checkout, when run from one
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
                   "compile_model": cfg.compile_model, "local_attention": cfg.local_attention,
                   "train_lr": TRAIN_LR},
        "verify": [{"op": v.op, "device": v.device, "backend": v.backend, "dtype": str(v.dtype).replace("torch.", ""),
                    "forward": v.forward, "backward": v.backward, "tolerance": v.tolerance, "ok": v.ok}
                   for v in verify_results],
        "rows": [{**asdict(r), "speedup": r.speedup} for r in rows],
        "seconds": round(seconds, 1),
    }


