"""Where the time of MPRNet goes: torch.profiler over one training step (forward, MPRNetLoss,
backward, Adam step) and one inference of the fast MPRNet ("ours") and of the reference, split
into convolutions (forward and backward) and everything else, with the top other ops.

    python bench/profile_model.py                      # CPU: training 1x3x128x128, inference 1x3x256x256
    python bench/profile_model.py --what train --json profile.json
    python bench/profile_model.py --device cuda        # GPU: training 16x3x256x256 under bf16 autocast

How time is counted: the profiler's op tree is walked from its roots; an op that is a
convolution (aten::conv2d and what it calls, or a convolution's backward: ConvolutionBackward0,
aten::convolution_backward) counts whole, with everything under it but dtype casts (autocast's),
as convolution time, forward or backward; any other op counts its self time (its time minus its
children's) as "everything else", under the phase it runs in (forward, which includes the loss;
backward, under the autograd engine; optimizer, under Adam's step). On a CPU the times are the
ops' CPU times (the wall time of the thread that runs them, so a parallel op counts once); on
CUDA the device (kernel) times of what each op launched, so the split is of GPU busy time, and
`rest_pct_of_step` gives everything else as a share of the step's wall time too (the goal there:
under 10%). The implementations and the step are `mprnet_kernels.benchmark`'s (model_impls,
training_step), as `mprnet-kernels bench` times them; both models start from the same weights.
Each call is profiled on its own, `--profile-reps` times, and the median one reported: on a
shared machine a call slowed by another process would otherwise make the split.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

import torch

if __package__ in (None, ""):  # run as a script: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mprnet_kernels import benchmark as mk  # noqa: E402

# aten::conv2d, aten::convolution, aten::_convolution and the backends they call
# (mkldnn_convolution, cudnn_convolution, thnn_conv2d, _slow_conv2d_forward, conv_depthwise2d),
# and the prepacked oneDNN convolutions with fused post-ops (mkldnn::_convolution_pointwise*,
# mprnet_kernels.nn.onednn): their PReLU and adds count as convolution time.
_CONV_FORWARD = re.compile(r"^aten::_?(conv[123]d|convolution$|[a-z]+_convolution|thnn_conv|slow_conv|conv_depthwise)"
                           r"|^mkldnn::_convolution_pointwise")
_CONV_BACKWARD = re.compile(r"ConvolutionBackward|^aten::.*conv.*backward")


def conv_kind(name: str) -> Optional[str]:
    """"backward" or "forward" for a convolution op (or the autograd node of its backward),
    None for anything else."""
    if _CONV_BACKWARD.search(name):
        return "backward"
    if _CONV_FORWARD.search(name):
        return "forward"
    return None


def _phase(name: str, inherited: str) -> str:
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if name.startswith("Optimizer.") or name.startswith("Optimizer#"):
        return "optimizer"
    return inherited


_CASTS = ("aten::to", "aten::_to_copy")


def _casts_under(event):
    """The outermost dtype casts (aten::to, aten::_to_copy) below `event`."""
    for child in event.cpu_children:
        if child.name in _CASTS:
            yield child
        else:
            yield from _casts_under(child)


def split_times(events: Iterable, device_time: bool = False) -> dict:
    """Microseconds of convolutions (forward, backward) and of everything else (by phase and by
    op name) in a profiler's events (prof.events()), CPU time or, with device_time, the device
    time of what the ops launched."""
    cpu = torch.autograd.DeviceType.CPU
    total_of = (lambda e: e.device_time_total) if device_time else (lambda e: e.cpu_time_total)
    self_of = (lambda e: e.self_device_time_total) if device_time else (lambda e: e.self_cpu_time_total)
    conv = {"forward": 0.0, "backward": 0.0}
    rest = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    by_name: Dict[str, float] = defaultdict(float)
    events = [e for e in events if e.device_type == cpu]
    stack = [(e, "forward") for e in events if e.cpu_parent is None]
    while stack:
        event, phase = stack.pop()
        kind = conv_kind(event.name)
        if kind is not None:
            # Dtype casts inside a convolution (autocast's, of the weights and inputs) are not
            # convolution work: they count as everything else.
            casts = list(_casts_under(event))
            conv[kind] += total_of(event) - sum(total_of(c) for c in casts)
            for c in casts:
                rest[_phase(event.name, phase)] += total_of(c)
                by_name[c.name] += total_of(c)
            continue
        phase = _phase(event.name, phase)
        own = self_of(event)
        rest[phase] += own
        by_name[event.name] += own
        stack.extend((child, phase) for child in event.cpu_children)
    total = sum(conv.values()) + sum(rest.values())
    return {"total_us": total, "conv_us": conv, "rest_us": rest, "rest_by_op_us": dict(by_name)}


def summarize(split: dict, top: int = 8) -> dict:
    """Shares in percent of the profiled total, and the `top` other ops."""
    total = split["total_us"] or 1.0
    conv, rest = split["conv_us"], split["rest_us"]
    ranked = sorted(split["rest_by_op_us"].items(), key=lambda kv: -kv[1])[:top]
    return {
        "profiled_ms": round(split["total_us"] / 1e3, 2),
        "conv_pct": round(100 * sum(conv.values()) / total, 1),
        "conv_forward_pct": round(100 * conv["forward"] / total, 1),
        "conv_backward_pct": round(100 * conv["backward"] / total, 1),
        "rest_pct": round(100 * sum(rest.values()) / total, 1),
        "rest_pct_by_phase": {k: round(100 * v / total, 1) for k, v in rest.items()},
        "top_other_ops": [{"op": name, "ms": round(us / 1e3, 2), "pct": round(100 * us / total, 1)}
                          for name, us in ranked],
    }


def profile_call(fn: Callable[[], object], device: str):
    """torch.profiler over one fn() (CPU activity, plus CUDA on a CUDA device)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        mk.synchronize(device)
    return prof


