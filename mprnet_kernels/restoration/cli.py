"""Restore image files or folders with an MPRNet checkpoint, one 8-bit RGB PNG per input, whole or in tiles.

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

The restoring itself is mprnet_kernels.restoration.restore(); this module adds the files,
the checkpoint and the messages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..tasks import TASKS
from . import check_tiling, restore


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
    from ..images import list_images

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
    from ..reference import PRESETS

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
    from ..checkpoint import checkpoint_config, load_checkpoint
    from ..model import MPRNet

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
    from ..images import ImageReadError, read_image, write_png

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
