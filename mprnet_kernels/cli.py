"""The `mprnet-kernels` command: `info` and `verify` (later issues add more)."""

import argparse
import platform
import sys

import torch


def _cmd_info(args) -> int:
    from . import build_info, ops
    from .verify import CASES

    info = build_info()
    print(f"mprnet-kernels {_version()}")
    print(f"python {platform.python_version()}, torch {info['runtime_torch_version']} "
          f"(extension built against {info['torch_version']})")
    print(f"CUDA kernels: {'CUDA ' + info['cuda_version'] + ', archs ' + ','.join(info['cuda_archs']) if info['cuda_version'] else 'not built'}")
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


def _version() -> str:
    from .version import __version__

    return __version__


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="mprnet-kernels", description="Fused kernels and a fast drop-in MPRNet.")
    parser.add_argument("--version", action="version", version=f"mprnet-kernels {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="what the extension was built with, the device, the backends").set_defaults(func=_cmd_info)
    verify = sub.add_parser("verify", help="check every op and backend here against the float64 reference")
    verify.add_argument("--fixture", metavar="PATH", help="also check the reference model against this golden fixture")
    verify.set_defaults(func=_cmd_verify)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
