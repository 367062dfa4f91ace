"""The `mprnet-kernels` command: `info`, `verify`, `bench`, `make-demo-data`, `train`,
`restore`, `evaluate` and `export`.

The last six live beside what they drive (benchmark/cli.py, demo_data.py, training/cli.py,
restoration/cli.py, restoration/evaluate_cli.py, export/cli.py); each of those modules gives `add_arguments(parser)` and `main(args) -> exit
status` (and `DESCRIPTION`, when its docstring's first line is not enough)."""

import argparse
import platform
import sys

import torch


def _cmd_info(args) -> int:
    from . import ops
    from ._build_info import build_info
    from .registry import OPS

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
    for name, spec in OPS.items():
        cuda = ", ".join(ops.available_backends(name)) or "none"
        chosen = ops.cuda_backend(name) if ops.available_backends(name) else "-"
        print(f"  {name:<18} cpu: C++   cuda: {cuda} (selected: {chosen})  {spec.summary}")
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


def _version() -> str:
    from .version import __version__

    return __version__


# (subcommand, module, help); modules are imported only to add their arguments (they import
# torch-heavy pieces inside main) so `mprnet-kernels info` stays quick.
TOOLS = (
    ("bench", "benchmark.cli", "verify, then time every op and the model against the reference"),
    ("make-demo-data", "demo_data", "write a small synthetic paired dataset (train/ and val/) for a task"),
    ("train", "training.cli", "train MPRNet on paired images with the upstream recipe and the fused losses"),
    ("restore", "restoration.cli", "restore image files or folders with a checkpoint, one PNG per input"),
    ("evaluate", "restoration.evaluate_cli", "PSNR and SSIM of a checkpoint on paired input/target folders"),
    ("export", "export.cli", "write a checkpoint as ONNX, a torch.export program or weights only, checked against PyTorch"),
)


def _add_tools(sub) -> None:
    import importlib

    for name, module, help_ in TOOLS:
        mod = importlib.import_module(f"{__package__}.{module}")
        description = getattr(mod, "DESCRIPTION", None) or (mod.__doc__ or help_).strip().splitlines()[0]
        parser = sub.add_parser(name, help=help_, description=description)
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
    _add_tools(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
