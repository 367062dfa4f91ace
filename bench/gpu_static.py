"""What the real compilers make of every GPU kernel, without a GPU: registers, local memory
(spills), stack frame, shared memory and the widths of the global loads and stores.

    python bench/gpu_static.py [--arch 90] [--jobs 2] [--out DIR] [--check] [--ops edge_loss,...] [--representatives]

Triton: a stand-in driver reports an sm_<arch> target, so the package's own launchers drive
Triton's real JIT for the op shapes the three presets' models produce (batch 1, 4 and 16 at
256x256, from mprnet_kernels.shapes) and for the shapes `mprnet-kernels verify` uses, in every
dtype and autocast mix, both layouts and every flag of the ops. The JIT's cache hook records
each specialisation the launchers ask for and skips the launch; each distinct one is then
compiled once (in --jobs processes) and its cubin read with the cuobjdump that ships with
Triton. CUDA C++: cuobjdump on the built extension.

--check exits 1 on a compile error, and on local memory, spill instructions or a stack frame in
any float32/bfloat16/float16 kernel that ALLOWED does not list with its reason (float64 paths
exist for verification: reported, never failed). The report: DIR/report.json (every
specialisation) and DIR/summary.md (one row per kernel); default DIR bench/results/static-sm<arch>.

--representatives compiles one specialisation of each class that differs only in what the launch
knows of its arguments' alignment (Triton's divisibility-by-16 of pointers and ints): same
kernel, argument dtypes, constexprs and launch options; the member that knows the most (widest
loads) stands for the class. About half the specialisations, so half the time: what CI runs
(.ci/run), where the full set takes 15 minutes cold on 2 cores. The committed report is the
full set.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

ROOT = Path(__file__).resolve().parent.parent

#: Kernels allowed to keep local memory in float32/half (by kernel name, or a CUDA C++
#: instantiation as `name<args>`), with the reason; the README lists them.
ALLOWED: Dict[str, str] = {
    "_ca_mlp_backward_samples_kernel": (
        "8 bytes a thread (one or two spill stores) in 6 of its 320 configurations: "
        "3-D (sample, channel, hidden) tiles over vectors of a few KB per CAB"),
    "_ca_mlp_backward_weights_kernel": (
        "8 bytes a thread (one spilled register) in 3 of its 100 configurations: two "
        "(channel, hidden) accumulators live across the loop over samples"),
    "_ca_mlp_forward_kernel": (
        "8 bytes a thread in 2 of its 304 configurations (4K-element tiles on 8 warps; 8K on 4 "
        "warps spilled in 25): one program per sample over vectors of C floats, so a spilled "
        "register is a few cached accesses per CAB"),
}

BATCHES = (1, 4, 16)
HALVES = ("bfloat16", "float16")
DTYPES = ("float64", "float32") + HALVES


# -------------------------------------------------------------------------------------------
# The stand-in driver: enough of Triton's driver interface for the JIT to compile for a target.

class StandInDriver:
    """Reports one CUDA device of compute capability `arch`; nothing is ever launched."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def is_active(self):
        return True

    def get_current_target(self):
        return self.target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")

    def get_device_interface(self):
        import torch

        return torch.cuda


def install_driver(arch: int) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    from triton.runtime import driver

    driver.set_active(StandInDriver(arch))


@dataclass
class Spec:
    """One specialisation a launcher asked for."""
    module: str
    name: str
    data: str  # Triton's serialized specialisation (JITFunction.preload takes it)
    repr: str
    contexts: List[str] = field(default_factory=list)


@contextlib.contextmanager
def recording(specs: Dict[str, Spec], context: List[str]) -> Iterator[None]:
    """While active, every JIT launch records its specialisation (tagged with context[0]) and
    is skipped: no compile, no launch."""
    from triton import knobs

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        data = compile["specialization_data"]
        spec = specs.setdefault(data, Spec(fn.module, fn.name, data, repr))
        if context[0] not in spec.contexts:
            spec.contexts.append(context[0])
        return True  # handled: the JIT returns without compiling or launching

    old = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        yield
    finally:
        knobs.runtime.jit_cache_hook = old


# -------------------------------------------------------------------------------------------
# The launch cases: every op's Triton entry points at the model's and verify's shapes.

def _dtype(name):
    import torch

    return getattr(torch, name)


def _empty(shape, dtype, channels_last=False):
    import torch

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=_dtype(dtype) if isinstance(dtype, str) else dtype, memory_format=fmt)


