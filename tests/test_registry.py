"""The op registry is the one list of ops: every public mprnet op has exactly one entry, each
entry's function, reference, inputs, call site and pass counts fit together, and the ones that
read it (verify, shapes, the CLI help, info, the benchmark suite) cover the same ops."""

import dataclasses

import pytest
import torch

from mprnet_kernels import cli, ops, reference, registry, shapes, verify
from mprnet_kernels.testing import OP_TOLERANCE, rel_err

# Schemas that are halves of a public op (its forward and backward), not ops of their own.
PARTS = ("_forward", "_backward")


def _public_schemas():
    names = {s.name.split("::", 1)[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("mprnet::")}
    return {n for n in names if not n.endswith(PARTS)} | {n[: -len("_forward")] for n in names if n.endswith("_forward")}


def test_every_public_op_has_one_entry():
    assert set(registry.OPS) == _public_schemas()
    for name, spec in registry.OPS.items():
        assert spec.name == name and spec.fn is getattr(ops, name)
        assert spec.reference is getattr(reference, name)
    # The package exports exactly these ops, besides the backend selection.
    assert set(ops.__all__) - {"available_backends", "cuda_backend", "set_cuda_backend"} == set(registry.OPS)


@pytest.mark.parametrize("name", registry.op_names())
def test_entry_fits_together(name):
    spec = registry.spec(name)
    assert spec.site in shapes.SITES
    assert 0 < spec.forward_passes < spec.passes
    # The small inputs run through ours and the reference alike, and agree in float64.
    args = spec.verify_inputs(torch.Generator().manual_seed(0))
    assert rel_err(spec.ours()(*args), spec.eager()(*args)) < OP_TOLERANCE[torch.float64]
    # The benchmark inputs at a shape the model makes: bytes = passes x the main operand.
    shape = shapes.representative_shape(name, "deblur", 1, 32, 32).shape
    inputs = spec.bench_inputs(shape, "denoise", "cpu", torch.float32, torch.Generator().manual_seed(0))
    assert tuple(inputs.main.shape) == tuple(shape) and all(t.requires_grad for t in inputs.leaves)
    assert spec.bytes_moved(inputs) == spec.passes * inputs.main.numel() * 4
    assert spec.bytes_moved(inputs, "forward") == spec.forward_passes * inputs.main.numel() * 4
    assert rel_err(spec.ours("denoise")(*inputs.args), spec.eager("denoise")(*inputs.args)) < 1e-4


def test_the_task_loss_reaches_mprnet_loss():
    spec = registry.spec("mprnet_loss")
    assert spec.call_kwargs("denoise") == {"edge_weight": 0.0, "clamp": True} and spec.call_kwargs() == {}
    assert registry.spec("sam_gate").call_kwargs("denoise") == {}
    g = torch.Generator().manual_seed(0)
    outs = [torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64) * 1.4 - 0.2 for _ in range(3)]
    y = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    expected = reference.MPRNetLoss(edge_weight=0.0, clamp=True)(outs, y)
    assert torch.allclose(spec.ours("denoise")(*outs, y), expected)
    assert not torch.allclose(spec.ours()(*outs, y), expected)


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="frobnicate.*sam_gate"):
        registry.spec("frobnicate")


def test_readers_follow_the_registry(monkeypatch, capsys):
    assert {r.op for r in verify.run_all(dtypes=(torch.float64,))} == set(registry.OPS)
    assert set(shapes.model_shapes("deblur", 1, 32, 32)) == set(registry.OPS)
    # An entry added to the table shows up in verify, the help and info with nothing else edited.
    extra = dataclasses.replace(registry.spec("sam_gate"), name="sam_gate_again", summary="a planted entry")
    monkeypatch.setitem(registry.OPS, "sam_gate_again", extra)
    assert "sam_gate_again" in {r.op for r in verify.run_all(dtypes=(torch.float64,), ops=["sam_gate_again"])}
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "sam_gate_again" in capsys.readouterr().out.replace("\n", "").replace(" ", "")
    assert cli.main(["info"]) == 0
    assert "a planted entry" in capsys.readouterr().out
