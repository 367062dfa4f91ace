"""The `mprnet-kernels` command: `info`, `verify`, `bench`, `make-demo-data`, `train` and `restore`.

The last three live beside what they drive (demo_data.py, training/cli.py, restoration.py); each
of those modules gives `add_arguments(parser)` and `main(args) -> exit status`."""

import argparse
import platform
import sys
from pathlib import Path

import torch


def _cmd_info(args) -> int:
    from . import build_info, ops
    from .verify import CASES

    info = build_info()
    print(f"mprnet-kernels {_version()}")
    print(f"python {platform.python_version()}, torch {info['runtime_torch_version']} "
          f"(extension built against {info['torch_version']})")
    print(f"CUDA kernels: {'CUDA ' + info['cuda_version'] + ', archs ' + ','.join(info['cuda_archs']) if info['cuda_version'] else 'not built'}")
    print(f"  {info['cuda_note']}")
    print(f"Triton: {'importable' if info['triton_available'] else 'not installed'}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    else:
        print(f"device: cpu ({torch.get_num_threads()} threads), no CUDA device")
    for case in CASES:
        cuda = ", ".join(ops.available_backends(case.op)) or "none"
        chosen = ops.cuda_backend(case.op) if ops.available_backends(case.op) else "-"
        print(f"  {case.op:<18} cpu: C++   cuda: {cuda} (selected: {chosen})")
    return 0


def _cmd_verify(args) -> int:
    from .verify import run_all

    failed = 0
    print(f"{'op':<18} {'device':<6} {'backend':<7} {'dtype':<9} {'forward':>10} {'backward':>10} {'tol':>8}")
    for r in run_all():
        failed += not r.ok
        print(f"{r.op:<18} {r.device:<6} {r.backend:<7} {str(r.dtype).replace('torch.', ''):<9} "
              f"{r.forward:10.2e} {r.backward:10.2e} {r.tolerance:8.0e}  {'ok' if r.ok else 'FAIL'}")
    if args.fixture:
        from .fixture import FIXTURE_TOLERANCE, fixture_errors

        errors = fixture_errors(args.fixture)
        worst = max(errors, key=errors.get)
        ok = errors[worst] < FIXTURE_TOLERANCE
        failed += not ok
        print(f"reference MPRNet vs fixture {args.fixture}: {len(errors)} outputs, losses and gradients; "
              f"worst {worst} {errors[worst]:.2e} (tol {FIXTURE_TOLERANCE:.0e})  {'ok' if ok else 'FAIL'}")
    print("all checks passed" if not failed else f"{failed} check(s) over tolerance")
    return 1 if failed else 0


def _split(value: str):
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _cmd_bench(args) -> int:
    import json
    import time

    from . import benchmark
    from .reference import PRESETS
    from .shapes import OPS
    from .verify import run_all

    ops, presets = _split(args.ops), _split(args.presets)
    unknown = [o for o in ops if o not in OPS and o != "model"] + [p for p in presets if p not in PRESETS]
    if unknown:
        print(f"mprnet-kernels bench: unknown op or preset {', '.join(unknown)}; ops: {', '.join(OPS)}, model; "
              f"presets: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if args.plot:
        missing = benchmark.matplotlib_missing()
        if missing:
            print(f"mprnet-kernels bench: {missing}", file=sys.stderr)
            return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    compile_ = args.compile if args.compile is not None else device == "cuda"
    cfg = benchmark.BenchConfig(device=device, full=args.full, compile=compile_, ops=ops, presets=presets,
                                sizes=benchmark.TINY if args.tiny else None, progress=not args.no_progress,
                                compile_model=bool(args.compile) and args.full)
    t0 = time.perf_counter()

    # 1. Every op and backend against the float64 reference, on small inputs.
    from . import verify

    cases = [c for c in verify.CASES if not ops or c.op in ops]
    verify_results = []
    for case in cases:
        for dev, backend in verify._targets(case):
            for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
                verify_results.append(verify.run_case(case, dev, backend, dtype))
    bad = [r for r in verify_results if not r.ok]
    if verify_results:
        print(f"verify: {len(verify_results) - len(bad)}/{len(verify_results)} op/backend/dtype checks "
              f"against the float64 reference passed")
    for r in bad:
        print(f"  FAIL {r.op} {r.device} {r.backend} {str(r.dtype)[6:]}: forward {r.forward:.2e}, "
              f"backward {r.backward:.2e} (tol {r.tolerance:.0e})")

    # 2. The timed selection, each output checked against the reference first.
    rows = benchmark.run(cfg)
    seconds = time.perf_counter() - t0
    env = benchmark.environment(device)
    print(f"{env['device_name']} ({device}, {env['threads']} threads), torch {torch.__version__}, "
          f"commit {(env['commit'] or 'unknown')[:12]}{' (dirty)' if env['dirty'] else ''}")
    if any(r.kind == "op" for r in rows):
        print(f"copy bandwidth {benchmark.copy_bandwidth(device) / 1e9:.1f} GB/s; op rows: forward+backward "
              f"unless marked (fwd), GB/s = OPS.md bytes / median time of ours")
    if any(r.peak_mib for r in rows):
        print(f"peak MiB: {benchmark.MEMORY_MEASURE[device]}")
    print(benchmark.format_table(rows))
    wrong = [r for r in rows if not r.ok]
    print(f"{len(rows)} rows in {seconds:.0f} s; "
          + ("all outputs match the reference" if not wrong and not bad else
             f"{len(bad)} verify failure(s), {len(wrong)} timed output(s) off the reference"))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(benchmark.results_dict(cfg, rows, verify_results, seconds), indent=2))
        print(f"wrote {path}")
    if args.plot:
        copy = benchmark.copy_bandwidth(device) / 1e9 if any(r.kind == "op" for r in rows) else None
        for p in benchmark.write_plots(rows, args.plot, copy_gb_per_s=copy):
            print(f"wrote {p}")
    return 1 if bad or wrong else 0


def _version() -> str:
    from .version import __version__

    return __version__


# (subcommand, module, help); modules are imported only to add their arguments (they import
# torch-heavy pieces inside main) so `mprnet-kernels info` stays quick.
TOOLS = (
    ("make-demo-data", "demo_data", "write a small synthetic paired dataset (train/ and val/) for a task"),
    ("train", "training.cli", "train MPRNet on paired images with the upstream recipe and the fused losses"),
    ("restore", "restoration", "restore image files or folders with a checkpoint, one PNG per input"),
)


def _add_tools(sub) -> None:
    import importlib

    for name, module, help_ in TOOLS:
        mod = importlib.import_module(f"{__package__}.{module}")
        parser = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(parser)
        parser.set_defaults(func=mod.main)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mprnet-kernels", description="Fused kernels and a fast drop-in MPRNet.")
    parser.add_argument("--version", action="version", version=f"mprnet-kernels {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what the extension was built with, the device, the backends").set_defaults(func=_cmd_info)
    verify = sub.add_parser("verify", help="check every op and backend here against the float64 reference")
    verify.add_argument("--fixture", metavar="PATH", help="also check the reference model against this golden fixture")
    verify.set_defaults(func=_cmd_verify)
    bench = sub.add_parser(
        "bench", help="verify, then time every op and the model against the reference",
        description="Verifies every op and backend against the float64 reference, then times each fused op's "
                    "forward+backward (ours vs the eager reference vs torch.compile of it) at the shapes MPRNet "
                    "produces (derived from the model), and the fast model vs the reference end to end: inference "
                    "and a training step (forward, MPRNetLoss, backward, Adam step; its first step's loss and "
                    "gradients checked against the reference's), with peak memory beside each time. Prints a table "
                    "with speedups and, for the memory-bound ops, GB/s against the copy bandwidth measured in the "
                    "same run. Exits 1 if any check or timed output is off the reference.")
    bench.add_argument("--full", action="store_true",
                       help="the whole suite: more shapes (the 3 heaviest per op), each op's forward alone too, "
                            "dtypes (CPU: float32, bfloat16; GPU: also float16; end to end: float32 and bf16 "
                            "autocast), all presets, bigger inputs (training step: 1x3x128x128 on CPU, "
                            "16x3x256x256 on GPU); a quick run is one shape per op in float32, inference and one "
                            "training row (CPU: 1x3x64x64 float32, 3 timed steps; GPU: 16x3x256x256 bf16 "
                            "autocast)")
    compile_group = bench.add_mutually_exclusive_group()
    compile_group.add_argument("--compile", dest="compile", action="store_true", default=None,
                               help="also time torch.compile of the reference (the default on GPU; off on CPU "
                                    "because compiling is slow there: minutes for a quick run); with --full, at "
                                    "each op's heaviest shape, and, when given explicitly, the whole reference "
                                    "model and the fast one (minutes per model)")
    compile_group.add_argument("--no-compile", dest="compile", action="store_false",
                               help="leave torch.compile out (the compile column shows -)")
    bench.add_argument("--ops", metavar="LIST", default="",
                       help="comma list of ops to run (sam_gate,ca_tail,charbonnier_loss,edge_loss,mprnet_loss,upsample2x_add) "
                            "and/or 'model' (inference and a training step end to end); default all")
    bench.add_argument("--presets", metavar="LIST", default="",
                       help="comma list of presets (deblur,derain,denoise); default deblur, all with --full")
    bench.add_argument("--json", metavar="PATH", help="write the results (device, versions, commit, threads, "
                                                      "every row) as JSON")
    bench.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR (needs matplotlib: the bench extra)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: 16x16 shapes, 1 rep
    bench.set_defaults(func=_cmd_bench)
    _add_tools(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