def op_shapes() -> Dict[str, List[tuple]]:
    """{op: [(label, shape)]}: the distinct shapes of each op in the presets' models at the batches
    of BATCHES, and the shape verify uses."""
    import torch

    from mprnet_kernels import registry, shapes
    from mprnet_kernels.reference import PRESETS

    found = collections.defaultdict(dict)
    for preset in PRESETS:
        for batch in BATCHES:
            for op, entries in shapes.model_shapes(preset, batch).items():
                for e in entries:
                    found[op].setdefault(e.shape, f"{preset} b{batch}")
    g = torch.Generator().manual_seed(0)
    for name, spec in registry.OPS.items():
        found[name].setdefault(tuple(spec.verify_inputs(g)[0].shape), "verify")
    return {op: [(label, shape) for shape, label in by_shape.items()] for op, by_shape in found.items()}


def _layouts(shape):
    return (False, True) if len(shape) == 4 else (False,)


def _cases_sam_gate(k, shape, dtype, cl):
    x1, z, x = (_empty(shape, dtype, cl) for _ in range(3))
    out = k("sam_gate")(x1, z, x)
    k("sam_gate_backward")(_empty(shape, dtype, cl), x1, z)
    return out


def _ca_tail_weights(c, wdtype):
    from mprnet_kernels.reference import PRESETS

    (reduction,) = {p["reduction"] for p in PRESETS.values()}  # the presets share one
    hidden = max(c // reduction, 1)
    return (_empty((hidden, c, 1, 1), wdtype), _empty((hidden,), wdtype), _empty((c, hidden, 1, 1), wdtype),
            _empty((c,), wdtype))


def ca_tail_mixes():
    """(x, r/grad, weights) dtypes: uniform, and autocast's half body output with float32 residual
    and weights."""
    return [(d, d, d) for d in DTYPES] + [(h, "float32", "float32") for h in HALVES] + \
           [(h, h, "float32") for h in HALVES]


def _cases_ca_tail(k, shape, mix, cl):
    xd, rd, wd = mix
    x, r = _empty(shape, xd, cl), _empty(shape, rd, cl)
    w1, b1, w2, b2 = _ca_tail_weights(shape[1], wd)
    out, p, h, s = k("ca_tail_forward")(x, r, w1, b1, w2, b2)
    k("ca_tail_backward")(_empty(shape, rd, cl), x, w1, w2, p, h, s)
    k("ca_tail_forward")(x, r, w1, None, w2, None)


def _cases_local_ca_tail(k, shape, window, mix, cl):
    xd, rd, wd = mix
    x, r = _empty(shape, xd, cl), _empty(shape, rd, cl)
    w1, b1, w2, b2 = _ca_tail_weights(shape[1], wd)
    k("local_ca_tail")(x, r, w1, b1, w2, b2, *window)
    k("local_ca_tail")(x, r, w1, None, w2, None, *window)


def _cases_pair_loss(op):
    def run(k, shape, dtype, cl):
        x, y = _empty(shape, dtype, cl), _empty(shape, dtype, cl)
        for compute_grad in (True, False):
            k(op)(x, y, 1e-3, compute_grad)
    return run


def _cases_mprnet_loss(k, shape, dtype, cl):
    outs = [_empty(shape, dtype, cl) for _ in range(3)]
    y = _empty(shape, dtype, cl)
    for edge_weight in (0.05, 0.0):
        for clamp in (False, True):
            for grad_outputs, grad_y in ((True, True), (True, False), (False, True), (False, False)):
                k("mprnet_loss")(outs, y, 1e-3, edge_weight, clamp, grad_outputs, grad_y)


def _cases_upsample(k, shape, mix, layouts):
    import torch

    xd, yd = mix
    n, c, h, w = shape
    x, y = _empty(shape, xd, layouts[0]), _empty((n, c, 2 * h, 2 * w), yd, layouts[1])
    out = k("upsample2x_add")(x, y)
    k("upsample2x_add_backward")(torch.empty_like(out), _dtype(xd))


def launch_cases():
    """(op, label, run) for every launch case; run(k) calls the Triton entry points through
    k(schema) (the registered Triton kernel of that schema)."""
    mixes_up = [(d, d) for d in DTYPES] + [(h, "float32") for h in HALVES] + [("float32", h) for h in HALVES]
    from mprnet_kernels.registry import _local_window
    from mprnet_kernels.shapes import local_attention_tails

    shapes = op_shapes()
    # local_ca_tail: the model's shapes with the registry's window (3/4 of the map), and the tails of
    # a 720x1280 deblur inference with TLC's windows.
    local = [(label, shape, _local_window(shape)) for label, shape in shapes.pop("local_ca_tail")]
    local += [("deblur 720x1280 local", shape, window) for shape, window, _ in local_attention_tails()]
    for label, shape, window in local:
        for cl in _layouts(shape):
            lay = "channels_last" if cl else "nchw"
            for mix in ca_tail_mixes():
                yield "local_ca_tail", f"local_ca_tail {label} {shape} window {window} {'/'.join(mix)} {lay}", \
                    lambda k, s=shape, wi=window, m=mix, c=cl: _cases_local_ca_tail(k, s, wi, m, c)
    for op, entries in shapes.items():
        for label, shape in entries:
            for cl in _layouts(shape):
                lay = "channels_last" if cl else "nchw"
                if op == "ca_tail":
                    for mix in ca_tail_mixes():
                        yield op, f"{op} {label} {shape} {'/'.join(mix)} {lay}", \
                            lambda k, s=shape, m=mix, c=cl: _cases_ca_tail(k, s, m, c)
                elif op == "upsample2x_add":
                    for mix in mixes_up:
                        for ylay in (False, True):
                            yield op, f"{op} {label} {shape} {'/'.join(mix)} x {lay} y {'cl' if ylay else 'nchw'}", \
                                lambda k, s=shape, m=mix, ls=(cl, ylay): _cases_upsample(k, s, m, ls)
                else:
                    run = {"sam_gate": _cases_sam_gate, "mprnet_loss": _cases_mprnet_loss}.get(op) or \
                        _cases_pair_loss(op)
                    for dtype in DTYPES:
                        yield op, f"{op} {label} {shape} {dtype} {lay}", \
                            lambda k, s=shape, d=dtype, c=cl, r=run: r(k, s, d, c)


def enumerate_specs(arch: int, cases=None) -> Dict[str, Spec]:
    """Every distinct specialisation the launchers ask for over `cases` (default launch_cases())."""
    install_driver(arch)
    import mprnet_kernels  # noqa: F401  (registers the ops and their Triton kernels)
    from mprnet_kernels.ops import _backend

    def k(schema):
        fn = _backend.kernel(schema, "triton")
        if fn is None:
            raise RuntimeError(f"no Triton kernel registered for {schema}")
        return fn

    specs: Dict[str, Spec] = {}
    context = [""]
    with recording(specs, context):
        for _, label, run in (launch_cases() if cases is None else cases):
            context[0] = label
            run(k)
    return specs


def representatives(specs: Dict[str, Spec]) -> Dict[str, Spec]:
    """One Spec per class of specialisations that differ only in their alignment attributes
    (module docstring, --representatives): the one with the most divisibility facts."""
    best: Dict[str, tuple] = {}
    for key, spec in specs.items():
        d = json.loads(spec.data)
        cls = json.dumps([d["name"], d["signature"], d["constant_keys"], d["constant_vals"],
                          d["options"]["num_warps"], d["options"]["num_stages"]])
        known = sum(len(v) for v in d["attrs_vals"])
        if cls not in best or known > best[cls][0]:
            best[cls] = (known, key)
    return {key: specs[key] for _, key in best.values()}


# -------------------------------------------------------------------------------------------
# Compiling and reading the machine code.

def triton_tool(name: str) -> str:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else (shutil.which(name) or name)


_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_MEM = re.compile(r"\b(LDG|STG|LDL|STL)((?:\.[A-Z0-9_]+)*)")


def _width(suffixes: str) -> int:
    for part in suffixes.split("."):
        if part in ("128", "64"):
            return int(part)
        if part in ("U16", "S16"):
            return 16
        if part in ("U8", "S8"):
            return 8
    return 32


def _by_function(listing: str, header: str, arch: Optional[str]):
    """(arch, function, line) for the lines of a cuobjdump listing that follow a line matching
    `header` (which captures the function's name), tracking the `arch = sm_XX` lines."""
    name = None
    for line in listing.splitlines():
        m = re.match(r"\s*arch = (sm_\d+)", line)
        if m:
            arch = m[1]
        m = re.match(header, line)
        if m:
            name = m[1]
            continue
        if name:
            yield arch, name, line


def read_machine_code(path: str, arch: Optional[str] = None) -> Dict[str, dict]:
    """{function: {regs, stack, shared, local, ldg: {width: n}, stg: {...}, ldl, stl}} of a cubin
    (of `arch`) or a shared object with embedded cubins, keyed "sm_XX:function"."""
    def dump(flag):
        return subprocess.run([triton_tool("cuobjdump"), flag, path], capture_output=True, text=True,
                              check=True).stdout

    out: Dict[str, dict] = {}
    for a, name, line in _by_function(dump("--dump-resource-usage"), r"\s*Function (\S+):", arch):
        m = _USAGE.search(line)
        if m and f"{a}:{name}" not in out:
            out[f"{a}:{name}"] = dict(arch=a, function=name, regs=int(m[1]), stack=int(m[2]), shared=int(m[3]),
                                      local=int(m[4]), ldg={}, stg={}, ldl=0, stl=0)
    for a, name, line in _by_function(dump("--dump-sass"), r"\s*Function : (\S+)", arch):
        row = out.get(f"{a}:{name}")
        if row is None:
            continue
        for op, suffixes in _MEM.findall(line):
            if op in ("LDL", "STL"):
                row[op.lower()] += 1
            else:
                w = str(_width(suffixes))
                row[op.lower()][w] = row[op.lower()].get(w, 0) + 1
    return out


def _compile_one(job):
    """In a worker: compile one specialisation for the target and read its cubin."""
    arch, module, name, data = job
    install_driver(arch)
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        kernel = obj.preload(data)
        with tempfile.TemporaryDirectory() as tmp:
            cubin = Path(tmp) / "k.cubin"
            cubin.write_bytes(kernel.asm["cubin"])
            code = read_machine_code(str(cubin), f"sm_{arch}")
        if len(code) != 1:
            raise RuntimeError(f"expected one function in the cubin, found {sorted(code)}")
        row = next(iter(code.values()))
        row["shared"] = max(row["shared"], int(kernel.metadata.shared))
        row["num_warps"] = kernel.metadata.num_warps
        return dict(row, error=None)
    except Exception as exc:  # reported per specialisation; --check fails on it
        return dict(error=f"{type(exc).__name__}: {exc}")


def _signature_types(data: str) -> dict:
    return json.loads(data)["signature"]


def _constexprs(data: str) -> dict:
    d = json.loads(data)
    return {k[0] if isinstance(k, list) and len(k) == 1 else str(k): v
            for k, v in zip(d["constant_keys"], d["constant_vals"])}


def is_float64(signature: dict) -> bool:
    return any(str(t) == "*fp64" for t in signature.values())


def compile_all(specs: Dict[str, Spec], arch: int, jobs: int) -> List[dict]:
    jobs_list = [(arch, s.module, s.name, s.data) for s in specs.values()]
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_compile_one, jobs_list, chunksize=4))
    rows = []
    for spec, result in zip(specs.values(), results):
        sig = _signature_types(spec.data)
        consts = {k: v for k, v in _constexprs(spec.data).items() if not str(k).startswith("(")}
        rows.append(dict(kernel=spec.name.split(".")[-1], module=spec.module, float64=is_float64(sig),
                         signature=" ".join(str(t) for t in sig.values() if str(t) != "constexpr"),
                         constexprs=consts, first_case=spec.contexts[0], cases=len(spec.contexts), **result))
    return rows


