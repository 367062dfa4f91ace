"""What local channel attention (TLC, MPRNet.set_local_attention) costs at full resolution,
measured side by side in one run on whatever device is present.

    python bench/tlc_speed.py        # 720x1280 deblur, train_size 256; writes bench/results/tlc_speed-<device>.md
    python bench/tlc_speed.py --model-size 360x640   # the model rows at half the size, the same geometry
    python bench/tlc_speed.py --size 128x192 --train-size 64 --reps 1 --out /tmp/tlc.md   # a smoke run

1. Ops: every distinct local CA tail one inference makes (shape, TLC's window, calls per
   inference, read from the model by shapes.local_attention_tails), forward without gradient in
   float32 and channels_last (the fast model's layout): the fused `mprnet::local_ca_tail` against
   its eager reference (TLC's composition: two cumsums, four slices, the MLP as 1x1
   convolutions on the pooled map, a replicate pad, a multiply, an add) and against the fused
   global `ca_tail` at the same shape; GB/s of the fused op as docs/OPS.md's forward passes over
   x (4) / median time, beside the copy bandwidth measured in the same run.
2. The model, float32 inference of batch 1: the fast model with local and with global attention,
   the reference model with local and with global attention (same weights, outputs checked
   against each other first). The issue's targets: local costs the fast model under 10% over
   global, and the fast model's speedup over the reference is larger with local attention than
   with global. --model-size runs the model rows at a smaller image with train_size scaled by the
   same factor, so that every window covers the same fraction of its map (a CPU takes minutes
   per full-resolution forward).

Medians of --reps calls after --warmup, wall clock on a CPU (CUDA events on a GPU); the op
rows' three implementations take turns, one call each per round.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from mprnet_kernels import MPRNet, reference
from mprnet_kernels.benchmark.report import environment
from mprnet_kernels.benchmark.timing import copy_bandwidth, median_time, median_times_in_turns
from mprnet_kernels.ops import ca_tail, local_ca_tail
from mprnet_kernels.reference import EXTRA_PRESETS, PRESETS, preset_config
from mprnet_kernels.reference import local_ca_tail as reference_local_ca_tail
from mprnet_kernels.registry import spec
from mprnet_kernels.shapes import local_attention_tails
from mprnet_kernels.testing import rel_err

ROOT = Path(__file__).resolve().parents[1]


def _size(text: str) -> tuple:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 720x1280, got {text!r}") from None
    if h <= 0 or w <= 0 or h % 8 or w % 8:
        raise argparse.ArgumentTypeError(f"--size: H and W must be positive multiples of 8, got {text!r}")
    return h, w


def op_rows(preset: str, size: tuple, train_size: int, device: str, warmup: int, reps: int) -> list:
    """One dict per distinct tail: shape, window, calls, and the three medians in ms."""
    hidden_of = lambda c: max(c // preset_config(preset)["reduction"], 1)  # noqa: E731
    passes = spec("local_ca_tail").forward_passes
    rows = []
    g = torch.Generator(device=device).manual_seed(0)
    for shape, window, calls in local_attention_tails(preset, *size, train_size):
        c, hidden = shape[1], hidden_of(shape[1])
        x, r = (torch.randn(shape, device=device, generator=g).contiguous(memory_format=torch.channels_last)
                for _ in range(2))
        w1 = torch.randn(hidden, c, 1, 1, device=device, generator=g) * 2 / c ** 0.5
        w2 = torch.randn(c, hidden, 1, 1, device=device, generator=g) * 2 / hidden ** 0.5
        fns = {"fused": lambda: local_ca_tail(x, r, w1, None, w2, None, window),
               "eager": lambda: reference_local_ca_tail(x, r, w1, None, w2, None, window),
               "global": lambda: ca_tail(x, r, w1, None, w2, None)}
        with torch.no_grad():
            err = rel_err(fns["fused"](), fns["eager"]())
            times = {k: t * 1e3 for k, t in median_times_in_turns(fns, device, warmup, reps).items()}
        gb_per_s = passes * x.numel() * x.element_size() / (times["fused"] / 1e3) / 1e9
        rows.append(dict(shape=shape, window=window, calls=calls, err=err, gb_per_s=gb_per_s, **times))
        del x, r
    return rows


def model_rows(preset: str, size: tuple, train_size: int, device: str, warmup: int, reps: int,
               reference_too: bool = True) -> dict:
    """{(model, attention): median ms} and the output errors (fast vs reference, per attention);
    without reference_too, the fast model's times alone."""
    torch.manual_seed(0)
    ref = reference.MPRNet.from_preset(preset).to(device).eval()
    fast = MPRNet.from_preset(preset).to(device).eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(1, preset_config(preset)["in_c"], *size, device=device, generator=torch.Generator(device).manual_seed(1))
    times, errors = {}, {}
    with torch.no_grad():
        for attention in ("global", "local"):
            for m in (fast, ref):
                m.set_local_attention(train_size if attention == "local" else None)
            if reference_too:
                errors[attention] = rel_err(fast(x)[0], ref(x)[0])
            for name, m in (("fast", fast), ("reference", ref))[:2 if reference_too else 1]:
                times[name, attention] = median_time(lambda: m(x), device, warmup, reps) * 1e3
                print(f"  {name} {attention}: {times[name, attention]:.0f} ms", file=sys.stderr)
    return {"times": times, "errors": errors}


