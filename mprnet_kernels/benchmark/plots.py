"""PNG plots of a `bench` run (matplotlib, the bench extra)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from .report import format_ms
from .results import IMPLS, Row
from .timing import copy_bandwidth

__all__ = ["matplotlib_missing", "write_plots"]


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
            ax.bar_label(bars, labels=[format_ms(values_of(r, impl)) if values_of(r, impl) else "" for r in selected],
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
        ax.set_ylabel("GB/s (docs/OPS.md bytes / time)")
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