def cuda_cpp_rows(arch: int) -> List[dict]:
    """The CUDA C++ kernels of the built extension for sm_<arch> (none without a CUDA build)."""
    import mprnet_kernels._C as ext

    if not mprnet_kernels_built_with_cuda():
        return []
    rows = []
    for row in read_machine_code(ext.__file__).values():
        if row["arch"] != f"sm_{arch}":
            continue
        demangled = subprocess.run(["c++filt", row["function"]], capture_output=True, text=True).stdout.strip()
        rows.append(dict(row, kernel=_short_name(demangled), instance=_instance(demangled), demangled=demangled,
                         float64="double" in _head(demangled), error=None))
    return rows


def mprnet_kernels_built_with_cuda() -> bool:
    import mprnet_kernels

    return bool(mprnet_kernels.build_info()["cuda_version"])


def _head(demangled: str) -> str:
    """A demangled kernel's `name<args>` with its namespaces, without `void` and parameters."""
    return demangled.replace("(anonymous namespace)::", "").split("(")[0].replace("void ", "").strip()


def _instance(demangled: str) -> str:
    """`name<args>` of a demangled kernel, namespaces left out."""
    name, _, args = _head(demangled).partition("<")
    return name.split("::")[-1] + ("<" + re.sub(r"\b\w+::", "", args) if args else "")


