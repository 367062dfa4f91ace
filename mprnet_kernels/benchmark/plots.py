"""PNG plots of a `bench` run (matplotlib, the bench extra).

Every axis is linear: on a log axis bar heights do not compare (46 vs 82 ms looked like half the
height). Ops are shown as speedups, since one op's cases span orders of magnitude in time; the
model as time, whose cases are few. Legends sit outside the axes and the copy-bandwidth line is
labelled on itself, so that nothing covers the data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .results import IMPLS, Row, format_ms
from .timing import copy_bandwidth

__all__ = ["figures", "matplotlib_missing", "write_plots"]

COLORS = {"ours": "tab:green", "eager": "tab:blue", "compile": "tab:orange", "ours+compile": "tab:olive"}


def matplotlib_missing() -> Optional[str]:
    """None when plots can be drawn, else the message to show."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ("--plot needs matplotlib, which is not installed: pip install matplotlib "
                "(or install the bench extra: pip install 'mprnet-kernels[bench]')")
    return None


def _case_label(r: Row, with_time: bool = False) -> str:
    pass_ = {"forward": "fwd", "forward+backward": "fwd+bwd"}.get(r.mode, "")
    backend = "" if r.backend in ("-", "cpu") else f" {r.backend}"
    label = f"{r.preset} {'x'.join(map(str, r.shape))}\n{r.dtype} {pass_}{backend}".strip()
    return label + (f"\nours {format_ms(r.ours_ms)} ms" if with_time else "")


