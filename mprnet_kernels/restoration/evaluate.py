"""evaluate(): PSNR and SSIM of an MPRNet on paired input/target folders, per image and their means.

Python: ``evaluate(model_or_checkpoint, input_dir, target_dir, *, tile=None, overlap=32, ...)``
restores every input with restore() and scores it against the target of the same file-name stem
(``a.jpg`` pairs with ``a.png``); the `mprnet-kernels evaluate` command is evaluate_cli.py.

What is scored, and why (upstream's scripts, github.com/swz30/MPRNet):

- The output is scored as the file ``save_dir`` would hold: clamped, rounded to 8 bits per
  channel (16 for 16-bit grayscale), grayscale inputs back to one channel. Upstream's test.py
  scripts write 8-bit PNGs and its MATLAB scripts score those files. ``quantize=False`` scores
  the float output instead, as upstream's training validation (torchPSNR) does.
- PSNR over all pixels and the three RGB channels with peak 1 on [0, 1] images, i.e. peak 255
  on 8-bit ones: MATLAB's ``psnr`` on uint8 RGB (Deblurring/evaluate_GOPRO_HIDE.m) and upstream's
  torchPSNR give the same number. The mean is the mean of the per-image PSNRs, as upstream's.
- SSIM (metrics.ssim, border "valid"): Wang et al.'s index on each RGB channel, averaged. This
  is not any one of upstream's MATLAB numbers: evaluate_GOPRO_HIDE.m calls MATLAB's ``ssim`` on
  H x W x 3 arrays, which MATLAB treats as a 3-D volume (a Gaussian across the channels as well);
  Deraining/evaluate_PSNR_SSIM.m scores only the Y channel.
- ``y_channel=True`` adds psnr_y and ssim_y: both metrics on the BT.601 luma of MATLAB's
  rgb2ycbcr (rounded to 8 bits, as MATLAB does for uint8 images, when quantized), which is what
  Deraining/evaluate_PSNR_SSIM.m computes (Y, peak 255, Wang's SSIM_index with L = 255).
  Y-channel numbers run higher than RGB ones; the deraining paper's tables are Y-channel.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..images import ImageReadError, as_written, image_size, list_images, read_image_file, write_png
from ..metrics import SSIM_WINDOW, psnr, rgb_to_y, ssim
from . import attention, check_tiling, local_attention_arguments, restore, tile_count

__all__ = ["evaluate", "Evaluation", "find_pairs", "pair_sizes", "dataset_folders", "METRICS"]

#: What each metric column means (the JSON output carries it).
METRICS = {
    "psnr": "PSNR in dB over the RGB channels, peak 1 on [0, 1] images (255 on 8-bit)",
    "ssim": f"SSIM (Wang et al. 2004: {SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window, sigma 1.5, K1 0.01, K2 0.03, "
            "data range 1, valid positions only) per RGB channel, averaged",
    "psnr_y": "PSNR in dB on the BT.601 Y channel of MATLAB's rgb2ycbcr, peak 255",
    "ssim_y": "SSIM, as above, on the Y channel",
}

#: The folders --data / dataset_folders looks in, in order: the root itself, upstream's test
#: sets (Datasets/GoPro/test/, each Rain set's own folder) and `make-demo-data`'s val/ split.
DATA_LAYOUTS = (".", "test", "val")


@dataclass
class Evaluation:
    """rows: one dict per pair, in the input folder's order (name, input, target, height, width,
    psnr, ssim, with y_channel psnr_y and ssim_y, and note: what reading the files changed, such
    as an alpha channel dropped or an EXIF orientation applied, or None); mean: each metric's
    mean over the rows; settings: how they were computed."""

    rows: List[Dict[str, Any]]
    mean: Dict[str, float]
    settings: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        metrics = {k: v for k, v in METRICS.items() if k in self.mean}
        return {**self.settings, "count": len(self.rows), "metrics": metrics, "mean": dict(self.mean),
                "images": [dict(r) for r in self.rows]}

    def write_json(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def write_csv(self, path) -> None:
        """One row per image (the means are in write_json and on the command's stdout)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(self.rows[0]) if self.rows else ["name"]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def dataset_folders(root, name: str = "data") -> Tuple[Path, Path]:
    """(input folder, target folder) of a dataset root: ROOT/input and ROOT/target, else the same
    under ROOT/test (upstream's GoPro and HIDE layout) or ROOT/val (make-demo-data's). ValueError
    naming `name` when none is there."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{name}: {root}: no such folder")
    for sub in DATA_LAYOUTS:
        base = root / sub
        if (base / "input").is_dir() and (base / "target").is_dir():
            return base / "input", base / "target"
    tried = ", ".join(str(root / sub) for sub in DATA_LAYOUTS)
    raise ValueError(f"{name}: {root} holds no input/ and target/ folders (looked in {tried})")


def _stems(folder: Path, name: str) -> Dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"{name}: {folder}: no such folder")
    files = list_images(folder)
    if not files:
        raise ValueError(f"{name}: {folder}: no image files in this folder")
    by_stem: Dict[str, Path] = {}
    clashes = []
    for f in files:
        other = by_stem.setdefault(f.stem, f)
        if other is not f:
            clashes.append(f"{other.name} and {f.name}")
    if clashes:
        raise ValueError(f"{name}: {folder}: files pair by name without extension, and these share one: "
                         + "; ".join(clashes))
    return by_stem


def _short(items: List[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def find_pairs(input_dir, target_dir,
               names: Sequence[str] = ("input_dir", "target_dir")) -> List[Tuple[str, Path, Path]]:
    """(stem, input path, target path) for every image of input_dir, paired with the target of
    the same stem, in input order. ValueError (naming the argument as `names` says) for a
    missing or empty folder, two files of one stem in a folder, or a file without its pair."""
    inputs = _stems(Path(input_dir), names[0])
    targets = _stems(Path(target_dir), names[1])
    no_target = [s for s in inputs if s not in targets]
    no_input = [s for s in targets if s not in inputs]
    if no_target or no_input:
        parts = []
        if no_target:
            parts.append(f"{len(no_target)} input(s) without a target in {target_dir}: {_short(no_target)}")
        if no_input:
            parts.append(f"{len(no_input)} target(s) without an input in {input_dir}: {_short(no_input)}")
        raise ValueError(f"{names[1]}: inputs and targets pair by file name without extension; " + "; ".join(parts))
    return [(stem, path, targets[stem]) for stem, path in inputs.items()]


def pair_sizes(pairs) -> List[Tuple[int, int]]:
    """Each pair's (height, width) from the headers (find_pairs' pairs); ValueError listing pairs
    of different sizes or images too small for SSIM's window, before any image is restored."""
    sizes, mismatched, small = [], [], []
    for _, inp, tgt in pairs:
        a, b = image_size(inp), image_size(tgt)
        if a != b:
            mismatched.append(f"{inp} is {a[0]}x{a[1]} but {tgt} is {b[0]}x{b[1]}")
        elif min(a) < SSIM_WINDOW:
            small.append(f"{inp} ({a[0]}x{a[1]})")
        sizes.append(a)
    if mismatched:
        more = f"; and {len(mismatched) - 5} more" if len(mismatched) > 5 else ""
        raise ValueError("inputs and targets must have the same size (height x width, EXIF orientation applied): "
                         + "; ".join(mismatched[:5]) + more)
    if small:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels: {_short(small)}")
    return sizes


