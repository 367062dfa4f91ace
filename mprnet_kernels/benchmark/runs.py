"""A `bench` run: the plan of cases a BenchConfig asks for, run in order behind a progress bar."""

from __future__ import annotations

import sys
from typing import List

from ..registry import OPS
from .cases import op_cases
from .config import BenchConfig
from .model_runs import clear_models, local_row, model_row, train_row
from .op_runs import op_rows
from .results import Row
from .timing import copy_bandwidth

__all__ = ["plan", "run"]


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
                        cases.append((label, lambda op=op, preset=preset, case=case, dtype=dtype, mode=mode: op_rows(
                            OPS[op], preset, case.shape, dtype, cfg, sizes, bw(), compile_=case.rank == 0,
                            mode=mode)))
        if cfg.with_model():
            for image in sizes.model_images:
                for dtype in cfg.model_dtypes():
                    label = f"MPRNet {preset} {image}x{image} {str(dtype)[6:]}"
                    cases.append((label, lambda preset=preset, image=image, dtype=dtype: [
                        model_row(preset, image, dtype, cfg, sizes)]))
                    if cfg.local_attention:
                        cases.append((label + " local CA", lambda preset=preset, image=image, dtype=dtype: [
                            local_row(preset, image, dtype, cfg, sizes)]))
            for dtype in cfg.train_dtypes():
                b, i = sizes.train_batch, sizes.train_image
                label = f"MPRNet training step {preset} {b}x3x{i}x{i} {str(dtype)[6:]}"
                cases.append((label, lambda preset=preset, dtype=dtype: [
                    train_row(preset, sizes.train_batch, sizes.train_image, dtype, cfg, sizes)]))
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
        clear_models()
    return rows


