"""Write a checkpoint as ONNX, a torch.export program or weights only, checked against PyTorch first.

CLI (``mprnet-kernels export CHECKPOINT --format onnx|pt2|weights``): builds the fast MPRNet the
checkpoint fits (its 'config' entry, else the shapes of its weights; all rewrites on, which
change no number), writes the file, then checks it where it will run: an ONNX file in
onnxruntime (CPU), a .pt2 program through torch.export.load, a weights file through load_model;
each against the PyTorch model on the example input (and, with --dynamic, on a second input of
another batch and size). The relative error and its tolerance are printed.

--dtype: fp32 (default); fp16 for every format; bf16 for pt2 and weights. A bf16 ONNX file is
refused: onnxruntime's CPU provider cannot run its convolutions, so it could not be checked.
Half-precision files are compared with the float32 model (tolerance 2e-2, 1e-5 for fp32).

Exit status: 0 written and checked; 1 the file does not match the model (it is removed, and the
message says by how much); 2 a problem found before anything is written (a missing or unreadable
checkpoint, a bad or meaningless option, an output path that is the checkpoint itself).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_FORMATS = ("onnx", "pt2", "weights")
_SUFFIX = {"onnx": ".onnx", "pt2": ".pt2", "weights": ".weights.pth"}
_DTYPE_NAMES = ("fp32", "fp16", "bf16")


class _UsageError(Exception):
    """A problem with the command line or the checkpoint, found before anything is written (exit 2)."""


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="MPRNet checkpoint (upstream's, mprnet-kernels train's, weights-only, a bare state_dict)")
    parser.add_argument("--format", required=True, choices=_FORMATS,
                        help="onnx: an ONNX file; pt2: a torch.export program that loads without mprnet_kernels "
                             "(unless --keep-ops); weights: the weights alone, for inference")
    parser.add_argument("--out", metavar="PATH", default=None,
                        help="the file to write (default: CHECKPOINT's name with .onnx, .pt2 or .weights.pth, "
                             "plus .fp16/.bf16 for those dtypes, beside it)")
    parser.add_argument("--dtype", choices=_DTYPE_NAMES, default="fp32",
                        help="precision of the file (default fp32); bf16 is not offered for onnx (not checkable "
                             "with onnxruntime on a CPU)")
    parser.add_argument("--dynamic", action="store_true",
                        help="onnx/pt2: dynamic batch, height and width (multiples of 8); without it the file "
                             "runs only at --batch x --size")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=[256, 256],
                        help="height and width of the example input the file is traced and checked with "
                             "(multiples of 8; default 256 256)")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="batch of the example input (default 1)")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default=None,
                        help="onnx: torch's dynamo-based exporter (default) or the TorchScript-based one (faster)")
    parser.add_argument("--opset", type=int, default=None, metavar="N",
                        help="onnx: the ONNX opset (default: the exporter's)")
    parser.add_argument("--keep-ops", action="store_true",
                        help="pt2: keep the fused mprnet ops in the program (then loading it needs `import "
                             "mprnet_kernels`); default: lowered to core ATen")
    parser.add_argument("--tolerance", type=float, default=None, metavar="TOL",
                        help="relative error the check allows (default 1e-5 for fp32, 2e-2 for fp16/bf16)")


def _output_path(args) -> Path:
    if args.out is not None:
        out = Path(args.out)
    else:
        source = Path(args.checkpoint)
        stem = source.name[:-len(source.suffix)] if source.suffix else source.name
        dtype = "" if args.dtype == "fp32" else f".{args.dtype}"
        out = source.with_name(f"{stem}{dtype}{_SUFFIX[args.format]}")
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise _UsageError(f"--out: {out} is the checkpoint itself; choose another path")
    if out.is_dir():
        raise _UsageError(f"--out: {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise _UsageError(f"--out: the folder {out.parent} does not exist")
    return out


def _check_options(args) -> None:
    fmt = args.format
    if args.exporter is not None and fmt != "onnx":
        raise _UsageError(f"--exporter applies to --format onnx, not {fmt}")
    if args.opset is not None and fmt != "onnx":
        raise _UsageError(f"--opset applies to --format onnx, not {fmt}")
    if args.keep_ops and fmt != "pt2":
        raise _UsageError(f"--keep-ops applies to --format pt2, not {fmt}")
    if args.dynamic and fmt == "weights":
        raise _UsageError("--dynamic applies to --format onnx and pt2; a weights file has no input shape")
    if fmt == "onnx" and args.dtype == "bf16":
        raise _UsageError("--dtype bf16: a bfloat16 ONNX file cannot be checked here (onnxruntime's CPU provider "
                          "has no bfloat16 convolution); use --dtype fp16 or fp32, or --format pt2")
    if args.tolerance is not None and not args.tolerance >= 0:
        raise _UsageError(f"--tolerance: expected a number >= 0, got {args.tolerance}")
    if args.batch < 1:
        raise _UsageError(f"--batch: expected a positive number, got {args.batch}")
    h, w = args.size
    if h < 8 or w < 8 or h % 8 or w % 8:
        raise _UsageError(f"--size: height and width must be positive multiples of 8, got {h} {w}")
    if args.dynamic and (h < 16 or w < 16):
        raise _UsageError(f"--size: a --dynamic export needs a height and width of at least 16, got {h} {w}")


def _read_checkpoint(path: str):
    # _read gives the one-line errors for unreadable files (as restore's loading does).
    from ..checkpoint import CheckpointMismatchError, _read, load_model

    try:
        checkpoint, _ = _read(path)
        model = load_model(checkpoint)
    except (ValueError, TypeError, CheckpointMismatchError) as e:
        first = str(e).strip().splitlines()[0]
        raise _UsageError(f"{path}: cannot load it: {first}") from None
    return checkpoint, model


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def main(args) -> int:
    import torch

    from . import ExportCheckError, export_onnx, export_program, export_weights
    from .inputs import DTYPES

    prog = "mprnet-kernels export"
    try:
        _check_options(args)
        if not os.path.isfile(args.checkpoint):
            raise _UsageError(f"{args.checkpoint}: no such checkpoint file")
        out = _output_path(args)
        checkpoint, model = _read_checkpoint(args.checkpoint)
    except _UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    example = torch.rand((args.batch, model.in_c, *args.size), generator=torch.Generator().manual_seed(0))
    try:
        if args.format == "onnx":
            report = export_onnx(model, out, example=example, dynamic=args.dynamic, dtype=dtype,
                                 exporter=args.exporter or "dynamo", tolerance=args.tolerance, opset=args.opset)
        elif args.format == "pt2":
            report = export_program(model, out, example=example, dynamic=args.dynamic, dtype=dtype,
                                    decompose=not args.keep_ops, tolerance=args.tolerance)
        else:
            report = export_weights(checkpoint, out, dtype=None if args.dtype == "fp32" else dtype,
                                    tolerance=args.tolerance)
    except ExportCheckError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    shape = ("dynamic batch, height, width" if report.dynamic else
             f"static {args.batch}x{model.in_c}x{args.size[0]}x{args.size[1]}")
    what = f"{args.format}, {str(report.dtype).replace('torch.', '')}"
    if args.format == "weights":
        print(f"wrote {out} ({what}, {_size(out)}; the checkpoint is {_size(Path(args.checkpoint))})")
    else:
        print(f"wrote {out} ({what}, {shape}, {_size(out)})")
    print(f"checked: {report.check.summary()}")
    if report.note:
        print(f"note: {report.note}")
    return 0
