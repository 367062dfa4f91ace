"""The fast MPRNet against the reference: the golden fixture, each preset's widths, each
rewrite alone and all together, forward and every gradient."""

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import assert_half_step_close, assert_step_close, model_step, rel_err
from mprnet_kernels import MPRNetLoss, reference
from mprnet_kernels.fixture import FIXTURE_TOLERANCE, fixture_errors
from mprnet_kernels.model import MPRNet, Rewrites

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mprnet_small_float64.pt"
REWRITES = [f.name for f in dataclasses.fields(Rewrites)]


def only(name):
    return dataclasses.replace(Rewrites.none(), **{name: True})


def these(*names):
    return dataclasses.replace(Rewrites.none(), **{name: True for name in names})


# Each rewrite alone, none, every one of them together, and the pairs where one rewrite acts
# only on what another creates (fused_upsample_add fuses the resize-then-add that
# conv_before_upsample makes; alone it changes nothing).
CONFIGS = {"none": Rewrites.none(), **{name: only(name) for name in REWRITES},
           "conv_before_upsample+fused_upsample_add": these("conv_before_upsample", "fused_upsample_add"),
           "batch_patches+channels_last": these("batch_patches", "channels_last"),
           "all": dataclasses.replace(Rewrites(), checkpoint_stages=True), "default": Rewrites()}


def _fused_blocks_available():
    try:
        from mprnet_kernels import nn as fused
        return hasattr(fused, "CAB") and hasattr(fused, "SAM")
    except ImportError:
        return False


def needs(rewrites):
    if rewrites.fused_blocks and not _fused_blocks_available():
        pytest.skip("mprnet_kernels.nn CAB/SAM not available yet")


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fixture(golden, config):
    rewrites = CONFIGS[config]
    needs(rewrites)
    errors = fixture_errors(golden, model_cls=lambda **cfg: MPRNet(**cfg, rewrites=rewrites))
    worst = max(errors, key=errors.get)
    assert errors[worst] < FIXTURE_TOLERANCE, (worst, errors[worst])


@pytest.mark.parametrize("preset", ["deblur", "derain", "denoise"])
def test_preset_widths_forward_and_every_gradient(preset):
    """Each preset's widths (num_cab cut to 1 for time) in float64, all rewrites on."""
    needs(Rewrites())
    torch.manual_seed(0)
    ref = reference.MPRNet.from_preset(preset, num_cab=1).double()
    fast = MPRNet.from_preset(preset, num_cab=1).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    y = torch.rand_like(x)
    grads = []
    for model in (ref, fast):
        xi = x.clone().requires_grad_()
        outs = model(xi)
        loss = reference.MPRNetLoss()(outs, y)
        loss.backward()
        grads.append((outs, xi.grad, {k: p.grad for k, p in model.named_parameters()}))
    (ref_out, ref_gx, ref_gp), (out, gx, gp) = grads
    for a, b in zip(out, ref_out):
        assert rel_err(a, b) < 1e-10
    assert rel_err(gx, ref_gx) < 1e-10
    assert gp.keys() == ref_gp.keys()
    for name in ref_gp:
        assert rel_err(gp[name], ref_gp[name]) < 1e-10, name


def test_state_dict_is_the_reference_one():
    needs(Rewrites())
    ref = reference.MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    fast = MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    assert list(fast.state_dict()) == list(ref.state_dict())
    for (k, a), (_, b) in zip(fast.state_dict().items(), ref.state_dict().items()):
        assert a.shape == b.shape, k
    # CAB bodies hold the PReLU at body.1 (a scalar); an ORB's body.1 may be a conv.
    prelus = {p.data_ptr() for k, p in fast.state_dict().items() if k.endswith("body.1.weight") and p.numel() == 1}
    assert len(prelus) == 1, "the PReLU must stay shared"


def test_from_preset_and_size_check():
    model = MPRNet.from_preset("derain", num_cab=1, rewrites=Rewrites.none())
    assert isinstance(model, MPRNet) and model.rewrites == Rewrites.none()
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.rand(1, 3, 20, 16))


def _pair(num_cab=1, **kw):
    torch.manual_seed(0)
    ref = reference.MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=num_cab)
    fast = MPRNet(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=num_cab, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def test_float32_and_channels_last_within_model_tolerance():
    ref, fast = _pair()
    x = torch.rand(2, 3, 32, 40)
    ref64 = copy.deepcopy(ref).double()
    expected = ref64(x.double())
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        for a, b in zip(fast(inp), expected):
            assert rel_err(a, b) < 1e-4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_autocast_step_within_tolerance(dtype):
    """Outputs, loss and gradients of a step under autocast against float64 (helpers'
    assert_half_step_close says how the gradients are held)."""
    ref, fast = _pair()
    ref64 = copy.deepcopy(ref).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 40, generator=g)
    y = torch.rand(x.shape, generator=g)
    expected = model_step(ref64, reference.MPRNetLoss(), x.double(), y.double())
    ref_half = model_step(ref, reference.MPRNetLoss(), x, y, dtype)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        assert_half_step_close(model_step(fast, MPRNetLoss(), inp, y, dtype), ref_half, expected)