def _levels(mode: str) -> int:
    return 65535 if mode == "I;16" else 255


def _exact(image: torch.Tensor, levels: int) -> torch.Tensor:
    """image in float64, its float32 values k / levels made exactly k / levels (what MATLAB's
    double(uint8) gives), so scores do not carry float32's 1e-8 rounding; other values as
    they are (a float grayscale file)."""
    x = image.double()
    exact = x.mul(levels).round().div(levels)
    return exact if (exact - x).abs().max() <= 1e-6 else x


def _y(image: torch.Tensor, levels: Optional[int]) -> torch.Tensor:
    y = rgb_to_y(image.double())
    return y if levels is None else y.mul(levels).round().div(levels)


def _model(model_or_checkpoint, device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """The model to run and what to record about it: a module as given, a checkpoint (path or
    dict) loaded to fit (restoration/loading.py) on device (default: cuda when available)."""
    if isinstance(model_or_checkpoint, torch.nn.Module):
        if device is not None:
            raise ValueError("device: only used to load a checkpoint; move the model itself instead")
        return model_or_checkpoint, {}
    if not isinstance(model_or_checkpoint, (str, os.PathLike, Mapping)):
        raise TypeError("model_or_checkpoint: expected an MPRNet module, a checkpoint path or a loaded checkpoint "
                        f"dict, got {type(model_or_checkpoint).__name__}")
    from .loading import load_for_restoring

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_for_restoring(model_or_checkpoint, device=device)
    record = {"config": dict(loaded.config), "task": loaded.task}
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        record = {"checkpoint": os.fspath(model_or_checkpoint), **record}
    return loaded.model, record


def _attention_used(model, local_attention):
    """What the rows were computed with: None for global attention, else set_local_attention's
    train_size and base_size."""
    with attention(model, local_attention):
        used = getattr(model, "local_attention", None)
    return None if used is None else {k: list(v) for k, v in used.items()}


def evaluate(model_or_checkpoint, input_dir, target_dir, *, tile: Optional[int] = None, overlap: int = 32,
             y_channel: bool = False, quantize: bool = True, save_dir=None, device=None,
             progress: Optional[Callable[[int, int], None]] = None,
             on_image: Optional[Callable[[Dict[str, Any]], None]] = None,
             names: Sequence[str] = ("input_dir", "target_dir"), local_attention=None) -> Evaluation:
    """PSNR and SSIM of the model's restorations of input_dir against target_dir (module
    docstring): an Evaluation with one row per pair and the means.

    model_or_checkpoint: an MPRNet module (run where it is), or a checkpoint path / dict (loaded
    on device, default cuda when available, else cpu). tile, overlap: as restore(). y_channel:
    add psnr_y and ssim_y. quantize: score the output as saved (8-bit) rather than its floats.
    save_dir: also write each restoration as save_dir/<stem>.png (in the input's mode, as
    `restore` does). progress(done, total): after every model call, counted over all images
    (tiles with tile, else images). on_image(row): after each image. names: how errors name
    input_dir and target_dir (the command passes its options). local_attention: as restore()'s
    (None: the model's attention as it is).

    Everything is checked before the first image is restored: ValueError for bad arguments,
    missing or empty folders, unpaired files, pairs of different sizes or under 11x11 pixels,
    a save_dir that would overwrite an input or a target, a checkpoint that does not load;
    ImageReadError (a ValueError) for a file that cannot be read.
    """
    check_tiling(tile, overlap)
    local_attention_arguments(local_attention)
    for arg, value in (("y_channel", y_channel), ("quantize", quantize)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg}: expected True or False, got {value!r}")
    for arg, fn in (("progress", progress), ("on_image", on_image)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{arg}: expected a callable or None, got {type(fn).__name__}")
    pairs = find_pairs(input_dir, target_dir, names)
    sizes = pair_sizes(pairs)
    outputs = None
    if save_dir is not None:
        outputs = [Path(save_dir) / f"{stem}.png" for stem, _, _ in pairs]
        ours = {p.resolve() for _, inp, tgt in pairs for p in (inp, tgt)}
        clash = [str(o) for o in outputs if o.resolve() in ours]
        if clash:
            raise ValueError(f"save_dir: {save_dir} would overwrite {_short(clash)}; choose another folder")
        folded = {}
        for o in outputs:
            folded.setdefault(o.name.casefold(), []).append(o.name)
        same = [" and ".join(v) for v in folded.values() if len(v) > 1]
        if same:  # a.png and A.png are one file on case-insensitive file systems
            raise ValueError(f"save_dir: these outputs differ only in case: {_short(same)}")
    model, record = _model(model_or_checkpoint, device)
    with attention(model, local_attention):  # a bad train_size/base_size stops here, before any image
        pass

    counts = [tile_count(h, w, tile, overlap) for h, w in sizes]
    total, before = sum(counts), 0
    rows: List[Dict[str, Any]] = []
    for i, (stem, inp_path, tgt_path) in enumerate(pairs):
        inp, tgt = read_image_file(inp_path), read_image_file(tgt_path)
        if inp.image.shape != tgt.image.shape:  # the headers agreed; the decoded pixels must too
            raise ImageReadError(f"{inp_path} and {tgt_path} decode to different sizes, "
                                 f"{tuple(inp.image.shape[1:])} and {tuple(tgt.image.shape[1:])}")

        def step(done, _total, before=before):
            if progress is not None:
                progress(before + done, total)

        restored = restore(model, inp.image, tile=tile, overlap=overlap, progress=step, local_attention=local_attention)
        before += counts[i]
        if outputs is not None:
            write_png(outputs[i], restored, mode=inp.mode)
        scored = _exact(as_written(restored, inp.mode), _levels(inp.mode)) if quantize else restored.double()
        target = _exact(tgt.image, _levels(tgt.mode))
        h, w = target.shape[-2:]
        row = {"name": stem, "input": str(inp_path), "target": str(tgt_path), "height": int(h), "width": int(w),
               "psnr": float(psnr(scored[None], target[None])), "ssim": float(ssim(scored[None], target[None]))}
        if y_channel:
            y_out = _y(scored, _levels(inp.mode) if quantize else None)
            y_tgt = _y(target, _levels(tgt.mode) if quantize else None)
            row.update(psnr_y=float(psnr(y_out[None], y_tgt[None])), ssim_y=float(ssim(y_out[None], y_tgt[None])))
        notes = [f"{side}: {f.output_note}" for side, f in (("input", inp), ("target", tgt)) if f.output_note]
        row["note"] = "; ".join(notes) or None
        rows.append(row)
        if on_image is not None:
            on_image(row)
    keys = ["psnr", "ssim"] + (["psnr_y", "ssim_y"] if y_channel else [])
    mean = {k: math.fsum(r[k] for r in rows) / len(rows) for k in keys}
    settings = {**record, "input_dir": str(input_dir), "target_dir": str(target_dir), "tile": tile,
                "overlap": overlap, "quantized": quantize, "y_channel": y_channel,
                "local_attention": _attention_used(model, local_attention)}
    return Evaluation(rows, mean, settings)
