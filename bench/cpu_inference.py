"""CPU inference, side by side in one run: the fast MPRNet (prepacked oneDNN convolutions with
fused post-ops, mprnet_kernels.nn.onednn, and the buffer cache, mprnet_kernels.cpu_cache), the
fast MPRNet without the prepacking (rewrite ``prepacked_convs`` off) and without the cache
(``reuse_cpu_buffers`` off), the reference eager, and torch.compile of the reference with
Inductor's ``freezing=True`` (its CPU inference mode), with the compile time beside it. The
memory the cache holds after the fast model's forward is reported as ``cache_mb``.

    python bench/cpu_inference.py                                    # deblur, 256x256, float32 and bf16 autocast
    python bench/cpu_inference.py --sizes 256,720x1280 --json bench/results/<dir>/cpu_inference.json

Timing: the implementations take turns, one call each per round, so that a shared machine's
drift falls on all of them alike; each figure is the median over the rounds, after one untimed
call (for the compiled model, the first call is the compile and is reported as such). Every
output is checked against the reference's (float32 1e-4, bf16 autocast 2e-2) before it counts.
OpenMP runs with the environment's OMP_WAIT_POLICY (the runtime's default when unset, as users
get it), recorded in the JSON: PASSIVE slowed every implementation, the fast model most.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import mprnet_kernels
from mprnet_kernels import reference
from mprnet_kernels.benchmark.report import environment
from mprnet_kernels.benchmark.timing import median_times_in_turns
from mprnet_kernels.cpu_cache import cpu_cache_stats
from mprnet_kernels.testing import rel_err

TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


def _sizes(text: str) -> list:
    """'256,720x1280' -> [(256, 256), (720, 1280)]: H and W positive multiples of 8."""
    out = []
    for item in text.split(","):
        h, _, w = item.strip().lower().partition("x")
        try:
            size = int(h), int(w or h)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--sizes: expected HxW or a side, got {item!r}") from None
        if min(size) <= 0 or size[0] % 8 or size[1] % 8:
            raise argparse.ArgumentTypeError(f"--sizes: H and W must be positive multiples of 8, got {item!r}")
        out.append(size)
    return out


def _models(preset: str):
    torch.manual_seed(0)
    ref = reference.MPRNet.from_preset(preset).eval()
    ours = mprnet_kernels.MPRNet.from_preset(preset).eval()
    plain = mprnet_kernels.MPRNet.from_preset(preset, rewrites={"prepacked_convs": False}).eval()
    uncached = mprnet_kernels.MPRNet.from_preset(preset, rewrites={"reuse_cpu_buffers": False}).eval()
    for m in (ours, plain, uncached):
        m.load_state_dict(ref.state_dict())
    return ref, ours, plain, uncached


def run(preset: str, size, dtype: str, rounds: int, compile_: bool) -> dict:
    ref, ours, plain, uncached = _models(preset)
    impls = {"eager": ref, "ours": ours, "ours_unpacked": plain, "ours_uncached": uncached}
    compile_s = None
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with torch.no_grad(), autocast:
        if compile_:
            torch._dynamo.reset()
            compiled = torch.compile(ref, options={"freezing": True})
            t0 = time.perf_counter()
            compiled(x)
            compile_s = time.perf_counter() - t0
            impls["compile_freezing"] = compiled
        expected = ref(x)[0].float()
        errors = {name: rel_err(m(x)[0].float(), expected) for name, m in impls.items()}  # also the warm-up call
        calls = {name: lambda m=m: m(x) for name, m in impls.items()}
        held = []  # what the cache keeps after each of ours' timed calls (a stats read, microseconds)
        calls["ours"] = lambda: (ours(x), held.append(cpu_cache_stats()["cached_bytes"]))
        seconds = median_times_in_turns(calls, "cpu", 0, rounds)
        cache_mb = held[-1] / 2**20
    ms = {name: t * 1e3 for name, t in seconds.items()}
    row = {"preset": preset, "shape": [1, 3, *size], "dtype": dtype, "rounds": rounds, "ms": ms,
           "errors": errors, "ok": all(e < TOLERANCE[dtype] for e in errors.values()), "compile_s": compile_s,
           "cache_mb": cache_mb}
    row["ours_vs_eager"] = ms["eager"] / ms["ours"]
    row["ours_vs_unpacked"] = ms["ours_unpacked"] / ms["ours"]
    row["ours_vs_uncached"] = ms["ours_uncached"] / ms["ours"]
    if compile_:
        row["ours_vs_compile_freezing"] = ms["compile_freezing"] / ms["ours"]
    return row


def _f(value, fmt="{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def table(rows) -> str:
    lines = ["| shape | dtype | eager ms | ours ms | ours, plain convs ms | ours, no buffer cache ms | "
             "compile(freezing) ms | compile s | ours vs eager | vs plain convs | vs no buffer cache | "
             "vs compile(freezing) | max rel err | cache MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        cells = ["x".join(map(str, r["shape"])), r["dtype"], _f(ms["eager"]), _f(ms["ours"]), _f(ms["ours_unpacked"]),
                 _f(ms["ours_uncached"]), _f(ms.get("compile_freezing")), _f(r["compile_s"]),
                 _f(r["ours_vs_eager"], "{:.2f}x"), _f(r["ours_vs_unpacked"], "{:.2f}x"),
                 _f(r["ours_vs_uncached"], "{:.2f}x"), _f(r.get("ours_vs_compile_freezing"), "{:.2f}x"),
                 _f(max(r["errors"].values()), "{:.1e}"), _f(r["cache_mb"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="deblur", choices=list(reference.PRESETS) + list(reference.EXTRA_PRESETS))
    parser.add_argument("--sizes", type=_sizes, default="256", help="comma list of HxW (or one number for a square)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="float32 and/or bfloat16 (autocast)")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per implementation")
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile(freezing) out")
    parser.add_argument("--json", type=Path, help="write the rows and the environment as JSON")
    args = parser.parse_args(argv)
    if args.rounds <= 0:
        parser.error("--rounds must be positive")
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    for dtype in dtypes:
        if dtype not in TOLERANCE:
            parser.error(f"--dtypes: expected float32 or bfloat16, got {dtype!r}")
    rows = []
    for size in args.sizes:
        for dtype in dtypes:
            rows.append(run(args.preset, size, dtype, args.rounds, not args.no_compile))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        env = dict(environment("cpu"), onednn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset (the OpenMP runtime's default)"))
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