def _short_name(demangled: str) -> str:
    return _head(demangled).split("<")[0].split("::")[-1]


# -------------------------------------------------------------------------------------------
# Verdict and report.

def problems(rows: List[dict], allowed: Dict[str, str] = ALLOWED) -> List[str]:
    """What --check fails on: compile errors; local memory, spill instructions or a stack frame in
    a kernel that is not float64 and not allowed."""
    found = []
    for r in rows:
        what = f"{r['kernel']} ({r.get('first_case') or r.get('demangled')})"
        if r.get("error"):
            found.append(f"compile error: {what}: {r['error']}")
        elif (not r["float64"] and r["kernel"] not in allowed and r.get("instance") not in allowed
              and (r["local"] or r["stack"] or r["stl"] or r["ldl"])):
            found.append(f"local memory: {what}: {r['local']} B local, {r['stack']} B stack, "
                         f"{r['stl']} spill stores, {r['ldl']} spill loads")
    return found


def summary(rows: List[dict], title: str) -> str:
    by = collections.OrderedDict()
    for r in rows:
        by.setdefault(r["kernel"], []).append(r)
    lines = [f"### {title}", "",
             "| kernel | configs | float64 | registers max | local/stack B max (f32/half) | local/stack B max (f64) "
             "| shared B max | 128-bit loads | narrowest load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in by.items():
        ok = [r for r in rs if not r.get("error")]
        errors = len(rs) - len(ok)

        def spill(sel):
            vals = [max(r["local"], r["stack"]) for r in ok if sel(r)]
            return str(max(vals)) if vals else "-"

        widths = sorted({int(w) for r in ok for w in r["ldg"]})
        wide = sum(1 for r in ok if r["ldg"].get("128"))
        lines.append(f"| {name} | {len(rs)}{f' ({errors} failed)' if errors else ''} | "
                     f"{sum(r['float64'] for r in rs)} | {max((r['regs'] for r in ok), default='-')} | "
                     f"{spill(lambda r: not r['float64'])} | {spill(lambda r: r['float64'])} | "
                     f"{max((r['shared'] for r in ok), default='-')} | {wide} of {len(ok)} | "
                     f"{widths[0] if widths else '-'} |")
    return "\n".join(lines) + "\n"


def _report_json(report: dict) -> str:
    """JSON with one kernel row a line, so that a change of the report reads as a short diff."""
    lines = ["{"]
    for key, value in report.items():
        if isinstance(value, list):
            rows = ",\n".join("  " + json.dumps(r, sort_keys=True, separators=(",", ":")) for r in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ],")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)},")
    lines[-1] = lines[-1].rstrip(",")
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x10 (default 90: Hopper)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiling processes")
    p.add_argument("--out", type=Path, default=None, help="report folder (default bench/results/static-sm<arch>)")
    p.add_argument("--check", action="store_true", help="exit 1 on compile errors or unallowed local memory")
    p.add_argument("--ops", default="", help="comma-separated ops to compile (default: all), for a quick look")
    p.add_argument("--representatives", action="store_true",
                   help="one specialisation per class differing only in alignment facts (about half; what CI runs)")
    args = p.parse_args(argv)
    out = args.out or ROOT / "bench" / "results" / f"static-sm{args.arch}"
    out.mkdir(parents=True, exist_ok=True)
    import triton
    import torch

    wanted = {o for o in args.ops.split(",") if o}
    specs = enumerate_specs(args.arch, [c for c in launch_cases() if not wanted or c[0] in wanted])
    found_specs = len(specs)
    if args.representatives:
        specs = representatives(specs)
    print(f"{found_specs} distinct Triton specialisations for sm_{args.arch}"
          + (f", {len(specs)} representatives of their alignment classes" if args.representatives else "")
          + f"; compiling with {args.jobs} processes", flush=True)
    triton_rows = compile_all(specs, args.arch, args.jobs)
    cuda_rows = cuda_cpp_rows(args.arch)
    report = dict(arch=args.arch, triton=triton.__version__, torch=torch.__version__,
                  allowed=ALLOWED, triton_kernels=triton_rows, cuda_cpp_kernels=cuda_rows)
    (out / "report.json").write_text(_report_json(report))
    text = (f"# Static report, sm_{args.arch} (triton {triton.__version__}, torch {torch.__version__})\n\n"
            f"`python bench/gpu_static.py --arch {args.arch}`; every row is one kernel, over its configurations.\n\n"
            + summary(triton_rows, f"Triton ({len(triton_rows)} specialisations)") + "\n"
            + (summary(cuda_rows, f"CUDA C++ ({len(cuda_rows)} instantiations)") if cuda_rows else
               "### CUDA C++\n\nnot built\n"))
    (out / "summary.md").write_text(text)
    print(text)
    found = problems(triton_rows + cuda_rows)
    for line in found:
        print("FAIL", line)
    print(f"{len(found)} problem(s); report in {out}")
    return 1 if (args.check and found) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
