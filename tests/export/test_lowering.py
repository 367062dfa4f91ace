"""The lowerings of the fused ops (mprnet_kernels.export.lowering) against the ops themselves:
values, output dtypes (including the autocast mixes the ops accept) and the two ways in."""

import pytest
import torch

from helpers import rel_err, seeded_randn
from mprnet_kernels import ops
from mprnet_kernels.export import LOWERINGS, decomposition_table, lowered, mprnet_ops_in
from mprnet_kernels.export import lowering
from mprnet_kernels.registry import OPS
from mprnet_kernels.testing import OP_TOLERANCE

#: Where the registry says the model calls an op (shapes.SITES), as opposed to the losses.
MODEL_SITES = ("cab", "sam", "up2_add")


def _ca_tail_inputs(x_dtype, r_dtype, channels_last):
    x, r = seeded_randn(2, (2, 8, 6, 10))
    w1, w2 = seeded_randn(1, (2, 8, 1, 1), seed=1)[0].float(), seeded_randn(1, (8, 2, 1, 1), seed=3)[0].float()
    b1, b2 = seeded_randn(1, (2,), seed=2)[0].float(), seeded_randn(1, (8,), seed=4)[0].float()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [x.to(x_dtype).contiguous(memory_format=fmt), r.to(r_dtype).contiguous(memory_format=fmt), w1, b1, w2, b2]


def _pair(shape_x, shape_y, dtype_x):
    return [seeded_randn(1, shape_x)[0].to(dtype_x), seeded_randn(1, shape_y, seed=1)[0].float()]


CASES = [
    ("ca_tail", lambda: _ca_tail_inputs(torch.float32, torch.float32, True)),
    ("ca_tail", lambda: _ca_tail_inputs(torch.float16, torch.float32, False)),  # autocast: half body, float32 input
    ("ca_tail", lambda: _ca_tail_inputs(torch.bfloat16, torch.bfloat16, False)),
    ("sam_gate", lambda: [t.float().contiguous(memory_format=torch.channels_last)
                          for t in seeded_randn(3, (2, 3, 8, 8))]),
    ("sam_gate", lambda: [t.half() for t in seeded_randn(3, (1, 3, 4, 6))]),
    ("upsample2x_add", lambda: _pair((2, 4, 3, 5), (2, 4, 6, 10), torch.float32)),
    ("upsample2x_add", lambda: _pair((1, 4, 3, 5), (1, 4, 6, 10), torch.bfloat16)),  # autocast: bf16 conv, f32 y
]


@pytest.mark.parametrize("name, make", CASES)
def test_lowering_matches_the_op(name, make):
    args = make()
    expected = getattr(ops, name)(*args)
    got = getattr(lowering, name)(*args)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    least_precise = max((a.dtype for a in args if a is not None), key=lambda d: torch.finfo(d).eps)
    assert rel_err(got, expected) < OP_TOLERANCE[least_precise]


def test_ca_tail_forward_lowering_gives_the_saved_vectors():
    args = _ca_tail_inputs(torch.float32, torch.float32, False)
    expected = torch.ops.mprnet.ca_tail_forward(*args)
    got = lowering.ca_tail_forward(*args)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and rel_err(g, e) < 1e-5


@pytest.mark.parametrize("name", [n for n, spec in OPS.items() if spec.site in MODEL_SITES])
def test_every_op_the_model_calls_has_a_lowering_that_matches_it(name):
    # registry-driven, so a new inference op without a lowering fails here, not in a user's export
    spec = OPS[name]
    args = spec.verify_inputs(torch.Generator().manual_seed(0))
    expected = spec.ours()(*args)
    with lowered():
        got = spec.ours()(*args)  # the op's call is replaced by its lowering (or refused)
    assert rel_err(got, expected) < OP_TOLERANCE[torch.float64]
    for core in (True, False):
        assert decomposition_table(core=core)[getattr(torch.ops.mprnet, name).default] is LOWERINGS[
            getattr(torch.ops.mprnet, name).default]


def test_loss_ops_are_not_lowered():
    assert not [op for op in LOWERINGS if "loss" in str(op)]


class _Block(torch.nn.Module):
    def forward(self, x, y):
        return ops.upsample2x_add(x, ops.sam_gate(y, y, y))


def test_both_ways_in_leave_no_mprnet_op():
    x, y = torch.rand(1, 2, 4, 4), torch.rand(1, 2, 8, 8)
    with lowered():
        traced = torch.jit.trace(_Block(), (x, y))
    assert not [n for n in traced.graph.nodes() if n.kind().startswith("mprnet::")]
    program = torch.export.export(_Block(), (x, y))
    assert mprnet_ops_in(program.graph) == ["mprnet.sam_gate.default", "mprnet.upsample2x_add.default"]
    program = program.run_decompositions(decomposition_table(core=True))
    assert mprnet_ops_in(program.graph) == []
    assert torch.allclose(program.module()(x, y), _Block()(x, y), rtol=1e-6, atol=1e-6)
    assert torch.allclose(traced(x, y), _Block()(x, y), rtol=1e-6, atol=1e-6)
