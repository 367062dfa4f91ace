"""Verify, then time every op and the model against the reference."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DESCRIPTION = (
    "Verifies every op and backend against the float64 reference, then times each fused op's "
    "forward+backward (ours vs the eager reference vs torch.compile of it) at the shapes MPRNet "
    "produces (derived from the model), and the fast model vs the reference end to end: inference "
    "and a training step (forward, MPRNetLoss, backward, Adam step; its first step's loss and "
    "gradients checked against the reference's), with peak memory beside each time. Prints a table "
    "with speedups and, for the memory-bound ops, GB/s against the copy bandwidth measured in the "
    "same run. Exits 1 if any check or timed output is off the reference.")


def add_arguments(parser) -> None:
    from ..reference import PRESETS
    from ..registry import op_names

    parser.add_argument("--full", action="store_true",
                        help="the whole suite: more shapes (the 3 heaviest per op), each op's forward alone too, "
                             "dtypes (CPU: float32, bfloat16; GPU: also float16; end to end: float32 and bf16 "
                             "autocast), all presets, bigger inputs (training step: 1x3x128x128 on CPU, "
                             "16x3x256x256 on GPU); a quick run is one shape per op in float32, inference and one "
                             "training row (CPU: 1x3x64x64 float32, 3 timed steps; GPU: 16x3x256x256 bf16 "
                             "autocast)")
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="also time torch.compile of the reference (the default on GPU; off on CPU "
                                    "because compiling is slow there: minutes for a quick run); with --full, at "
                                    "each op's heaviest shape, and, when given explicitly, the whole reference "
                                    "model and the fast one (minutes per model)")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="leave torch.compile out (the compile column shows -)")
    parser.add_argument("--ops", metavar="LIST", default="",
                        help=f"comma list of ops to run ({','.join(op_names())}) and/or 'model' (inference and a "
                             f"training step end to end); default all")
    parser.add_argument("--presets", metavar="LIST", default="",
                        help=f"comma list of presets ({','.join(PRESETS)}); default deblur, all with --full")
    parser.add_argument("--local-attention", action="store_true",
                        help="also time inference with local channel attention (TLC: MPRNet.set_local_attention, "
                             "train_size half the image so that every window is smaller than its map): the fast "
                             "local model vs the reference local model, and what local costs over the fast global one")
    parser.add_argument("--json", metavar="PATH", help="write the results (device, versions, commit, threads, "
                                                       "every row) as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR (needs matplotlib: the bench extra)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: 16x16 shapes, 1 rep


def _split(value: str):
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def main(args) -> int:
    import torch

    from .. import verify
    from ..reference import PRESETS
    from ..registry import op_names
    from .config import TINY, BenchConfig
    from .plots import matplotlib_missing, write_plots
    from .report import environment, format_table, results_dict
    from .runs import run
    from .timing import MEMORY_MEASURE, copy_bandwidth

    ops, presets = _split(args.ops), _split(args.presets)
    unknown = [o for o in ops if o not in op_names() and o != "model"] + [p for p in presets if p not in PRESETS]
    if unknown:
        print(f"mprnet-kernels bench: unknown op or preset {', '.join(unknown)}; ops: {', '.join(op_names())}, "
              f"model; presets: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if args.plot:
        missing = matplotlib_missing()
        if missing:
            print(f"mprnet-kernels bench: {missing}", file=sys.stderr)
            return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compile_ = args.compile if args.compile is not None else device == "cuda"
    cfg = BenchConfig(device=device, full=args.full, compile=compile_, ops=ops, presets=presets,
                      sizes=TINY if args.tiny else None, progress=not args.no_progress,
                      compile_model=bool(args.compile) and args.full, local_attention=args.local_attention)
    t0 = time.perf_counter()

    # 1. Every op and backend against the float64 reference, on small inputs ("model" alone: none).
    selected = [op for op in op_names() if not ops or op in ops]
    verify_results = verify.run_all(ops=selected) if selected else []
    bad = [r for r in verify_results if not r.ok]
    if verify_results:
        print(f"verify: {len(verify_results) - len(bad)}/{len(verify_results)} op/backend/dtype checks "
              f"against the float64 reference passed")
    for r in bad:
        print(f"  FAIL {r.op} {r.device} {r.backend} {str(r.dtype)[6:]}: forward {r.forward:.2e}, "
              f"backward {r.backward:.2e} (tol {r.tolerance:.0e})")

    # 2. The timed selection, each output checked against the reference first.
    rows = run(cfg)
    seconds = time.perf_counter() - t0
    env = environment(device)
    print(f"{env['device_name']} ({device}, {env['threads']} threads), torch {torch.__version__}, "
          f"commit {(env['commit'] or 'unknown')[:12]}{' (dirty)' if env['dirty'] else ''}")
    if any(r.kind == "op" for r in rows):
        print(f"copy bandwidth {copy_bandwidth(device) / 1e9:.1f} GB/s; op rows: forward+backward "
              f"unless marked (fwd), GB/s = docs/OPS.md bytes / median time of ours")
    if any(r.peak_mib for r in rows):
        print(f"peak MiB: {MEMORY_MEASURE[device]}")
    print(format_table(rows))
    wrong = [r for r in rows if not r.ok]
    print(f"{len(rows)} rows in {seconds:.0f} s; "
          + ("all outputs match the reference" if not wrong and not bad else
             f"{len(bad)} verify failure(s), {len(wrong)} timed output(s) off the reference"))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results_dict(cfg, rows, verify_results, seconds), indent=2))
        print(f"wrote {path}")
    if args.plot:
        copy = copy_bandwidth(device) / 1e9 if any(r.kind == "op" for r in rows) else None
        for p in write_plots(rows, args.plot, copy_gb_per_s=copy):
            print(f"wrote {p}")
    return 1 if bad or wrong else 0
