"""Score an MPRNet checkpoint on paired input/target folders: PSNR and SSIM per image and their means.

CLI (``mprnet-kernels evaluate --checkpoint CKPT --data ROOT`` or ``--input DIR --target DIR``):
every input is restored (whole, or in tiles with --tile) and scored against the target of the
same file-name stem, as restoration/evaluate.py describes: RGB PSNR and per-channel SSIM of the
output as an 8-bit PNG would hold it (--no-quantize: its floats), with --y-channel also on the
BT.601 Y channel that upstream's deraining MATLAB script scores. One line per image and the
means on stdout; --csv and --json write them to files, --save the restored images.

Exit status: 0 when every pair was scored; 2 for a problem found before any work (bad options,
missing or empty folders, unpaired files, pairs of different sizes, a checkpoint that does not
load, no --task for a checkpoint that does not say its own); 1 when an image fails to read or
restore on the way, or an output file cannot be written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..images import ImageReadError
from . import check_tiling, tile_count
from .cli import (_UsageError, _device, add_local_attention_arguments, add_task_argument, add_tile_arguments,
                  apply_local_attention, open_checkpoint, progress_bar)
from .evaluate import dataset_folders, evaluate, find_pairs, pair_sizes
from .loading import describe


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="MPRNet checkpoint (upstream's or mprnet-kernels train's); the model is built to fit it")
    parser.add_argument("--data", metavar="ROOT",
                        help="dataset root holding input/ and target/ folders (or test/input and test/target, as "
                             "upstream's GoPro and HIDE folders; or val/..., as make-demo-data writes)")
    parser.add_argument("--input", metavar="DIR", help="folder of degraded images (instead of --data)")
    parser.add_argument("--target", metavar="DIR",
                        help="folder of ground-truth images, paired with the inputs by file name without extension")
    add_task_argument(parser)
    add_tile_arguments(parser)
    add_local_attention_arguments(parser)
    parser.add_argument("--y-channel", action="store_true",
                        help="also score PSNR and SSIM on the BT.601 Y channel (MATLAB rgb2ycbcr), as upstream's "
                             "deraining evaluate_PSNR_SSIM.m does")
    parser.add_argument("--no-quantize", action="store_true",
                        help="score the model's float output instead of the 8-bit image --save writes (upstream "
                             "scores saved 8-bit PNGs)")
    parser.add_argument("--csv", metavar="PATH", help="write one row per image (name, paths, size, metrics) as CSV")
    parser.add_argument("--json", metavar="PATH", help="write the settings, the means and every image's row as JSON")
    parser.add_argument("--save", metavar="DIR", help="also write the restored images, DIR/<stem>.png, as restore does")
    parser.add_argument("--device", default=None,
                        help="torch device to run on (default: cuda when available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _folders(args) -> tuple[Path, Path, tuple[str, str]]:
    """(input folder, target folder, the option names errors about them use)."""
    if args.data is not None:
        if args.input is not None or args.target is not None:
            raise _UsageError("--data: give either --data ROOT or --input DIR and --target DIR, not both")
        inp, tgt = dataset_folders(args.data, "--data")
        return inp, tgt, ("--data", "--data")
    if args.input is None or args.target is None:
        missing = "--input" if args.input is None else "--target"
        raise _UsageError(f"{missing}: required (give --input DIR and --target DIR, or --data ROOT)")
    return Path(args.input), Path(args.target), ("--input", "--target")


def _line(row: dict, width: int) -> str:
    text = f"{row['name']:<{width}}  PSNR {row['psnr']:7.3f} dB  SSIM {row['ssim']:.5f}"
    if "psnr_y" in row:
        text += f"  Y: PSNR {row['psnr_y']:7.3f} dB  SSIM {row['ssim_y']:.5f}"
    return text + (f"  ({row['note']})" if row.get("note") else "")


def main(args) -> int:
    prog = "mprnet-kernels evaluate"
    try:
        check_tiling(args.tile, args.overlap, prefix="--")
        device = _device(args.device)
        input_dir, target_dir, names = _folders(args)
        # evaluate() checks these again (headers only, quick); here they stop the command before the
        # checkpoint is loaded, and give the progress bar its total.
        pairs = find_pairs(input_dir, target_dir, names)
        total = sum(tile_count(h, w, args.tile, args.overlap) for h, w in pair_sizes(pairs))
        loaded, task, warning = open_checkpoint(args.checkpoint, device, args.task)
        attention = apply_local_attention(loaded.model, args)
    except (_UsageError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if warning:
        print(f"warning: {warning}; evaluating anyway", file=sys.stderr)
    how = f"tiles {args.tile} overlapping by {args.overlap}" if args.tile else "whole images"
    print(f"evaluating {len(pairs)} pair(s), {input_dir} against {target_dir}, with {args.checkpoint} "
          f"({task}; MPRNet {describe(loaded.config)}) on {device}, {how}, {attention}")
    scored = "float outputs" if args.no_quantize else "outputs as 8-bit images"
    print(f"scores: {scored}; PSNR over RGB; SSIM per RGB channel, averaged"
          + ("; and both on the Y channel" if args.y_channel else ""))

    width = max(len(stem) for stem, _, _ in pairs)
    bar = progress_bar(total, "tile" if args.tile else "image", args.no_progress)

    shown = [0]  # steps given to the bar so far (a disabled tqdm does not count its own)

    def progress(done, _total):
        bar.update(done - shown[0])
        shown[0] = done

    def on_image(row):
        bar.write(_line(row, width), file=sys.stdout)

    try:
        with bar:
            result = evaluate(loaded.model, input_dir, target_dir, tile=args.tile, overlap=args.overlap,
                              y_channel=args.y_channel, quantize=not args.no_quantize, save_dir=args.save,
                              progress=progress, on_image=on_image, names=names)
    except ValueError as e:
        status = 1 if isinstance(e, ImageReadError) else 2  # unreadable on the way, or found before any work
        print(f"{prog}: {e}", file=sys.stderr)
        return status
    except RuntimeError as e:  # out of memory, mostly
        hint = "; try --tile 512 (or smaller)" if "out of memory" in str(e).lower() else ""
        print(f"{prog}: restoring failed ({type(e).__name__}: {str(e).splitlines()[0]}){hint}", file=sys.stderr)
        return 1
    result.settings = {"checkpoint": str(args.checkpoint), "task": task, "config": dict(loaded.config),
                       **result.settings}
    m = result.mean
    summary = f"mean over {len(result.rows)} image(s): PSNR {m['psnr']:.4f} dB, SSIM {m['ssim']:.6f}"
    if args.y_channel:
        summary += f"; Y channel: PSNR {m['psnr_y']:.4f} dB, SSIM {m['ssim_y']:.6f}"
    print(summary)
    written = []
    try:
        for path, write in ((args.csv, result.write_csv), (args.json, result.write_json)):
            if path:
                write(path)
                written.append(path)
    except OSError as e:
        print(f"{prog}: cannot write {e.filename or ''} ({e.strerror or e})", file=sys.stderr)
        return 1
    if written or args.save:
        print("wrote " + ", ".join(written + ([f"{len(result.rows)} PNG(s) to {args.save}"] if args.save else [])))
    return 0