def wall_time(fn: Callable[[], object], device: str, reps: int) -> float:
    """Median seconds of fn() (not profiled)."""
    times = []
    for _ in range(reps):
        mk.synchronize(device)
        t0 = time.perf_counter()
        fn()
        mk.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def profile_model(impl: str, what: str, preset: str, device: str, dtype: torch.dtype, batch: int, image: int,
                  warmup: int = 1, reps: int = 1, top: int = 8, overrides: Optional[dict] = None,
                  profile_reps: int = 3) -> dict:
    """Profile of one training step ("train") or one inference ("infer") of implementation
    `impl` ("ours" or "eager", the reference; or their "_compile" variants): `profile_reps`
    calls are profiled one by one and the one whose profiled time is the median is reported (a
    call slowed by another process on a shared machine does not make the split)."""
    impls = mk.model_impls(preset, device, overrides, compile_=impl.endswith("compile"))
    model, weights, loss_fn = impls[impl]
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, image, image, device=device, generator=g)
    initial = {k: v.detach().clone() for k, v in weights.state_dict().items()} if what == "train" else None
    try:
        if what == "train":
            y = torch.rand(batch, 3, image, image, device=device, generator=g)
            weights.train()
            fn, _, _ = mk.training_step(model, weights, loss_fn, x, y, dtype)
            grad_mode = torch.enable_grad()
        else:
            weights.eval()
            fn = lambda: model(x)  # noqa: E731
            grad_mode = torch.no_grad()
        # The training step applies autocast itself (around the forward and the loss).
        with grad_mode, (mk.autocast(device, dtype) if what == "infer" else contextlib.nullcontext()):
            for _ in range(warmup):
                fn()
            wall = wall_time(fn, device, reps)
            splits = []
            for _ in range(max(profile_reps, 1)):
                events = profile_call(fn, device).events()
                splits.append((split_times(events, device_time=False),
                               split_times(events, device_time=True) if device == "cuda" else None))
    finally:
        if initial is not None:
            weights.load_state_dict(initial)
            weights.zero_grad(set_to_none=True)
        weights.eval()
    splits.sort(key=lambda pair: (pair[1] or pair[0])["total_us"])
    cpu_split, gpu = splits[len(splits) // 2]
    result = {
        "model": {"eager": "reference", "compile": "reference_compile"}.get(impl, impl),
        "what": "training step" if what == "train" else "inference",
        "preset": preset, "device": device, "dtype": str(dtype)[6:], "shape": list(x.shape),
        "wall_ms": round(wall * 1e3, 2), "profiled_calls": max(profile_reps, 1),
    }
    result.update(summarize(cpu_split, top))
    if gpu is not None:
        result["gpu"] = summarize(gpu, top)
        result["gpu"]["busy_pct_of_step"] = round(100 * gpu["total_us"] / 1e3 / result["wall_ms"], 1)
        result["gpu"]["rest_pct_of_step"] = round(100 * sum(gpu["rest_us"].values()) / 1e3 / result["wall_ms"], 1)
    return result


def format_result(r: dict) -> str:
    def block(s: dict, unit: str) -> List[str]:
        by_phase = ", ".join(f"{k} {v}%" for k, v in s["rest_pct_by_phase"].items())
        lines = [f"  {unit}: profiled {s['profiled_ms']:.1f} ms",
                 f"    convolutions     {s['conv_pct']:5.1f}%  (forward {s['conv_forward_pct']}%, "
                 f"backward {s['conv_backward_pct']}%)",
                 f"    everything else  {s['rest_pct']:5.1f}%  ({by_phase})"]
        if "rest_pct_of_step" in s:
            lines.append(f"    GPU busy {s['busy_pct_of_step']}% of the step's wall time; everything else "
                         f"{s['rest_pct_of_step']}% of it")
        lines.append("    top other ops: " + ", ".join(f"{o['op']} {o['pct']}%" for o in s["top_other_ops"]))
        return lines

    head = (f"{r['model']} {r['what']} {r['preset']} {'x'.join(map(str, r['shape']))} {r['dtype']} "
            f"({r['device']}): {r['wall_ms']:.1f} ms a call, not profiled; the median of "
            f"{r['profiled_calls']} profiled calls:")
    lines = [head] + block(r, "CPU time")
    if "gpu" in r:
        lines += block(r["gpu"], "GPU time")
    return "\n".join(lines)


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if cuda else "cpu")
    p.add_argument("--preset", default="deblur", choices=["deblur", "derain", "denoise"])
    p.add_argument("--what", default="train,infer", help="comma list: train, infer")
    p.add_argument("--models", default="ours,reference", help="comma list: ours, reference (and ours_compile, "
                                                                 "reference_compile: torch.compile of each; slow "
                                                                 "on a CPU)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="float32, or bfloat16 autocast (default: float32 on CPU, bfloat16 on CUDA)")
    p.add_argument("--train-batch", type=int, default=None, help="default 1 on CPU, 16 on CUDA")
    p.add_argument("--train-image", type=int, default=None, help="default 128 on CPU, 256 on CUDA")
    p.add_argument("--infer-image", type=int, default=256)
    p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 1 on CPU, 3 on CUDA)")
    p.add_argument("--reps", type=int, default=None, help="timed (not profiled) calls (default 1 on CPU, 5 on CUDA)")
    p.add_argument("--profile-reps", type=int, default=3,
                   help="calls profiled one by one; the median one is reported (default 3)")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: benchmark.TINY_MODEL
    args = p.parse_args(argv)
    device = args.device
    if device == "cuda" and not cuda:
        p.error("no CUDA device here")
    on_gpu = device == "cuda"
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_gpu else "float32"))
    train_batch = args.train_batch or (16 if on_gpu else 1)
    train_image = args.train_image or (256 if on_gpu else 128)
    warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    reps = args.reps if args.reps is not None else (5 if on_gpu else 1)
    overrides = mk.TINY_MODEL if args.tiny else None
    names = {"ours": "ours", "reference": "eager", "ours_compile": "ours_compile", "reference_compile": "compile"}
    results = []
    for what in [w.strip() for w in args.what.split(",") if w.strip()]:
        if what not in ("train", "infer"):
            p.error(f"--what: unknown {what!r}")
        batch, image = (train_batch, train_image) if what == "train" else (1, args.infer_image)
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            if model not in names:
                p.error(f"--models: unknown {model!r}")
            r = profile_model(names[model], what, args.preset, device, dtype, batch, image, warmup, reps, args.top,
                              overrides, args.profile_reps)
            results.append(r)
            print(format_result(r), flush=True)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        env = mk.environment(device)
        path.write_text(json.dumps({**env, "results": results}, indent=2))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
