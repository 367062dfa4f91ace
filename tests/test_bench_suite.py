"""The pytest-benchmark suite in bench/ (run with `python -m pytest bench --benchmark-only`):
its op shapes come from the model, every op has a forward and a forward+backward benchmark,
each case checks its result before timing (and a wrong one fails), and bench/gpu_check.sh fits
its one device call."""

import dataclasses
import importlib
import re
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

from mprnet_kernels import benchmark, registry, shapes
from mprnet_kernels.benchmark import model_runs
from mprnet_kernels.reference import PRESETS

BENCH = Path(__file__).resolve().parent.parent / "bench"
for path in (BENCH, BENCH / "ops", BENCH / "model"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import _common  # noqa: E402


class StubBenchmark:
    """What harness.run_benchmark uses of pytest-benchmark's fixture; `quick` makes it one
    timed call and no warm-up."""

    def __init__(self, quick=False):
        self.extra_info = {}
        self.calls = 0
        self.quick = quick

    def pedantic(self, fn, rounds, warmup_rounds, iterations):
        if self.quick:
            rounds, warmup_rounds = 1, 0
        for _ in range(warmup_rounds):
            fn()
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        self.calls += warmup_rounds + rounds
        self.stats = type("Stats", (), {"stats": type("S", (), {"median": statistics.median(times)})()})()


def _cpu_params(op, **kw):
    return [p.values for p in _common.op_params(op, **kw) if p.values[0] == "cpu"]


@pytest.mark.parametrize("op", registry.op_names())
def test_suite_shapes_come_from_the_model(op):
    batch, image = shapes.BENCH_INPUTS["cpu"]["full"]
    params = _cpu_params(op)
    cased = {(preset, tuple(shape)) for _, preset, shape, _, _, _ in params}
    # Every shape is one the preset's model produces for the op, and every preset's three
    # heaviest are there unless another preset already makes the same call.
    for preset, shape in cased:
        assert shape in {s.shape for s in shapes.shapes_for(op, preset, batch, image, image)}
    seen = set()
    for preset in PRESETS:
        for s in shapes.shapes_for(op, preset, batch, image, image)[:3]:
            key = (s.shape, repr(registry.spec(op).call_kwargs(preset)))
            assert (preset, s.shape) in cased or key in seen
            seen.add(key)
    # Every case in each dtype of the device, ours and eager; compile at each preset's heaviest.
    for preset, shape in cased:
        impls = {(d, i) for _, p, s, d, _, i in params if (p, tuple(s)) == (preset, shape)}
        for dtype in (torch.float32, torch.bfloat16):
            assert {(dtype, "ours"), (dtype, "eager")} <= impls
        heaviest = shapes.shapes_for(op, preset, batch, image, image)[0].shape == shape
        assert any(i == "compile" for _, i in impls) == heaviest


def test_no_hand_typed_shapes_left():
    for path in (BENCH / "ops").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\(\s*\d+\s*,\s*\d+\s*,\s*\d+\s*,\s*\d+\s*\)", text), f"a shape literal in {path.name}"
        assert "def shapes_for" not in text and "def stage_output_shape" not in text and "def shape_for" not in text


@pytest.mark.parametrize("op", registry.op_names())
def test_every_op_has_forward_and_forward_backward(op):
    module = importlib.import_module(f"bench_{op}")
    for mode in ("forward", "forward_backward"):
        fn = getattr(module, f"bench_{op}_{mode}")
        [mark] = [m for m in fn.pytestmark if m.name == "parametrize"]
        assert mark.args[1] is module.CASES and len(module.CASES) > 0
    layouts = {p.values[4] for p in module.CASES}
    two = ("sam_gate", "ca_tail", "local_ca_tail", "upsample2x_add")
    assert layouts == ({"channels_last", "contiguous"} if op in two else {"contiguous"})


SMALL = {"sam_gate": (1, 8, 8, 8), "ca_tail": (1, 16, 8, 8), "local_ca_tail": (1, 16, 8, 8),
         "charbonnier_loss": (1, 3, 8, 8),
         "edge_loss": (1, 3, 8, 8), "mprnet_loss": (1, 3, 8, 8), "upsample2x_add": (1, 8, 4, 5)}


@pytest.mark.parametrize("op", registry.op_names())
def test_run_op_checks_then_times(op):
    for mode, layout, dtype, impl in (("forward", "channels_last", torch.float32, "ours"),
                                      ("forward+backward", "contiguous", torch.bfloat16, "ours"),
                                      ("forward+backward", "contiguous", torch.float32, "eager")):
        stub = StubBenchmark()
        median = _common.run_op(stub, op, mode, "cpu", "denoise", SMALL[op], dtype, layout, impl)
        info = stub.extra_info
        assert median > 0 and stub.calls == 7
        assert info["mode"] == mode and info["layout"] == layout and info["rel_err"] < _common.CHECK_TOLERANCE
        bench = registry.spec(op)
        passes = bench.passes if mode == "forward+backward" else bench.forward_passes
        assert info["bytes_moved"] == passes * torch.Size(SMALL[op]).numel() * dtype.itemsize
        assert info["gb_per_s"] > 0 and info["copy_gb_per_s"] > 0


def test_layout_is_applied():
    inputs = _common.make_inputs("ca_tail", "deblur", SMALL["ca_tail"], "cpu", torch.float32, "channels_last")
    x, r, w1, b1, w2, b2 = inputs.args
    assert x.is_contiguous(memory_format=torch.channels_last) and inputs.main is x and x.is_leaf and x.requires_grad
    assert b1 is None and b2 is None  # MPRNet's CALayer has no biases
    assert inputs.leaves == [x, r, w1, w2] and inputs.grad.is_contiguous(memory_format=torch.channels_last)
    assert w1.shape[2:] == (1, 1)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
def test_run_op_fails_on_a_wrong_result(monkeypatch, mode):
    good = registry.spec("sam_gate")
    wrong = dataclasses.replace(good, fn=lambda x1, z, x: good.fn(x1, z, x) * 1.05)
    monkeypatch.setitem(registry.OPS, "sam_gate", wrong)
    stub = StubBenchmark()
    with pytest.raises(AssertionError, match="off float64"):
        _common.run_op(stub, "sam_gate", mode, "cpu", "deblur", SMALL["sam_gate"], torch.float32, "contiguous", "ours")
    assert stub.calls == 0  # never timed


def test_model_suite_cases():
    import bench_mprnet

    ids = [p.id for p in bench_mprnet._params("training") if p.values[0] == "cpu"]
    assert len(ids) == len(PRESETS) * 2 * 4
    assert "cpu-denoise-128-bf16_autocast-ours_compile" in ids and "cpu-deblur-128-fp32-eager" in ids
    inference = [p.values for p in bench_mprnet._params("inference") if p.values[0] == "cpu"]
    assert {v[2] for v in inference} == {256} and {v[4] for v in inference} == set(benchmark.IMPLS)


def _part_limits(script, part):
    body = re.search(rf"^{part}_steps\(\) {{(.*?)^}}", script, re.M | re.S).group(1)
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*step (\w+) (\d+) ", body, re.M)}


def test_gpu_check_fits_the_sessions_device_time():
    script = (BENCH / "gpu_check.sh").read_text()
    check, bench = _part_limits(script, "check"), _part_limits(script, "bench")
    assert {"build", "verify", "gpu_tests_core", "memcheck", "racecheck_losses"} <= set(check)
    assert {"build", "gpu_tests_rest", "bench_cli", "bench_ops", "profile"} <= set(bench)
    assert len(re.findall(r"^\s*step \w+ ", script, re.M)) == len(check) + len(bench)
    # 15 minutes of device time: a start of up to 2 minutes, the two calls' limits, and about
    # 10 s of each call's own transfers and set-up.
    assert sum(check.values()) + 10 <= 600 and sum(bench.values()) + 10 <= 600
    assert 120 + sum(check.values()) + sum(bench.values()) + 20 <= 900, (check, bench)
    # The machine documents python3; the call returns at most 8 files: one archive and one list per part.
    assert not re.search(r"(^|[\s(])python\s", script)
    assert re.findall(r'"\$OUT/[^"]*"', script) and all(
        f in ('"$OUT/gpu_check-$part.tar.gz"', '"$OUT/steps-$part.txt"', '"$OUT"')
        for f in re.findall(r'"\$OUT[^"]*"', script))
    # -k selects by substring: "not fp16" must leave out the float16 cases and only them.
    import bench_mprnet

    assert "not fp16" in script and _common.DTYPE_IDS[torch.float16] == "fp16"
    ids = [p.id for op in registry.op_names() for p in _common.op_params(op)] + [p.id for p in bench_mprnet._params("training")]
    assert ids and not any("fp16" in i for i in ids if "-fp16-" not in i)
    assert "bench/profile_model.py" in script and '"$logs/profile.json"' in script


def test_gpu_check_runs_and_packs_each_step(tmp_path):
    # The script's own plumbing with stand-ins for what needs the GPU machine: every step is
    # logged, listed and packed even when one fails, and the exit status says a step failed.
    import shutil
    import subprocess
    import tarfile

    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(BENCH / "gpu_check.sh", repo / "bench")
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool, body in {"python3": 'case "$*" in *"import xdist"*) exit 1;; *"verify --fixture"*) echo bad; exit 3;; '
                                  '-*) cat >/dev/null; echo "{}";; esac; echo ran "$@"',
                       "nvidia-smi": "echo GPU", "compute-sanitizer": 'echo sanitized "$@"',
                       "git": "echo abc"}.items():
        (fake / tool).write_text(f"#!/bin/sh\n{body}\n")
        (fake / tool).chmod(0o755)
    out = tmp_path / "out"
    env = {"PATH": f"{fake}:/usr/bin:/bin", "OUT": str(out), "HOME": str(tmp_path)}
    run = subprocess.run(["bash", "bench/gpu_check.sh", "check"], cwd=repo, env=env, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    steps = [line.split() for line in (out / "steps-check.txt").read_text().splitlines()]
    assert [s[0] for s in steps] == list(_part_limits((BENCH / "gpu_check.sh").read_text(), "check"))
    assert [s[1] for s in steps] == ["0", "0", "3", "0", "0", "0"]
    with tarfile.open(out / "gpu_check-check.tar.gz") as tar:
        names = {n.lstrip("./") for n in tar.getnames()}
    assert {"build.log", "verify.log", "gpu_tests_core.log", "steps.txt", "environment.json"} <= names
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check-check.tar.gz", "steps-check.txt"]
    assert "--gpu-part core" in (repo / "build/gpu_check/check/gpu_tests_core.log").read_text()


@pytest.fixture
def tiny_model_suite(monkeypatch):
    """bench_mprnet with benchmark.TINY_MODEL at 16x16 (the suite's own sizes are the issue's)."""
    import bench_mprnet

    real = benchmark.model_impls
    monkeypatch.setattr(benchmark, "model_impls", lambda *a, **k: real(*a, **{**k, "overrides": benchmark.TINY_MODEL}))
    monkeypatch.setitem(bench_mprnet.TRAIN_INPUT, "cpu", (1, 16))
    bench_mprnet._expected.clear()
    yield bench_mprnet
    bench_mprnet._expected.clear()
    model_runs.clear_models()


def test_model_suite_checks_then_times(tiny_model_suite):
    stub = StubBenchmark(quick=True)
    tiny_model_suite.bench_training_step(stub, "cpu", "denoise", 16, "fp32", "ours")
    info = stub.extra_info
    assert stub.calls == 1 and info["op"] == "mprnet_training_step" and info["first_step_rel_err"] < 1e-4
    assert info["peak_mib"] > 0 and info["memory_measure"] == benchmark.MEMORY_MEASURE["cpu"]
    stub = StubBenchmark(quick=True)
    tiny_model_suite.bench_inference(stub, "cpu", "denoise", 16, "fp32", "ours")
    assert stub.calls == 1 and stub.extra_info["rel_err"] < 1e-4 and stub.extra_info["peak_mib"] > 0
    # The weights are put back: the reference and ours still agree to float32 rounding.
    ref, ours = benchmark.model_pair("denoise", "cpu", benchmark.TINY_MODEL)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values()))


def test_model_suite_fails_on_a_wrong_training_step(tiny_model_suite, monkeypatch):
    real = benchmark.model_impls

    def wrong(*args, **kwargs):
        impls = real(*args, **kwargs)
        model, weights, loss = impls["ours"]
        impls["ours"] = (lambda x: [o * 1.01 for o in model(x)], weights, loss)
        return impls

    monkeypatch.setattr(benchmark, "model_impls", wrong)
    stub = StubBenchmark(quick=True)
    with pytest.raises(AssertionError, match="first training step"):
        tiny_model_suite.bench_training_step(stub, "cpu", "denoise", 16, "fp32", "ours")
    assert stub.calls == 0
