"""mprnet_kernels.nn.CALayer, CAB and SAM against the reference blocks: constructors, state_dict
keys, outputs and every gradient after loading a reference state_dict, layouts, autocast, the
shared PReLU, torch.compile, and the reference MPRNet with its blocks replaced against the golden
fixture."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from helpers import OP_TOLERANCE, rel_err
from mprnet_kernels import nn as fused
from mprnet_kernels import reference
from mprnet_kernels.fixture import FIXTURE_TOLERANCE, fixture_errors

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mprnet_small_float64.pt"


def make_pair(kind, *args, dtype=torch.float64, seed=0, **kwargs):
    """A reference block (PyTorch's default initialisation, which keeps activations O(1), and a
    PReLU slope away from its 0.25 default) and our block loaded from its state_dict."""
    torch.manual_seed(seed)
    ref = getattr(reference, kind)(*args, **kwargs).to(dtype)
    for module in ref.modules():
        if isinstance(module, nn.PReLU):
            nn.init.constant_(module.weight, 0.1)
    ours = getattr(fused, kind)(*args, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def run(module, inputs, grad_seed=1):
    """Outputs and the gradients of every input and parameter, for a random output gradient."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = module(*leaves)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator().manual_seed(grad_seed)
    grads = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outs]
    torch.autograd.backward(outs, grads)
    params = {name: p.grad for name, p in module.named_parameters()}
    return outs, [t.grad for t in leaves], params


def compare(ref_result, our_result, tol):
    (ref_outs, ref_in, ref_params), (outs, ins, params) = ref_result, our_result
    for a, b in zip(outs, ref_outs):
        assert a.dtype == b.dtype and rel_err(a, b) < tol
        assert a.is_contiguous(memory_format=torch.channels_last) == b.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(ins, ref_in):
        assert rel_err(a, b) < tol
    assert params.keys() == ref_params.keys()
    for name in ref_params:
        assert rel_err(params[name], ref_params[name]) < tol, name


@pytest.mark.parametrize("kind, args, kwargs", [
    ("CALayer", (16,), {}),
    ("CALayer", (40, 4), {"bias": True}),
    ("CAB", (16,), {}),
    ("CAB", (40, 3, 4), {"bias": True}),
    ("SAM", (16,), {}),
    ("SAM", (24, 1), {"bias": True, "img_channels": 3}),
])
def test_state_dict_keys_match_reference(kind, args, kwargs):
    ref, ours = make_pair(kind, *args, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in ref.named_parameters()]
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert a.shape == b.shape and torch.equal(a, b), name


