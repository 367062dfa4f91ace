"""mprnet_kernels.nn.onednn: prepacked oneDNN convolutions with fused post-ops for CPU inference.
Each against F.conv2d (+ prelu / add) on the same weights; the pack built once and reused; every
way a weight can change (optimizer steps, load_state_dict, writes through .data, a new Parameter,
a dtype change) seen before the next call; the plain convolution under autograd, tracing,
torch.compile and with oneDNN off; and the fast model with the path on against the reference
after training steps."""

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mprnet_kernels
from helpers import rel_err
from mprnet_kernels import reference
from mprnet_kernels.nn import onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def packed(cin, cout, k, bias, seed=0, layout=torch.channels_last):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias).to(memory_format=layout)
    onednn.pack_convs(conv)
    assert type(conv) is onednn.PackedConv2d and isinstance(conv, nn.Conv2d)
    return conv


def plain(conv, x):
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)


def rand(*shape, layout=torch.channels_last, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(memory_format=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k,bias,shape", [(3, False, (1, 7, 13, 11)), (1, True, (3, 5, 9, 16)), (3, True, (2, 16, 8, 8))])
def test_packed_conv_matches_conv2d(layout, k, bias, shape):
    conv = packed(shape[1], 6, k, bias, layout=layout)
    x = rand(*shape, layout=layout)
    slope = torch.tensor([0.1])
    with torch.no_grad():
        expected = plain(conv, x)
        add = rand(*expected.shape, layout=layout, seed=2)
        assert rel_err(conv(x), expected) < 1e-5
        assert rel_err(conv.fused(x, slope=slope), F.prelu(expected, slope)) < 1e-5
        assert rel_err(conv.fused(x, add=add), expected + add) < 1e-5
        into = add.clone()
        out = conv.fused(x, into=into)
        assert rel_err(out, add + expected) < 1e-5
        # a slope and an add together: PReLU first, then the add (the order the blocks need)
        assert rel_err(conv.fused(x, slope=slope, add=add), F.prelu(expected, slope) + add) < 1e-5
        for out in (conv(x), conv.fused(x, slope=slope), conv.fused(x, add=add)):
            assert out.is_contiguous(memory_format=layout)  # the input's layout, as nn.Conv2d keeps it
    # Only channels_last inputs are packed (oneDNN returns channels_last from a packed weight).
    assert (conv in onednn._packs) == (layout == torch.channels_last)


def test_into_is_written_in_place_on_the_packed_path():
    conv = packed(4, 4, 3, False)
    x = rand(1, 4, 6, 6)
    with torch.no_grad():
        into = rand(1, 4, 6, 6, seed=3)
        assert conv.fused(x, into=into) is into
        # another dtype or layout than the convolution's output: a new tensor, the same sum
        other = rand(1, 4, 6, 6, layout=torch.contiguous_format, seed=3)
        out = conv.fused(x, into=other.clone())
        assert rel_err(out, other + plain(conv, x)) < 1e-5


def test_pack_is_built_once_and_reused():
    conv = packed(8, 8, 3, True)
    x = rand(1, 8, 10, 10)
    with torch.no_grad():
        conv(x)
        first = onednn._packs[conv]
        conv(x)
        conv(rand(2, 8, 7, 9))  # another input size: the same pack, still exact
        assert onednn._packs[conv] is first
        assert rel_err(conv(rand(2, 8, 7, 9)), plain(conv, rand(2, 8, 7, 9))) < 1e-5


def _updates():
    def sgd(conv):
        conv.weight.grad = torch.ones_like(conv.weight)
        torch.optim.SGD(conv.parameters(), lr=0.1).step()

    def adam(conv, **kw):
        for p in conv.parameters():
            p.grad = torch.randn_like(p)
        torch.optim.Adam(conv.parameters(), lr=0.1, **kw).step()

    def load(conv):
        conv.load_state_dict({k: v + 1 for k, v in conv.state_dict().items()})

    def data_write(conv):
        conv.weight.data.mul_(2)  # bypasses the version counter

    def bias_data_write(conv):
        conv.bias.data.add_(1)

    def new_parameter(conv):
        conv.weight = nn.Parameter(torch.randn_like(conv.weight))

    def data_swap(conv):
        conv.weight.data = torch.randn_like(conv.weight)

    return {"sgd": sgd, "adam": adam, "adam_foreach": lambda c: adam(c, foreach=True),
            "adam_fused": lambda c: adam(c, fused=True), "load_state_dict": load, "data_write": data_write,
            "bias_data_write": bias_data_write, "new_parameter": new_parameter, "data_swap": data_swap}


@pytest.mark.parametrize("update", list(_updates()))
def test_changed_weights_are_never_stale(update):
    conv = packed(6, 6, 3, True)
    x = rand(1, 6, 9, 9)
    with torch.no_grad():
        before = conv(x)
    _updates()[update](conv)
    with torch.no_grad():
        after = conv(x)
        assert rel_err(after, plain(conv, x)) < 1e-5
        assert rel_err(after, before) > 1e-3  # the update changed the result


def test_dtype_change_runs_the_new_dtype():
    conv = packed(3, 3, 3, False)
    with torch.no_grad():
        conv(rand(1, 3, 5, 5))
        conv.double()
        x = rand(1, 3, 5, 5).double()
        out = conv(x)
    assert out.dtype == torch.float64 and rel_err(out, plain(conv, x)) < 1e-12


def test_plain_convolution_under_autograd_tracing_and_without_onednn(monkeypatch):
    conv = packed(4, 5, 3, True)
    x = rand(2, 4, 7, 7)
    calls = []
    real = onednn._pack
    monkeypatch.setattr(onednn, "_pack", lambda *a: calls.append(1) or real(*a))
    xg = x.clone().requires_grad_()
    out = conv.fused(xg, slope=torch.tensor([0.2]))
    out.sum().backward()
    assert xg.grad is not None and conv.weight.grad is not None
    traced = torch.jit.trace(conv, x, check_trace=False)
    assert "mkldnn" not in str(traced.graph)
    with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
        assert rel_err(conv(x), plain(conv, x)) < 1e-6
    assert not calls
    with torch.no_grad():
        conv(x)
    assert calls


def test_packed_module_saves_copies_and_keeps_its_state_dict():
    ref = reference.MPRNet.from_preset("tiny").eval()
    model = mprnet_kernels.MPRNet.from_preset("tiny").eval()
    model.load_state_dict(ref.state_dict())
    assert list(model.state_dict()) == list(ref.state_dict())
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    twin = copy.deepcopy(model)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.rand(1, 3, 24, 16)
    with torch.no_grad():
        for other in (twin, loaded):
            assert rel_err(other(x)[0], model(x)[0]) < 1e-6


def _pair(preset="tiny", seed=0):
    torch.manual_seed(seed)
    ref = reference.MPRNet.from_preset(preset)
    for p in ref.parameters():  # biases and slopes away from their defaults
        nn.init.normal_(p, 0.0, 0.05) if p.dim() == 1 else None
    model = mprnet_kernels.MPRNet.from_preset(preset)
    model.load_state_dict(ref.state_dict())
    return ref, model


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_fast_model_inference_matches_reference(preset, mode):
    ref, model = _pair(preset)
    ref.eval(), model.eval()
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(4))
    ctx = torch.no_grad if mode == "no_grad" else torch.inference_mode
    with ctx():
        expected, got = ref(x), model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected_bf16, got_bf16 = ref(x), model(x)
    for e, g in zip(expected, got):
        assert rel_err(g, e) < 1e-4
    for e, g in zip(expected_bf16, got_bf16):
        assert g.dtype == e.dtype and rel_err(g.float(), e.float()) < 2e-2
    assert any(isinstance(m, onednn.PackedConv2d) and m in onednn._packs for m in model.modules())


def test_training_then_inference_uses_the_trained_weights():
    ref, model = _pair("tiny", seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g)
    for _ in range(3):
        model.train()
        loss = sum(F.l1_loss(o, y) for o in model(x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            got = model(x)
        ref.load_state_dict(model.state_dict())
        with torch.no_grad():
            expected = ref(x)
        assert rel_err(got[0], expected[0]) < 1e-4


def test_rewrite_off_keeps_plain_convolutions():
    model = mprnet_kernels.MPRNet.from_preset("tiny", rewrites={"prepacked_convs": False})
    assert not any(isinstance(m, onednn.PackedConv2d) for m in model.modules())


def test_fast_model_compiles_fullgraph_under_no_grad():
    """Under torch.compile the packed path stands aside before asking anything Dynamo will not
    trace (torch.backends.mkldnn.is_available), so a no-grad fullgraph compile has plain convs."""
    ref, model = _pair("tiny")
    model.eval()
    x = torch.rand(1, 3, 24, 16, generator=torch.Generator().manual_seed(6))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        expected = model(x)
        for a, b in zip(compiled(x), expected):
            assert rel_err(a, b) < 1e-6


def _counting_packs(monkeypatch):
    calls = []
    real = onednn._pack
    monkeypatch.setattr(onednn, "_pack", lambda *a: calls.append(1) or real(*a))
    return calls


def test_into_that_shares_the_input_memory_is_not_written(monkeypatch):
    conv = packed(4, 4, 3, False)
    x = rand(1, 4, 6, 6)
    with torch.no_grad():
        expected = x + plain(conv, x)
        out = conv.fused(x, into=x)  # oneDNN would write x while reading it
        assert rel_err(out, expected) < 1e-5 and out is not x


def test_plain_convolution_for_empty_batches_modes_subclasses_and_float64_weights_under_autocast(monkeypatch):
    from torch.utils.flop_counter import FlopCounterMode

    calls = _counting_packs(monkeypatch)
    conv = packed(3, 5, 3, True)
    with torch.no_grad():
        assert conv(rand(0, 3, 6, 6)).shape == (0, 5, 6, 6)
        x = rand(1, 3, 6, 6)
        with FlopCounterMode(display=False) as counter:
            conv(x)
        assert counter.get_total_flops() > 0  # the convolution was counted
        with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = mode.from_tensor(x)
            assert conv(fake).shape == (1, 5, 6, 6)
        conv.double()
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError):
            conv(x)  # what eager does with a float64 weight and a float32 input
    assert not calls
