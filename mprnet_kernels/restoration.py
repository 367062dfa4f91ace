"""Restore image files or folders with an MPRNet checkpoint, one 8-bit RGB PNG per input, whole or in tiles.

Python: ``restore(model, image, tile=None, overlap=32)`` takes a (3, H, W) or (N, 3, H, W) float
tensor in [0, 1] of any size and returns the model's final (stage-3) output of the same shape,
clamped to [0, 1]:

- MPRNet needs H and W to be multiples of 8, so the image is padded at the bottom and right by
  reflection (mirroring without repeating the edge row, as F.pad's "reflect") and the output
  cropped back. Reflection needs the side to be longer than the pad; a side shorter than that
  (under 8 px) is padded by replicating its last row/column instead.
- It runs under torch.inference_mode on the model's device and dtype and returns a tensor on the
  image's device in the image's dtype (an ordinary tensor, not an inference tensor).
- With ``tile=T`` (a multiple of 8) the padded image is cut into T x T tiles overlapping by at
  least ``overlap`` pixels, the last tile of each row/column aligned to the image edge; each tile
  runs on its own (only a tile's features are in memory at once) and the outputs are averaged
  with weights that ramp linearly from 1/(O+1) to 1 across the O pixels next to an inner tile
  border (1 at the image's own borders), accumulated in float64. Where two ramps meet they add
  up to 1: a cross-fade. The weights are positive everywhere, so every pixel is covered, and a
  purely local model gives exactly its whole-image result. A side that fits in one tile is not
  cut; an image that fits in one tile takes the whole-image path.

Tiles are an approximation for MPRNet: every channel-attention block pools its features over
the whole input, so a tile sees other statistics than the whole image. With the small config
trained to restore, tiles of 256 cost about 0.01 dB against the target and tiles of 128 about
0.1 dB (bench/results/tiling.md, measured by bench/tiling.py).

CLI (``mprnet-kernels restore INPUT... -o OUT --checkpoint CKPT``): INPUTs are image files or
folders (the image files directly inside, sorted by name; other files skipped). Each input is
written as OUT/<stem>.png at its own size; two inputs with the same stem (compared without case,
as some file systems do) or an output that would overwrite an input stop the command before any
work (exit 2), as do a missing input path or checkpoint, a bad --tile/--overlap or a checkpoint
that does not load. The model is built from the checkpoint itself (its 'config' entry, else the
shapes of its weights). --task only names what the checkpoint is for: it is checked against the
checkpoint (a 'task' entry or the task in its saved 'args', else the preset whose widths it
has) and a mismatch is a warning, since a model trained for one degradation still runs on
another. Grayscale, alpha, palette and 16-bit inputs are converted to RGB with a note on stdout;
a file that cannot be read or restored is reported on stderr and skipped, and the exit status
is then 1 (0 when every input was written).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .images import pad_to_multiple
from .reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it
from .tasks import TASKS

__all__ = ["restore", "pad_to_multiple", "tile_starts", "tiling_difference", "psnr", "TASKS"]


# --------------------------------------------------------------------------- restore()


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_tiling(tile, overlap, prefix: str = "") -> None:
    """ValueError naming the argument (prefixed, e.g. "--" for the CLI) unless tile is None or a
    positive multiple of 8 and 0 <= overlap < tile."""
    if tile is not None and (not _is_int(tile) or tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE):
        raise ValueError(f"{prefix}tile: expected a positive multiple of {SIZE_MULTIPLE} (or None for the whole "
                         f"image at once), got {tile!r}")
    if not _is_int(overlap) or overlap < 0:
        raise ValueError(f"{prefix}overlap: expected an integer >= 0, got {overlap!r}")
    if tile is not None and overlap >= tile:
        raise ValueError(f"{prefix}overlap: expected less than {prefix}tile ({tile}), got {overlap}")


def _as_batch(image, model) -> tuple[torch.Tensor, bool]:
    """(N, C, H, W) view of image and whether it came without the batch dimension."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    channels = getattr(model, "in_c", 3)
    if image.dim() not in (3, 4) or image.shape[-3] != channels:
        raise ValueError(f"image: expected a ({channels}, H, W) or (N, {channels}, H, W) tensor, "
                         f"got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image: expected a floating-point tensor with values in [0, 1], got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"image: expected a non-empty image, got shape {tuple(image.shape)}")
    return (image[None], True) if image.dim() == 3 else (image, False)


def _device_dtype(model, image: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in what the model computes: its first floating parameter's (the image's for a
    model without parameters)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return image.device, image.dtype


def _run(model, x: torch.Tensor, device, dtype) -> torch.Tensor:
    """The model's final output on x, back on x's device in x's dtype."""
    return model(x.to(device=device, dtype=dtype))[0].to(device=x.device, dtype=x.dtype)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Offsets of the tiles along a side of `size`: every tile - overlap pixels, the last one
    aligned to the end (so it may overlap its neighbour by more). One tile when size <= tile."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def _ramp(length: int, overlap: int, rise: bool, fall: bool, dtype, device) -> torch.Tensor:
    """1-D blending weights of a tile side: 1, ramping down to 1/(overlap+1) over the overlap
    pixels at an end that borders another tile (rise: the start, fall: the end)."""
    w = torch.ones(length, dtype=dtype, device=device)
    if overlap:
        r = torch.arange(1, overlap + 1, dtype=dtype, device=device) / (overlap + 1)
        if rise:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if fall:
            w[-overlap:] = torch.minimum(w[-overlap:], r.flip(0))
    return w


def _run_tiled(model, x: torch.Tensor, tile: int, overlap: int, device, dtype) -> torch.Tensor:
    """The model on overlapping tiles of x (N, C, H, W, multiples of 8), blended (module docstring)."""
    n, c, h, w = x.shape
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64  # mps has no float64
    total = torch.zeros((n, c, h, w), dtype=acc_dtype, device=x.device)
    weight = torch.zeros((h, w), dtype=acc_dtype, device=x.device)
    th, tw = min(tile, h), min(tile, w)
    for top in tile_starts(h, tile, overlap):
        wy = _ramp(th, overlap, top > 0, top + th < h, acc_dtype, x.device)
        for left in tile_starts(w, tile, overlap):
            wx = _ramp(tw, overlap, left > 0, left + tw < w, acc_dtype, x.device)
            window = wy[:, None] * wx[None, :]
            out = _run(model, x[..., top:top + th, left:left + tw], device, dtype)
            total[..., top:top + th, left:left + tw] += out.to(acc_dtype) * window
            weight[top:top + th, left:left + tw] += window
    return (total / weight).to(x.dtype)


def restore(model, image: torch.Tensor, tile: int | None = None, overlap: int = 32) -> torch.Tensor:
    """The restored image: model's stage-3 output on image ((3, H, W) or (N, 3, H, W), floats in
    [0, 1], any H and W), same shape, clamped to [0, 1]. With tile, in overlapping tile x tile
    pieces blended together (close to, not equal to, the whole-image result: see the module
    docstring). Raises ValueError naming a bad argument."""
    check_tiling(tile, overlap)
    x, unbatched = _as_batch(image, model)
    device, dtype = _device_dtype(model, x)
    h, w = x.shape[-2:]
    with torch.inference_mode():
        padded = pad_to_multiple(x)
        if tile is None or max(padded.shape[-2:]) <= tile:
            out = _run(model, padded, device, dtype)
        else:
            out = _run_tiled(model, padded, tile, overlap, device, dtype)
        out = out[..., :h, :w].clamp(0, 1)
    out = out.clone()  # outside inference mode: an ordinary tensor the caller may modify in place
    return out[0] if unbatched else out


def tiling_difference(model, image: torch.Tensor, tile: int, overlap: int = 32, target=None) -> dict:
    """How far the tiled result is from the whole-image one on image: {"psnr" (dB, tiled vs
    whole), "max_abs", "mean_abs", and with a target "psnr_whole" and "psnr_tiled" against it}."""
    whole = restore(model, image)
    tiled = restore(model, image, tile=tile, overlap=overlap)
    result = {"psnr": psnr(tiled, whole), "max_abs": (tiled - whole).abs().max().item(),
              "mean_abs": (tiled - whole).abs().mean().item()}
    if target is not None:
        result.update(psnr_whole=psnr(whole, target), psnr_tiled=psnr(tiled, target))
    return result


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of one image against another, both in [0, 1] (metrics.psnr, as training logs it)."""
    from .metrics import psnr as batch_psnr

    return float(batch_psnr(a.reshape(1, -1).double(), b.reshape(1, -1).double()))


# --------------------------------------------------------------------------- command line


class _UsageError(Exception):
    """A problem with the command line or its files found before any image is restored (exit 2)."""


def add_arguments(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files and/or folders (a folder: the image files directly in it, sorted)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="folder for the results, OUT/<input stem>.png each (created if missing; existing "
                             "files of those names are replaced)")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="MPRNet checkpoint (upstream's or mprnet-kernels train's); the model is built to fit it")
    parser.add_argument("--task", choices=TASKS, default="deblur",
                        help="what the checkpoint restores (default deblur); only checked against the checkpoint, "
                             "a mismatch is a warning")
    parser.add_argument("--tile", type=int, default=None, metavar="T",
                        help="restore in T x T tiles (a multiple of 8) to bound memory on big images; default: "
                             "whole images. Tiled output differs slightly from whole-image output because "
                             "MPRNet's channel attention pools over its whole input")
    parser.add_argument("--overlap", type=int, default=32, metavar="O",
                        help="pixels by which tiles overlap and are cross-faded, less than --tile (default 32)")
    parser.add_argument("--device", default=None,
                        help="torch device to run on (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise _UsageError(f"--device: not a torch device: {name!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _UsageError(f"--device: {name} requested but CUDA is not available here")
    return device


def collect_inputs(inputs) -> list[Path]:
    """The image paths named by INPUT arguments, in order, folders expanded, the same file once."""
    from .images import list_images

    files, seen = [], set()
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found = list_images(path)
            if not found:
                print(f"warning: {path}: no image files in this folder", file=sys.stderr)
        elif path.exists():
            found = [path]
        else:
            raise _UsageError(f"{path}: no such file or folder")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                files.append(f)
    if not files:
        raise _UsageError("no image files to restore")
    return files


def output_paths(files: list[Path], out_dir: Path) -> list[Path]:
    """OUT/<stem>.png for each file; _UsageError when two share a stem (case-insensitively, so
    the result is the same on every file system) or an output would overwrite an input."""
    by_stem: dict[str, Path] = {}
    clashes = []
    for f in files:
        other = by_stem.setdefault(f.stem.casefold(), f)
        if other is not f:
            clashes.append(f"{other} and {f}")
    if clashes:
        raise _UsageError("inputs with the same name would write the same output file: " + "; ".join(clashes)
                          + " (rename one or restore them into different -o folders)")
    targets = [out_dir / f"{f.stem}.png" for f in files]
    inputs = {f.resolve() for f in files}
    overwrite = [str(t) for t in targets if t.resolve() in inputs]
    if overwrite:
        raise _UsageError(f"the output would overwrite the input {', '.join(overwrite)}; choose another -o folder")
    return targets


def _saved_task(checkpoint) -> str | None:
    """The task a checkpoint records: a 'task' entry, or the one in its 'args' (the command-line
    arguments `mprnet-kernels train` saves)."""
    args = checkpoint.get("args")
    for saved in (checkpoint.get("task"), args.get("task") if isinstance(args, dict) else None):
        if isinstance(saved, str):
            return saved
    return None


def _task_warning(checkpoint, config: dict, task: str) -> str | None:
    """A warning when the checkpoint says (_saved_task) or looks (the widths of a preset) like it
    was made for another task than --task."""
    from .reference import PRESETS

    saved = _saved_task(checkpoint)
    if saved is not None:
        return None if saved == task else f"the checkpoint was trained for {saved}, not --task {task}"
    widths = ("n_feat", "scale_unetfeats", "scale_orsnetfeats")
    presets = [name for name, p in PRESETS.items() if all(config.get(k) == p[k] for k in widths)]
    if presets and task not in presets:
        return f"the checkpoint has the {presets[0]} preset's widths, but --task is {task}"
    return None


def load_model(path, device: torch.device, task: str):
    """(model, config, warning or None): the fast MPRNet built to fit the checkpoint, loaded, in
    eval mode on device. _UsageError when the file is missing or not an MPRNet checkpoint."""
    from . import MPRNet
    from .checkpoint import checkpoint_config, load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise _UsageError(f"--checkpoint: {path}: no such file")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        config = checkpoint_config(checkpoint)
        model = MPRNet(**config)
        load_checkpoint(model, checkpoint)
    except Exception as e:  # unpickling, not MPRNet weights, shapes that do not fit: all a bad file
        raise _UsageError(f"--checkpoint: {path}: cannot load it ({type(e).__name__}: {e})") from None
    return model.to(device).eval(), config, _task_warning(checkpoint, config, task)


def _restore_file(model, path: Path, target: Path, tile, overlap, say) -> bool:
    """Reads, restores and writes one image; False (after saying why on stderr) if it failed."""
    from .images import ImageReadError, read_image, write_png

    try:
        image, note = read_image(path)
    except ImageReadError as e:
        say(f"error: {e}", sys.stderr)
        return False
    if note:
        say(f"note: {path}: {note}", sys.stdout)
    try:
        restored = restore(model, image, tile=tile, overlap=overlap)
    except RuntimeError as e:  # out of memory, mostly
        hint = "; try --tile 512 (or smaller)" if "out of memory" in str(e).lower() else ""
        say(f"error: {path}: restoring failed ({type(e).__name__}: {str(e).splitlines()[0]}){hint}", sys.stderr)
        return False
    try:
        write_png(target, restored)
    except OSError as e:
        say(f"error: {path}: cannot write {target} ({e})", sys.stderr)
        return False
    return True


def main(args) -> int:
    from tqdm import tqdm

    try:
        check_tiling(args.tile, args.overlap, prefix="--")
        device = _device(args.device)
        files = collect_inputs(args.inputs)
        out_dir = Path(args.output)
        targets = output_paths(files, out_dir)
        model, config, warning = load_model(args.checkpoint, device, args.task)
    except (_UsageError, ValueError) as e:
        print(f"mprnet-kernels restore: {e}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}; restoring anyway", file=sys.stderr)
    how = f"tiles {args.tile} overlapping by {args.overlap}" if args.tile else "whole images"
    widths = ", ".join(f"{k}={config[k]}" for k in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab")
                       if k in config)
    print(f"restoring {len(files)} image(s) with {args.checkpoint} ({args.task}; MPRNet {widths}) on {device}, {how}")

    bar = tqdm(total=len(files), unit="image", file=sys.stderr, disable=True if args.no_progress else None)

    def say(message, stream):
        bar.write(message, file=stream)

    failed = 0
    with bar:
        for path, target in zip(files, targets):
            failed += not _restore_file(model, path, target, args.tile, args.overlap, say)
            bar.update()
    done = len(files) - failed
    print(f"wrote {done} PNG(s) to {out_dir}" + (f"; {failed} input(s) failed (see above)" if failed else ""))
    return 1 if failed else 0