def report(args, env: dict, copy_gb: float, ops: list, model: dict, seconds: float) -> str:
    h, w = args.size
    mh, mw = args.model_size
    lines = [
        f"# Local channel attention (TLC): what it costs, {h}x{w} {args.preset}",
        "",
        f"Made by `python bench/tlc_speed.py{_flags(args)}` (from the repository root).",
        "",
        f"- Device: {env['device_name']} ({env['device']}, {env['threads']} threads); copy bandwidth "
        f"{copy_gb:.1f} GB/s (read + write, measured in this run).",
        f"- Versions: torch {env['versions']['torch']}, mprnet-kernels {env['versions']['mprnet_kernels']} at commit "
        f"{(env['commit'] or 'unknown')[:7]}{' (dirty)' if env['dirty'] else ''}, Python {env['versions']['python']}.",
        f"- `set_local_attention({args.train_size})` (base_size {3 * args.train_size // 2}); float32, batch 1, "
        f"inference (no gradient); medians of {args.reps} calls after {args.warmup} warm-up; whole run {seconds / 60:.1f} min.",
        "",
    ]
    if ops:
        lines += [
            "## The local CA tails of one inference",
            "",
            "Forward, channels_last. *fused* = `mprnet::local_ca_tail`; *eager* = the reference "
            "(`mprnet_kernels.reference.local_ca_tail`, TLC's composition); *global* = the fused global "
            "`ca_tail` at the same shape. GB/s = 4 passes over x / fused time.",
            "",
            "| shape | window | calls | fused ms | eager ms | fused vs eager | global ms | local over global | fused GB/s | % copy | max rel err |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in ops:
            lines.append(
                f"| {'x'.join(map(str, r['shape']))} | {r['window'][0]}x{r['window'][1]} | {r['calls']} | "
                f"{r['fused']:.1f} | {r['eager']:.1f} | {r['eager'] / r['fused']:.2f}x | {r['global']:.1f} | "
                f"{r['fused'] / r['global']:.2f}x | {r['gb_per_s']:.1f} | {100 * r['gb_per_s'] / copy_gb:.0f}% | "
                f"{r['err']:.1e} |")
        total = {k: sum(r[k] * r["calls"] for r in ops) for k in ("fused", "eager", "global")}
        lines += [
            f"| **all {sum(r['calls'] for r in ops)} tails of one inference** | | | {total['fused']:.0f} | "
            f"{total['eager']:.0f} | {total['eager'] / total['fused']:.2f}x | {total['global']:.0f} | "
            f"{total['fused'] / total['global']:.2f}x | | | |",
            "",
        ]
    if model:
        t, e = model["times"], model["errors"]
        local_cost = t["fast", "local"] / t["fast", "global"] - 1
        cost_line = (f"- Local attention costs the fast model {100 * local_cost:+.1f}% over global (target: under +10%: "
                     f"{'met' if local_cost < 0.10 else 'not met'})")
        if not e:  # --fast-only
            lines += ["## The fast model", "", f"Inference of 1x3x{mh}x{mw} with `set_local_attention("
                      f"{model_train_size(args)})`: global {t['fast', 'global']:.0f} ms, local {t['fast', 'local']:.0f} ms.",
                      "", cost_line + ".", ""]
            return "\n".join(lines)
        s_local = t["reference", "local"] / t["fast", "local"]
        s_global = t["reference", "global"] / t["fast", "global"]
        lines += [
            "## The model",
            "",
            f"Inference of 1x3x{mh}x{mw} with `set_local_attention({model_train_size(args)})`"
            + (f" (the windows cover the same fractions of their maps as at {h}x{w} with {args.train_size})."
               if (mh, mw) != (h, w) else "."),
            "",
            "| attention | fast ms | reference ms | fast vs reference | fast vs reference, max rel err of the output |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| global | {t['fast', 'global']:.0f} | {t['reference', 'global']:.0f} | {s_global:.2f}x | {e['global']:.1e} |",
            f"| local | {t['fast', 'local']:.0f} | {t['reference', 'local']:.0f} | {s_local:.2f}x | {e['local']:.1e} |",
            "",
            f"{cost_line}; it costs the reference "
            f"{100 * (t['reference', 'local'] / t['reference', 'global'] - 1):+.1f}%.",
            f"- The fast model beats the reference by {s_local:.2f}x with local attention and {s_global:.2f}x with "
            f"global (target: more with local: {'met' if s_local > s_global else 'not met'}).",
            "",
        ]
    return "\n".join(lines)


def model_train_size(args) -> int:
    return args.train_size * args.model_size[0] // args.size[0]


def _flags(args) -> str:
    out = []
    for flag, value, default in (("--preset", args.preset, "deblur"), ("--size", "x".join(map(str, args.size)), "720x1280"),
                                 ("--model-size", "x".join(map(str, args.model_size)), "x".join(map(str, args.size))),
                                 ("--train-size", args.train_size, 256), ("--warmup", args.warmup, 1),
                                 ("--reps", args.reps, 3)):
        if value != default:
            out.append(f" {flag} {value}")
    for flag, on in (("--ops-only", args.ops_only), ("--model-only", args.model_only), ("--fast-only", args.fast_only)):
        if on:
            out.append(" " + flag)
    return "".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="deblur", choices=list(PRESETS) + list(EXTRA_PRESETS))
    p.add_argument("--size", type=_size, default=(720, 1280), help="HxW of the image (multiples of 8); default 720x1280")
    p.add_argument("--model-size", type=_size, help="HxW of the model rows' image, in --size's proportions (default --size); "
                                                 "train_size is scaled with it")
    p.add_argument("--train-size", type=int, default=256, help="set_local_attention's train_size (default 256)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--ops-only", action="store_true", help="the op rows only")
    which.add_argument("--model-only", action="store_true", help="the model rows only")
    p.add_argument("--fast-only", action="store_true",
                   help="the model rows of the fast model alone (what local costs it; no reference model)")
    p.add_argument("--out", type=Path, help="the Markdown report (default bench/results/tlc_speed-<device>[-ops|-model|-fast].md)")
    args = p.parse_args(argv)
    if args.train_size <= 0 or args.reps <= 0 or args.warmup < 0:
        p.error("--train-size and --reps must be positive, --warmup not negative")
    if args.train_size % 8:
        p.error(f"--train-size must be a multiple of 8, got {args.train_size}")
    if args.fast_only and args.ops_only:
        p.error("--fast-only chooses the model rows; it goes with --model-only or the full run, not --ops-only")
    args.model_size = args.model_size or args.size
    (h, w), (mh, mw) = args.size, args.model_size
    if mh * w != mw * h or (args.train_size * mh) % h or model_train_size(args) % 8:
        p.error(f"--model-size {mh}x{mw} must be {h}x{w} scaled by a factor that keeps train_size "
                f"{args.train_size} a whole multiple of 8")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # A partial run never overwrites the full report by default.
    part = "-ops" if args.ops_only else "-fast" if args.fast_only else "-model" if args.model_only else ""
    out = args.out or ROOT / "bench" / "results" / f"tlc_speed-{device}{part}.md"
    t0 = time.perf_counter()
    copy_gb = copy_bandwidth(device) / 1e9
    ops = [] if args.model_only else op_rows(args.preset, args.size, args.train_size, device, args.warmup, args.reps)
    model = {} if args.ops_only else model_rows(args.preset, args.model_size, model_train_size(args), device,
                                                args.warmup, args.reps, reference_too=not args.fast_only)
    text = report(args, environment(device), copy_gb, ops, model, time.perf_counter() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    bad = [r for r in ops if r["err"] > 1e-4] + [a for a, err in model.get("errors", {}).items() if err > 1e-4]
    if bad:
        print(f"outputs off the reference (float32 tolerance 1e-4): {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
