"""Restore image files or folders with an MPRNet checkpoint, one PNG per input, whole or in tiles.

CLI (``mprnet-kernels restore INPUT... -o OUT --checkpoint CKPT``): INPUTs are image files or
folders (the image files directly inside, sorted by name; other files skipped). Each input is
written as OUT/<stem>.png at its own size; two inputs with the same stem (compared without case,
as some file systems do) or an output that would overwrite an input stop the command before any
work (exit 2), as do a missing input path or checkpoint, a bad --tile/--overlap or a checkpoint
that does not load (said in one line). The model is built from the checkpoint itself (its
'config' entry, else the shapes of its weights). --task only names what the checkpoint is for:
by default the checkpoint's own (restoration/loading.py); one given is checked against it and a
mismatch is a warning, since a model trained for one degradation still runs on another.

Outputs keep the input's kind where the RGB model allows: grayscale in, grayscale out (run as 3
equal channels, written as their mean; 8-bit for 8-bit and 1-bit files, 16-bit for 16-bit ones),
RGB out for everything else (alpha dropped, palettes and CMYK converted, 16-bit colour read as 8
bits by Pillow). The EXIF orientation is applied, so outputs are upright as viewers show the
inputs. Whatever an output lost or changed against its input is a note on stdout. A file that
cannot be read or restored is reported on stderr and skipped, and the exit status is then 1 (0
when every input was written). The progress bar counts tiles with --tile (so one large image
moves it), images without.

The restoring itself is mprnet_kernels.restoration.restore(); this module adds the files,
the checkpoint and the messages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..tasks import TASKS
from . import check_tiling, restore, tile_count
from .loading import choose_task, describe, load_for_restoring


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
    add_task_argument(parser)
    add_tile_arguments(parser)
    add_local_attention_arguments(parser)
    parser.add_argument("--device", default=None,
                        help="torch device to run on (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_task_argument(parser) -> None:
    parser.add_argument("--task", choices=TASKS, default=None,
                        help="what the checkpoint restores (default: the task it records, or the one whose preset "
                             "widths it has); only checked against the checkpoint, a mismatch is a warning")


def add_tile_arguments(parser) -> None:
    parser.add_argument("--tile", type=int, default=None, metavar="T",
                        help="restore in T x T tiles (a multiple of 8) to bound memory on big images; default: "
                             "whole images. Tiled output differs slightly from whole-image output because "
                             "MPRNet's channel attention pools over its whole input")
    parser.add_argument("--overlap", type=int, default=32, metavar="O",
                        help="pixels by which tiles overlap and are cross-faded, less than --tile (default 32)")


def add_local_attention_arguments(parser) -> None:
    parser.add_argument("--local-attention", action="store_true",
                        help="local channel attention (TLC, Chu et al. 2022): each attention pools over a window "
                             "the size of what it saw in training instead of the whole image, with the same "
                             "weights; often better on images much larger than the training crops")
    parser.add_argument("--train-size", type=int, default=None, metavar="S",
                        help="with --local-attention: the crop size the model was trained on (default 256)")
    parser.add_argument("--base-size", type=int, default=None, metavar="B",
                        help="with --local-attention: the window at full resolution (default 1.5 x --train-size)")


def apply_local_attention(model, args) -> str:
    """Sets the command's --local-attention options on `model`; what to print about them.
    _UsageError/ValueError naming the option when they do not fit."""
    if not args.local_attention:
        given = [f for f, v in (("--train-size", args.train_size), ("--base-size", args.base_size)) if v is not None]
        if given:
            raise _UsageError(f"{given[0]}: only means something with --local-attention")
        return "global channel attention"
    train = 256 if args.train_size is None else args.train_size
    try:
        model.set_local_attention(train, args.base_size)
    except ValueError as e:
        raise _UsageError(str(e).replace("set_local_attention: train_size", "--train-size")
                          .replace("set_local_attention: base_size", "--base-size")
                          .replace("set_local_attention: ", "").replace("larger base_size", "larger --base-size")) from None
    la = model.local_attention
    return f"local channel attention (train size {la['train_size'][0]}, base size {la['base_size'][0]})"


def progress_bar(total: int, unit: str, disable: bool):
    """The commands' progress bar: tqdm on stderr (off with --no-progress or when stderr is not
    a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=True if disable else None, dynamic_ncols=True)


