"""bench/gpu_static.py: the stand-in driver drives Triton's real compiler, and --check fails on
what it should. The planted kernels compile in a subprocess (the stand-in driver replaces the
interpreter that the rest of the tests use)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_static  # noqa: E402
from mprnet_kernels import registry  # noqa: E402

pytest.importorskip("triton")

PLANTED = '''
import torch
import triton
import triton.language as tl


@triton.jit
def fine(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=m) * 2.0, mask=m)


@triton.jit
def spills(x_ptr, R: tl.constexpr, C: tl.constexpr):
    # A whole R x C tile live at once in one warp: far more values than registers.
    r = tl.arange(0, R)[:, None]
    c = tl.arange(0, C)[None, :]
    v = tl.load(x_ptr + r * C + c)
    acc = tl.zeros((R, C), dtype=tl.float32)
    for i in range(8):
        acc = acc * v + tl.exp(v * i)
    tl.store(x_ptr + r * C + c, acc + tl.sum(acc, axis=0)[None, :] * tl.sum(acc, axis=1)[:, None])


@triton.jit
def rejected(x_ptr):
    # The compiler rejects a range that is not a power of 2.
    offs = tl.arange(0, 3)
    tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1.0)


def cases(which):
    x = torch.empty(128 * 64, dtype=torch.float32)
    runs = {
        "fine": lambda k: fine[(4,)](x, x.numel(), BLOCK=1024),
        "spill": lambda k: spills[(1,)](x, R=128, C=64, num_warps=1),
        "error": lambda k: rejected[(1,)](x),
    }
    return [("planted", which, runs[which])]
'''

RUN = '''
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import gpu_static as g
import planted_kernels
specs = g.enumerate_specs(90, planted_kernels.cases(sys.argv[3]))
rows = g.compile_all(specs, 90, 1)
print(json.dumps({"rows": rows, "problems": g.problems(rows)}))
'''


def _planted(tmp_path, which):
    (tmp_path / "planted_kernels.py").write_text(PLANTED)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the real compiler
    run = subprocess.run([sys.executable, "-c", RUN, str(ROOT / "bench"), str(tmp_path), which],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_clean_kernel_passes_with_wide_loads(tmp_path):
    out = _planted(tmp_path, "fine")
    (row,) = out["rows"]
    assert row["error"] is None and out["problems"] == []
    assert row["regs"] > 0 and row["ldg"].get("128") and row["stg"].get("128"), row


def test_a_planted_spill_fails_the_check(tmp_path):
    out = _planted(tmp_path, "spill")
    (row,) = out["rows"]
    assert row["stack"] or row["local"], row
    assert row["stl"] > 0 and len(out["problems"]) == 1 and "local memory: spills" in out["problems"][0]


def test_a_planted_compile_error_fails_the_check(tmp_path):
    out = _planted(tmp_path, "error")
    (row,) = out["rows"]
    assert row["error"] and out["problems"][0].startswith("compile error: rejected")


def _row(**kw):
    base = dict(kernel="k", float64=False, error=None, local=0, stack=0, stl=0, ldl=0, first_case="c")
    return {**base, **kw}


def test_problems_rules():
    assert gpu_static.problems([_row()]) == []
    assert len(gpu_static.problems([_row(stack=8, stl=1)])) == 1
    assert gpu_static.problems([_row(stack=8, stl=1, float64=True)]) == []  # reported, not failed
    assert gpu_static.problems([_row(kernel="a", stack=8)], allowed={"a": "why"}) == []
    assert gpu_static.problems([_row(kernel="mlp", instance="mlp<float, double>", stack=8)],
                               allowed={"mlp<float, double>": "why"}) == []
    assert len(gpu_static.problems([_row(kernel="mlp", instance="mlp<float, float>", stack=8)],
                                   allowed={"mlp<float, double>": "why"})) == 1
    assert gpu_static.problems([_row(error="boom")])[0].startswith("compile error")


def test_load_widths_from_sass_suffixes():
    assert [gpu_static._width(s) for s in (".E.128.CONSTANT", ".E.64", ".E", ".E.U16", ".E.S8.CONSTANT")] == \
        [128, 64, 32, 16, 8]


def test_instance_names():
    d = ("void mprnet::cuda::(anonymous namespace)::mlp_forward_kernel<float, double>(float const*, "
         "mprnet::cuda::(anonymous namespace)::PartialLayout, long)")
    assert gpu_static._instance(d) == "mlp_forward_kernel<float, double>"
    assert gpu_static._instance("void mprnet::cuda::tiles::edge_tile_kernel<c10::Half, float, 128, 160, 1, true>(x)") \
        == "edge_tile_kernel<Half, float, 128, 160, 1, true>"


def test_launch_cases_cover_every_op_dtype_and_layout():
    ops = {}
    for op, label, _ in gpu_static.launch_cases():
        ops.setdefault(op, set()).add(label)
    assert set(ops) == set(registry.op_names())
    for op, labels in ops.items():
        for word in ("float64", "float32", "bfloat16", "float16", "verify", " b1 ", " b16 "):
            assert any(word in label for label in labels), (op, word)
        assert any("channels_last" in label for label in labels) or op == "upsample2x_add"
    assert any("bfloat16/float32/float32" in label for label in ops["ca_tail"])  # autocast's mix
    assert any("y cl" in label and "x nchw" in label for label in ops["upsample2x_add"])


def test_the_committed_report_is_clean():
    report = json.loads((ROOT / "bench/results/static-sm90/report.json").read_text())
    rows = report["triton_kernels"] + report["cuda_cpp_kernels"]
    assert rows and gpu_static.problems(rows, report["allowed"]) == []
    assert report["allowed"] == gpu_static.ALLOWED
    text = (ROOT / "README.md").read_text()
    for name in gpu_static.ALLOWED:
        assert name in text, f"README does not say why {name} keeps local memory"


def _spec(name, n_divisible, block=1024, warps=4, dtype="*fp32"):
    data = {"name": name, "signature": {"x_ptr": dtype, "n": "i32", "BLOCK": "constexpr"},
            "constant_keys": [[2]], "constant_vals": [block],
            "attrs_keys": [[0], [1], [2]], "attrs_vals": [[["tt.divisibility", 16]] if i < n_divisible else []
                                                          for i in range(3)],
            "options": {"num_warps": warps, "num_stages": 3}}
    return gpu_static.Spec("m", name, json.dumps(data), name)


def test_representatives_keep_one_per_alignment_class_the_widest():
    specs = [_spec("k", 0), _spec("k", 2), _spec("k", 1),                # one class: the 2-fact one stands
             _spec("k", 0, block=512), _spec("k", 0, warps=8), _spec("k", 1, dtype="*bf16"),
             _spec("other", 0)]
    chosen = gpu_static.representatives({s.data: s for s in specs})
    assert len(chosen) == 5
    assert specs[1].data in chosen and specs[0].data not in chosen and specs[2].data not in chosen
    assert all(s.data in chosen for s in specs[3:])