def _grouped_bars(ax, selected, series: Dict[str, List[Optional[float]]], labels, ylabel: str) -> None:
    """One group of bars per case, one bar per series (missing values leave a gap)."""
    present = [name for name, values in series.items() if any(values)]
    width = 0.8 / max(len(present), 1)
    for k, name in enumerate(present):
        xs = [i + (k - (len(present) - 1) / 2) * width for i in range(len(selected))]
        values = series[name]
        bars = ax.bar(xs, [v or 0 for v in values], width, label=name, color=COLORS.get(name.split(" ")[-1]))
        ax.bar_label(bars, labels=[labels(v) if v else "" for v in values], fontsize=6)
    ax.set_xticks(range(len(selected)))
    ax.set_xticklabels([_case_label(r) if not isinstance(r, str) else r for r in selected], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.15 * max([v for values in series.values() for v in values if v] or [1.0]))
    if present:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def figures(rows: Sequence[Row], copy_gb_per_s: Optional[float] = None) -> Dict[str, object]:
    """{file name: matplotlib Figure} for the plots that have rows:

    - ops_speedup.png: per op (one panel each) and case, ours' speedup over eager and over
      torch.compile of the eager reference (eager_ms / ours_ms), a line at 1x;
    - ops_bandwidth.png: ours' achieved GB/s per op and case, each bar labelled with its % of
      the copy bandwidth (measured here unless `copy_gb_per_s` is given), drawn as a line;
    - model_inference.png, model_inference_local.png, model_training.png: median time of each
      implementation per preset, shape and dtype, and peak memory when measured.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: Dict[str, object] = {}
    ops = [r for r in rows if r.kind == "op"]
    device = rows[0].device if rows else "cpu"
    names = list(dict.fromkeys(r.name for r in ops))

    def per_op_figure(selected_of, fname, draw):
        panels = [(n, selected_of(n)) for n in names]
        panels = [(n, sel) for n, sel in panels if sel]
        if not panels:
            return
        width = max(7.0, 1.2 * max(len(sel) for _, sel in panels) + 1.5)
        fig, axes = plt.subplots(len(panels), 1, figsize=(width, 3.4 * len(panels)), squeeze=False)
        for ax, (name, sel) in zip(axes[:, 0], panels):
            draw(ax, name, sel)
        fig.tight_layout()
        out[fname] = fig

    def draw_speedup(ax, name, sel):
        series = {f"vs {impl}": [getattr(r, f"{impl}_ms") / r.ours_ms if getattr(r, f"{impl}_ms") and r.ours_ms
                                 else None for r in sel] for impl in ("eager", "compile")}
        _grouped_bars(ax, [_case_label(r, with_time=True) for r in sel], series, lambda v: f"{v:.2f}x",
                      "speedup of ours (x)")
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_title(f"{name}: ours' speedup, time of the other / ours ({device})", fontsize=9)

    copy = copy_gb_per_s if copy_gb_per_s is not None else (
        copy_bandwidth(device) / 1e9 if any(r.gb_per_s is not None for r in ops) else None)

    def draw_bandwidth(ax, name, sel):
        bars = ax.bar(range(len(sel)), [r.gb_per_s for r in sel], color=COLORS["ours"])
        ax.bar_label(bars, labels=[f"{100 * r.gb_per_s / copy:.0f}%" for r in sel], fontsize=6)
        ax.axhline(copy, color="k", linestyle="--")
        ax.set_ylim(0, 1.2 * max(copy, max(r.gb_per_s for r in sel)))
        ax.text(1.0, copy, f" copy\n {copy:.1f} GB/s", transform=ax.get_yaxis_transform(), va="center",
                fontsize=7)
        ax.set_xticks(range(len(sel)))
        ax.set_xticklabels([_case_label(r) for r in sel], fontsize=7)
        ax.set_ylabel("GB/s (docs/OPS.md bytes / time)")
        ax.set_title(f"{name}: ours' achieved bandwidth, % of copy ({device})", fontsize=9)

    per_op_figure(lambda n: [r for r in ops if r.name == n and r.ours_ms], "ops_speedup.png", draw_speedup)
    per_op_figure(lambda n: [r for r in ops if r.name == n and r.gb_per_s is not None], "ops_bandwidth.png",
                  draw_bandwidth)

    for name, fname, title in (("mprnet_inference", "model_inference.png", "MPRNet inference"),
                               ("mprnet_inference_local", "model_inference_local.png",
                                "MPRNet inference, local channel attention"),
                               ("mprnet_training_step", "model_training.png",
                                "MPRNet training step (forward, MPRNetLoss, backward, Adam)")):
        selected = [r for r in rows if r.kind == "model" and r.name == name]
        if not selected:
            continue
        has_memory = any(r.peak_mib for r in selected)
        fig, axes = plt.subplots(2 if has_memory else 1, 1, squeeze=False,
                                 figsize=(max(7.0, 2.2 * len(selected) + 1.5), 7 if has_memory else 3.8))
        label = lambda i: i.replace("_", "+")  # noqa: E731
        _grouped_bars(axes[0, 0], selected, {label(i): [getattr(r, f"{i}_ms") for r in selected] for i in IMPLS},
                      format_ms, "median ms")
        axes[0, 0].set_title(f"{title} ({device}): time", fontsize=9)
        if has_memory:
            _grouped_bars(axes[1, 0], selected, {label(i): [r.peak_mib.get(i) for r in selected] for i in IMPLS},
                          lambda v: f"{v:.0f}", "peak MiB in the call")
            axes[1, 0].set_title(f"{title.split(' (')[0]} ({device}): peak memory", fontsize=9)
        fig.tight_layout()
        out[fname] = fig
    return out


def write_plots(rows: Sequence[Row], directory, copy_gb_per_s: Optional[float] = None) -> List[Path]:
    """The PNGs of `figures` written into `directory`; their paths. Needs matplotlib (see
    matplotlib_missing)."""
    import matplotlib.pyplot as plt

    directory = Path(directory)
    written: List[Path] = []
    for name, fig in figures(rows, copy_gb_per_s).items():
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        fig.savefig(path, dpi=110, bbox_inches="tight")  # tight: keeps the outside legends
        plt.close(fig)
        written.append(path)
    return written