def test_optimizer_steps_track_the_reference():
    ref, fast = _pair()
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ref, fast)]
    for _ in range(3):
        for model, opt in zip((ref, fast), opts):
            opt.zero_grad()
            reference.MPRNetLoss()(model(x), y).backward()
            opt.step()
    for (name, a), (_, b) in zip(fast.named_parameters(), ref.named_parameters()):
        assert rel_err(a, b) < 1e-4, name


def test_torch_compile_fullgraph_forward_backward():
    _, fast = _pair()
    x = torch.rand(1, 3, 16, 16)
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out[0].sum().backward()
    for a, b in zip(out, fast(x)):
        assert rel_err(a, b) < 1e-5


@pytest.mark.slow
def test_inductor_dynamic_shapes_training_step():
    """torch.compile's default backend with dynamic shapes (what any compiled call after a second
    input size gets) compiles a training step and gives the eager numbers. It failed in Inductor
    while the compiled forward batched the patches as views (model docstring, batch_patches)."""
    ref, fast = _pair()
    compiled = torch.compile(fast, fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 24, 32, generator=g)
    y = torch.rand(x.shape, generator=g)
    expected = model_step(ref, reference.MPRNetLoss(), x, y)
    assert_step_close(model_step(compiled, MPRNetLoss(), x, y), expected, 1e-4)


class _OpCounter(TorchDispatchMode):
    """Counts the calls of each op (by name) made under it."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fused", [False, True])
def test_fused_upsample_add_replaces_every_resize_then_add(fused):
    """With the flag: one fused op per SkipUpSample (2 per decoder, 2 decoders) and one per ORSNet
    level 2 and 3; the one resize left is the first of level 3's double resize. Forward and
    backward (the fused op's backward is its own gather, no upsample_bilinear2d_backward)."""
    rewrites = dataclasses.replace(Rewrites(), fused_upsample_add=fused)
    needs(rewrites)
    _, fast = _pair(rewrites=rewrites)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    with _OpCounter() as counter:
        sum(o.sum() for o in fast(x)).backward()
    calls = counter.calls
    fused_calls = calls.get("mprnet::upsample2x_add", 0)
    resizes = calls.get("aten::upsample_bilinear2d", 0) + calls.get("aten::upsample_bilinear2d.vec", 0)
    assert (fused_calls, resizes) == ((6, 1) if fused else (0, 7)), calls
    assert calls.get("mprnet::upsample2x_add_backward", 0) == fused_calls


def test_channels_last_features_stay_channels_last():
    """The batched patches' joins keep the features' layout (views where the sample-major order
    allows, one copy into a channels_last buffer otherwise), so no conv or fused op converts them."""
    _, fast = _pair()
    seen = []
    for dec in (fast.stage1_decoder, fast.stage2_decoder):
        for level in (dec.skip_attn1, dec.skip_attn2, dec.decoder_level3):  # take enc1, enc2, enc3
            level.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        fast(torch.rand(2, 3, 16, 24).contiguous(memory_format=torch.channels_last))
    assert len(seen) == 6
    for t in seen:
        assert t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous(), t.shape


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_resize_adds_get_both_operands_channels_last(batch):
    """Both operands of every fused resize-and-add are channels_last with channels_last's own
    strides, batch stride included: at batch 1 the stage-2 join was a view whose batch stride
    made the ORSNet's 1x1 convolutions write NCHW, so the fused op read x with scalar loads."""
    _, fast = _pair()
    seen = []
    up2_add = fast._up2_add
    fast._up2_add = lambda x, y: (seen.append((x, y)), up2_add(x, y))[1]
    with torch.no_grad():
        fast(torch.rand(batch, 3, 16, 24).contiguous(memory_format=torch.channels_last))
    assert len(seen) == 6
    for x, y in seen:
        for t in (x, y):
            assert t.stride() == torch.empty_like(t, memory_format=torch.channels_last).stride(), (t.shape, t.stride())


@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_patches_of_a_strided_input(channels_last):
    ref, fast = _pair(rewrites=these("batch_patches", *(["channels_last"] if channels_last else [])))
    x = torch.rand(2, 3, 16, 48)[..., ::2]  # (2, 3, 16, 24), not dense
    with torch.no_grad():
        for a, b in zip(fast(x), ref(x)):
            assert rel_err(a, b) < 1e-5


def test_from_preset_and_rewrites_as_a_dict():
    model = MPRNet.from_preset("tiny", rewrites={"batch_patches": False, "channels_last": False})
    assert isinstance(model, MPRNet) and model.shallow_feat1[0].weight.shape[0] == 8
    assert model.rewrites == dataclasses.replace(Rewrites(), batch_patches=False, channels_last=False)
    assert MPRNet.from_preset("small").rewrites == Rewrites()


@pytest.mark.parametrize("rewrites, error, words", [
    ({"fused_block": False}, ValueError, "unknown rewrite(s) 'fused_block'; valid names: batch_patches"),
    ({"fused_blocks": 0}, TypeError, "expected True or False for fused_blocks"),
    (["fused_blocks"], TypeError, "expected a Rewrites, a dict of its fields or None, got list"),
])
def test_bad_rewrites_are_named(rewrites, error, words):
    with pytest.raises(error) as info:
        MPRNet.from_preset("tiny", rewrites=rewrites)
    assert words in str(info.value)
