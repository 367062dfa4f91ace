"""torch.export programs (and TorchScript traces) of the fast model, and which of them load in a
process that has not imported mprnet_kernels."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import assert_raises_mentioning
from mprnet_kernels.export import (UnsupportedOpError, check_program, export_program, lowered,
                                   mprnet_ops_in)
from mprnet_kernels.ops import charbonnier_loss


@pytest.fixture(scope="module")
def decomposed(make_model, inputs, tmp_path_factory):
    """The default fast model as a decomposed program with dynamic axes, written and checked once."""
    path = tmp_path_factory.mktemp("pt2") / "decomposed.pt2"
    report = export_program(make_model(), path, example=inputs[0])
    return path, report


def test_decomposed_program_is_checked_at_two_sizes(decomposed):
    _, report = decomposed
    assert report.check.ok and len(report.check.shapes) == 2 and report.check.worst < 1e-5
    assert report.note == ""  # nothing to import


@pytest.fixture(scope="module")
def kept_ops(make_model, inputs, tmp_path_factory):
    """The default fast model exported as torch.export gives it (fused ops kept), static, checked."""
    path = tmp_path_factory.mktemp("pt2") / "kept.pt2"
    report = export_program(make_model(), path, example=inputs[1], dynamic=False, decompose=False)
    return path, report


def test_kept_ops_program_calls_the_fused_ops_and_says_so(kept_ops):
    path, report = kept_ops
    assert report.check.ok and "import mprnet_kernels" in report.note
    assert "mprnet.ca_tail.default" in mprnet_ops_in(torch.export.load(str(path)).graph)


def test_check_catches_a_program_of_other_weights(kept_ops, make_model, inputs):
    other = make_model()
    with torch.no_grad():
        other.tail.weight.mul_(1.01)
    result = check_program(kept_ops[0], other, inputs[1:])
    assert not result.ok and result.worst > 1e-4


class _LossModel(torch.nn.Module):
    def forward(self, x):
        return charbonnier_loss(x, torch.zeros_like(x))


def test_an_op_without_lowering_is_refused_by_name(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    assert_raises_mentioning(UnsupportedOpError, ["charbonnier_loss", "ca_tail"],
                             lambda: export_program(_LossModel(), tmp_path / "loss.pt2", example=x, dynamic=False))
    with lowered():
        assert_raises_mentioning(UnsupportedOpError, ["charbonnier_loss"], lambda: _LossModel()(x))


# Run in a fresh interpreter: loads each artifact without importing mprnet_kernels and reports.
_FRESH = textwrap.dedent("""
    import json, sys, torch
    data = torch.load(sys.argv[1])
    report = {}

    def worst(outputs, expected):
        return max(float((o - e).norm() / e.norm()) for o, e in zip(outputs, expected))

    for name in ("decomposed", "kept_ops", "traced", "traced_lowered"):
        try:
            if name.startswith("traced"):
                module, ops = torch.jit.load(data[name]), []
            else:
                program = torch.export.load(data[name])
                module = program.module()
                ops = sorted({str(n.target) for n in program.graph.nodes if n.op == "call_function"})
            with torch.no_grad():
                runs = data["runs"][name]
                report[name] = {"errors": [worst(module(data["x"][i]), data["expected"][i]) for i in runs],
                                "mprnet_ops": [op for op in ops if op.startswith("mprnet.")]}
        except Exception as e:
            report[name] = {"failed": type(e).__name__ + ": " + str(e)[:500]}
    report["imported"] = "mprnet_kernels" in sys.modules
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def fresh_process(decomposed, kept_ops, make_model, inputs, tmp_path_factory):
    """What a fresh interpreter that never imports mprnet_kernels makes of each artifact."""
    folder = tmp_path_factory.mktemp("fresh")
    model = make_model()
    with torch.no_grad():
        traced = torch.jit.trace(model, inputs[1], check_trace=False)
        with lowered():
            traced_lowered = torch.jit.trace(model, inputs[1], check_trace=False)
        expected = [list(model(x)) for x in inputs]
    traced.save(str(folder / "traced.pt"))
    traced_lowered.save(str(folder / "traced_lowered.pt"))
    data = folder / "data.pt"
    # the decomposed program is dynamic: run at both sizes; the others are static, of the second
    torch.save({"x": inputs, "expected": expected, "decomposed": str(decomposed[0]), "kept_ops": str(kept_ops[0]),
                "traced": str(folder / "traced.pt"), "traced_lowered": str(folder / "traced_lowered.pt"),
                "runs": {"decomposed": [0, 1], "kept_ops": [1], "traced": [1], "traced_lowered": [1]}}, data)
    script = folder / "fresh.py"
    script.write_text(_FRESH)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), str(data)], capture_output=True, text=True, env=env,
                          cwd=folder, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["imported"] is False
    report["stderr"] = done.stderr
    return report


def test_decomposed_program_runs_without_mprnet_kernels_at_two_sizes(fresh_process):
    result = fresh_process["decomposed"]
    assert "failed" not in result, result
    assert result["mprnet_ops"] == [] and len(result["errors"]) == 2 and max(result["errors"]) < 1e-5, result


def test_program_with_the_fused_ops_needs_mprnet_kernels(fresh_process):
    assert "failed" in fresh_process["kept_ops"]
    assert "failed to resolve torch.ops.mprnet.ca_tail.default" in fresh_process["stderr"]


def test_traced_model_needs_mprnet_kernels_unless_traced_lowered(fresh_process):
    assert "mprnet::" in fresh_process["traced"]["failed"]
    result = fresh_process["traced_lowered"]
    assert "failed" not in result, result
    assert len(result["errors"]) == 1 and result["errors"][0] < 1e-5