def step_counts(files, tile, overlap) -> list[int]:
    """Model calls per file (tile_count from the header; 1 for a file whose header does not
    read, which fails later anyway): the progress bar's steps."""
    from ..images import ImageReadError, image_size

    counts = []
    for f in files:
        try:
            counts.append(tile_count(*image_size(f), tile, overlap))
        except ImageReadError:
            counts.append(1)
    return counts


def open_checkpoint(path, device: torch.device, task):
    """(LoadedCheckpoint, task, warning or None); _UsageError in one line when the file is
    missing or does not load, or when no task is given and the checkpoint says none."""
    try:
        loaded = load_for_restoring(Path(path), device=device)
    except FileNotFoundError:
        raise _UsageError(f"--checkpoint: {path}: no such file") from None
    except ValueError as e:
        raise _UsageError(f"--checkpoint: {path}: {e}") from None
    try:
        task, warning = choose_task(task, loaded)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    return loaded, task, warning


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


def _restore_file(model, path: Path, target: Path, tile, overlap, say, progress) -> bool:
    """Reads, restores and writes one image; False (after saying why on stderr) if it failed."""
    from ..images import ImageReadError, read_image_file, write_png

    try:
        f = read_image_file(path)
    except ImageReadError as e:
        say(f"error: {e}", sys.stderr)
        return False
    if f.output_note:
        say(f"note: {path}: {f.output_note}", sys.stdout)
    try:
        restored = restore(model, f.image, tile=tile, overlap=overlap, progress=progress)
    except RuntimeError as e:  # out of memory, mostly
        hint = "; try --tile 512 (or smaller)" if "out of memory" in str(e).lower() else ""
        say(f"error: {path}: restoring failed ({type(e).__name__}: {str(e).splitlines()[0]}){hint}", sys.stderr)
        return False
    try:
        write_png(target, restored, mode=f.mode)
    except OSError as e:
        say(f"error: {path}: cannot write {target} ({e})", sys.stderr)
        return False
    return True


def main(args) -> int:
    try:
        check_tiling(args.tile, args.overlap, prefix="--")
        device = _device(args.device)
        files = collect_inputs(args.inputs)
        out_dir = Path(args.output)
        targets = output_paths(files, out_dir)
        loaded, task, warning = open_checkpoint(args.checkpoint, device, args.task)
        attention = apply_local_attention(loaded.model, args)
    except (_UsageError, ValueError) as e:
        print(f"mprnet-kernels restore: {e}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}; restoring anyway", file=sys.stderr)
    how = f"tiles {args.tile} overlapping by {args.overlap}" if args.tile else "whole images"
    print(f"restoring {len(files)} image(s) with {args.checkpoint} ({task}; MPRNet {describe(loaded.config)}) "
          f"on {device}, {how}, {attention}")

    counts = step_counts(files, args.tile, args.overlap)
    bar = progress_bar(sum(counts), "tile" if args.tile else "image", args.no_progress)

    def say(message, stream):
        bar.write(message, file=stream)

    failed = 0
    with bar:
        for path, target, count in zip(files, targets, counts):
            bar.set_postfix_str(path.name, refresh=False)
            done = [0]

            def progress(step, total, done=done):
                bar.update(step - done[0])
                done[0] = step

            failed += not _restore_file(loaded.model, path, target, args.tile, args.overlap, say, progress)
            bar.update(max(0, count - done[0]))  # a failed file, or a header that misjudged the count
    written = len(files) - failed
    print(f"wrote {written} PNG(s) to {out_dir}" + (f"; {failed} input(s) failed (see above)" if failed else ""))
    return 1 if failed else 0