@pytest.mark.parametrize("channels", [16, 40, 96, 144])
@pytest.mark.parametrize("kind", ["CALayer", "CAB"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 16])
def test_channel_attention_blocks_match_reference_float64(channels, kind, layout, batch):
    ref, ours = make_pair(kind, channels, bias=channels == 40)
    x = torch.randn(batch, channels, 7, 5, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        ref, ours = ref.to(memory_format=torch.channels_last), ours.to(memory_format=torch.channels_last)
    compare(run(ref, [x]), run(ours, [x]), OP_TOLERANCE[torch.float64])


def test_cab_float32_and_odd_sizes():
    ref, ours = make_pair("CAB", 40, dtype=torch.float32)
    x = torch.randn(2, 40, 33, 17)
    expected = run(ref.double(), [x.double()])
    got = run(ours, [x])
    for a, b in zip(got[0] + got[1] + list(got[2].values()), expected[0] + expected[1] + list(expected[2].values())):
        assert rel_err(a, b) < OP_TOLERANCE[torch.float32]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_sam_matches_reference_float64(layout):
    ref, ours = make_pair("SAM", 40, bias=True)
    x = torch.randn(3, 40, 9, 11, dtype=torch.float64)
    img = torch.randn(3, 3, 9, 11, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    compare(run(ref, [x, img]), run(ours, [x, img]), OP_TOLERANCE[torch.float64])


def test_zero_hidden_channels_rejected_like_reference():
    """C // reduction == 0 (C = 3 with reduction 4): the reference refuses to build, and so do we,
    with the same error."""
    for kind in ("CALayer", "CAB"):
        with pytest.raises(ValueError) as ref_error:
            getattr(reference, kind)(3, reduction=4) if kind == "CALayer" else reference.CAB(3, reduction=4)
        with pytest.raises(ValueError) as our_error:
            getattr(fused, kind)(3, reduction=4) if kind == "CALayer" else fused.CAB(3, reduction=4)
        assert str(our_error.value) == str(ref_error.value)
    # C = 3 with a hidden width of 1 is fine.
    ref, ours = make_pair("CAB", 3, reduction=3)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    compare(run(ref, [x]), run(ours, [x]), OP_TOLERANCE[torch.float64])


def test_shared_prelu_stays_shared_and_sums_gradients():
    act = nn.PReLU().double()
    ref_blocks = nn.Sequential(*(reference.CAB(16, act=act) for _ in range(3))).double()
    ours = fused.replace_blocks(ref_blocks)
    assert all(isinstance(b, fused.CAB) for b in ours)
    assert ours[0].body[1] is ours[1].body[1] is ours[2].body[1] is act
    assert len(list(ours.parameters())) == 3 * 4 + 1  # 4 convs per block and one PReLU
    x = torch.randn(2, 16, 6, 5, dtype=torch.float64)
    ours(x).sum().backward()
    got = act.weight.grad.clone()
    act.weight.grad = None
    clone = nn.Sequential(*(reference.CAB(16, act=act) for _ in range(3))).double()
    clone.load_state_dict(ours.state_dict())
    clone(x).sum().backward()
    assert rel_err(got, act.weight.grad) < 1e-12


def test_from_reference_shares_parameters_and_checks_type():
    ref = reference.CAB(16).double()
    ours = fused.CAB.from_reference(ref)
    assert all(a is b for a, b in zip(ours.parameters(), ref.parameters()))
    x = torch.randn(1, 16, 4, 4, dtype=torch.float64)
    assert rel_err(ours(x), ref(x)) < 1e-12
    with pytest.raises(TypeError, match="expected a reference SAM"):
        fused.SAM.from_reference(ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cab_under_autocast_matches_reference_dtype_and_values(dtype):
    """Under autocast the body runs in half precision and the block input is float32: the
    reference's sum promotes to float32, and ours returns float32 too without extra casts."""
    ref, ours = make_pair("CAB", 40, dtype=torch.float32)
    x = torch.randn(2, 40, 12, 10)
    results = []
    for module in (ref, ours):
        with torch.autocast("cpu", dtype=dtype):
            results.append(run(module, [x]))
    (ref_outs, ref_in, ref_params), (outs, ins, params) = results
    assert outs[0].dtype == ref_outs[0].dtype == torch.float32
    assert rel_err(outs[0], ref_outs[0]) < OP_TOLERANCE[dtype]
    assert rel_err(ins[0], ref_in[0]) < OP_TOLERANCE[dtype]
    for name in ref_params:
        assert params[name].dtype == ref_params[name].dtype
        assert rel_err(params[name], ref_params[name]) < 5 * OP_TOLERANCE[dtype], name


def test_sam_under_autocast_matches_reference_dtype():
    ref, ours = make_pair("SAM", 16, dtype=torch.float32)
    x, img = torch.randn(2, 16, 6, 6), torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (rf, ri), (of, oi) = ref(x, img), ours(x, img)
    assert of.dtype == rf.dtype and oi.dtype == ri.dtype
    assert rel_err(of, rf) < OP_TOLERANCE[torch.bfloat16]


def test_torch_compile_cab_with_backward():
    _, ours = make_pair("CAB", 16, dtype=torch.float32)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 16, 8, 8)
    a, b = run(ours, [x]), run(compiled, [x])
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[1][0], b[1][0])


def test_reference_mprnet_with_fused_blocks_matches_golden_fixture():
    def model(**config):
        m = fused.replace_blocks(reference.MPRNet(**config))
        kinds = {type(b) for b in m.modules()}
        assert reference.CAB not in kinds and reference.SAM not in kinds and fused.CAB in kinds
        return m

    errors = fixture_errors(FIXTURE, model_cls=model)
    worst = max(errors, key=errors.get)
    assert errors[worst] < FIXTURE_TOLERANCE, (worst, errors[worst])
