"""The fast MPRNet with local channel attention (TLC, set_local_attention) against the reference
with the same weights and the same set_local_attention call: each preset's widths, float64,
float32 and bf16 autocast, both layouts, sizes that are multiples of 8 only, windows larger than
the map and windows of 1, the rewrites, torch.compile, switching back to global attention, and
checkpoints."""

import copy
import dataclasses

import pytest
import torch

from helpers import assert_half_step_close, assert_step_close, model_step, rel_err
from mprnet_kernels import MPRNetLoss, load_checkpoint, load_model, reference
from mprnet_kernels.model import MPRNet, Rewrites
from mprnet_kernels.reference.blocks import CALayer

NARROW = dict(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=1)
WIDTHS = {**{p: dict(reference.preset_config(p), num_cab=1) for p in ("deblur", "derain", "denoise")},
          "small": reference.preset_config("small"), "tiny": reference.preset_config("tiny")}
REWRITES = {
    "default": Rewrites(),
    "none": Rewrites.none(),
    "no fused_blocks": dataclasses.replace(Rewrites(), fused_blocks=False),
    "no batch_patches": dataclasses.replace(Rewrites(), batch_patches=False),
    "no channels_last": dataclasses.replace(Rewrites(), channels_last=False),
    "fused_blocks only": dataclasses.replace(Rewrites.none(), fused_blocks=True),
    "checkpoint_stages": dataclasses.replace(Rewrites(), checkpoint_stages=True),
}


def _pair(config=NARROW, rewrites=None, seed=0):
    torch.manual_seed(seed)
    ref = reference.MPRNet(**config)
    # At init the attention MLPs are so small that every gate is about 0.5 wherever its mean comes
    # from; sharper gates make local and global attention differ well above rounding.
    with torch.no_grad():
        for layer in (m for m in ref.modules() if isinstance(m, CALayer)):
            for p in layer.parameters():
                p.mul_(4)
    fast = MPRNet(**config, rewrites=rewrites)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _windows(model):
    # the reference's CALayers and the fast model's fused ones alike carry `window`
    return {n: m.window for n, m in model.named_modules()
            if isinstance(m, CALayer) or getattr(m, "_reference", None) is CALayer}


def _set_local(models, *args, **kwargs):
    for m in models:
        m.set_local_attention(*args, **kwargs)
    windows = [_windows(m) for m in models]
    assert all(w == windows[0] for w in windows), "both models must get the same windows"
    return windows[0]


def _float64_step(model, x, y):
    return model_step(model, reference.MPRNetLoss(), x, y)


def _assert_float64_close(ours, expected, tol=1e-10):
    (out, loss, gx, gp), (ref_out, ref_loss, ref_gx, ref_gp) = ours, expected
    for i, (a, b) in enumerate(zip(out, ref_out)):
        assert a.dtype == torch.float64 and rel_err(a, b) < tol, (f"output {i}", rel_err(a, b))
    assert rel_err(loss, ref_loss) < tol
    assert rel_err(gx, ref_gx) < tol, ("input gradient", rel_err(gx, ref_gx))
    assert gp.keys() == ref_gp.keys() and len(gp) > 0
    for name in ref_gp:
        assert rel_err(gp[name], ref_gp[name]) < tol, (name, rel_err(gp[name], ref_gp[name]))


_REFERENCE_STEPS = {}


def _reference_step(shape, *local_args, train=True, **local_kwargs):
    """The float64 reference step on _inputs(shape) with set_local_attention(*local_args,
    **local_kwargs), computed once per module run (several tests compare against the same one)."""
    key = (shape, local_args, tuple(sorted(local_kwargs.items())), train)
    if key not in _REFERENCE_STEPS:
        ref, _ = _pair()
        ref = ref.double().train(train)
        ref.set_local_attention(*local_args, **local_kwargs)
        _REFERENCE_STEPS[key] = (_windows(ref), _float64_step(ref, *_inputs(shape)))
    return _REFERENCE_STEPS[key]


def _inputs(shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=dtype), torch.rand(shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("width", list(WIDTHS))
def test_float64_outputs_and_every_gradient_at_each_width(width):
    """train_size 8 gives windows smaller than every map of a 16 x 16 image (down to 1 x 1 at the
    U-Net's third level), so each layer really pools locally; training mode."""
    ref, fast = _pair(WIDTHS[width])
    ref, fast = ref.double().train(), fast.double().train()
    x, y = _inputs((1, 3, 16, 16))
    with torch.no_grad():
        global_out = ref(x)[0]
    windows = _set_local((ref, fast), 8)
    assert (1, 1) in windows.values()
    expected = _float64_step(ref, x, y)
    assert rel_err(expected[0][0], global_out) > 1e-4, "local attention must change the output here"
    _assert_float64_close(_float64_step(fast, x, y), expected)


@pytest.mark.parametrize("shape", [(1, 3, 40, 56), (1, 3, 24, 72)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_float64_sizes_and_layouts_in_eval_mode(shape, layout):
    """train_size 16 (base 24) on 24-row images: the window covers every row and only part of
    the columns, the case where one side of the window is clamped to the map."""
    _, fast = _pair()
    fast = fast.double().eval().set_local_attention(16)
    windows, expected = _reference_step(shape, 16, train=False)
    assert _windows(fast) == windows
    x, y = _inputs(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    ours = _float64_step(fast, x, y)
    if layout == "channels_last":
        assert ours[0][0].is_contiguous(memory_format=torch.channels_last)
    _assert_float64_close(ours, expected)


@pytest.mark.parametrize("name", list(REWRITES))
def test_each_rewrite_combination_float64(name):
    """Two samples (batch_patches orders them among the patches) of 16 x 24, training mode."""
    _, fast = _pair(rewrites=REWRITES[name])
    fast = fast.double().train().set_local_attention(8, base_size=(12, 16))
    windows, expected = _reference_step((2, 3, 16, 24), 8, base_size=(12, 16))
    assert _windows(fast) == windows
    _assert_float64_close(_float64_step(fast, *_inputs((2, 3, 16, 24))), expected)


def test_windows_larger_than_the_image_are_the_global_attention():
    """train_size 64 (base 96) on a 40 x 56 image: every window exceeds its map, so each layer
    pools the whole map and the result is the global model's up to rounding."""
    ref, fast = _pair()
    ref, fast = ref.double().eval(), fast.double().eval()
    x, _ = _inputs((1, 3, 40, 56))
    with torch.no_grad():
        global_out = fast(x)
        windows = _set_local((ref, fast), 64)
        assert min(w[0] for w in windows.values()) >= 12  # the deepest maps are 5 x 7 here
        local_out, ref_out = fast(x), ref(x)
    for a, b, c in zip(local_out, ref_out, global_out):
        assert rel_err(a, b) < 1e-10 and rel_err(a, c) < 1e-10


def test_smallest_base_size_gives_windows_of_one():
    """The smallest base_size set_local_attention accepts makes the deepest layers' windows 1 x 1
    (a gate per position from that position alone); one less is refused."""
    ref, fast = _pair()
    ref, fast = ref.double().train(), fast.double().train()
    x, y = _inputs((1, 3, 40, 56))
    with pytest.raises(ValueError, match="choose a larger base_size"):
        fast.set_local_attention(64, base_size=7)  # the deepest maps are 8 x 8 at 64 x 64
    windows = _set_local((ref, fast), 64, base_size=8)
    assert min(windows.values()) == (1, 1) and max(windows.values()) == (8, 8)
    _assert_float64_close(_float64_step(fast, x, y), _float64_step(ref, x, y))


def test_float32_nchw_and_channels_last():
    ref, fast = _pair()
    ref64 = copy.deepcopy(ref).double()
    x, y = _inputs((1, 3, 40, 56), dtype=torch.float32)
    _set_local((ref64, fast), 16)
    expected = model_step(ref64, reference.MPRNetLoss(), x.double(), y.double())
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        assert_step_close(model_step(fast, MPRNetLoss(), inp, y), expected, 1e-4)


def test_bf16_autocast_nchw_and_channels_last():
    """Held as the global model's autocast step is (helpers' assert_half_step_close)."""
    ref, fast = _pair()
    ref64 = copy.deepcopy(ref).double()
    x, y = _inputs((1, 3, 24, 40), dtype=torch.float32)
    _set_local((ref, ref64, fast), 16)
    expected = model_step(ref64, reference.MPRNetLoss(), x.double(), y.double())
    ref_half = model_step(ref, reference.MPRNetLoss(), x, y, torch.bfloat16)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        assert_half_step_close(model_step(fast, MPRNetLoss(), inp, y, torch.bfloat16), ref_half, expected)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_eager_and_follows_set_local_attention():
    """The compiled local model gives eager's numbers, forward and backward (aot_eager: Dynamo's
    graph through AOTAutograd); and a later switch of the windows, or back to global, reaches the
    compiled model instead of replaying a stale graph (Dynamo's guards, checked with its eager
    backend, where every call traces quickly)."""
    _, fast = _pair()
    x, y = _inputs((1, 3, 24, 40), dtype=torch.float32)
    fast.set_local_attention(16)
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    assert_step_close(model_step(compiled, MPRNetLoss(), x, y), model_step(fast, MPRNetLoss(), x, y), 1e-5)
    traced = torch.compile(fast, fullgraph=True, backend="eager")
    outputs = []
    with torch.no_grad():
        for args in ((16,), (16, 8), (None,)):
            fast.set_local_attention(*args)
            expected = fast(x)
            for a, b in zip(traced(x), expected):
                assert rel_err(a, b) < 1e-6, args
            outputs.append(expected[0])
    assert rel_err(outputs[0], outputs[1]) > 1e-4 and rel_err(outputs[0], outputs[2]) > 1e-4  # the switches show


@pytest.mark.parametrize("name", ["default", "none"])
def test_switching_off_restores_the_global_outputs_exactly(name):
    _, fast = _pair(rewrites=REWRITES[name])
    x, _ = _inputs((1, 3, 40, 56), dtype=torch.float32)
    with torch.no_grad():
        before = fast(x)
        fast.set_local_attention(16)
        local = fast(x)
        fast.set_local_attention(None)
        after = fast(x)
    assert set(_windows(fast).values()) == {None} and fast.local_attention is None
    assert rel_err(local[0], before[0]) > 1e-4
    for a, b in zip(after, before):
        assert torch.equal(a, b)


def _upstream_checkpoint(ref):
    """What upstream's training saves from nn.DataParallel: keys prefixed module., epoch and
    optimizer beside them."""
    return {"epoch": 3, "state_dict": {"module." + k: v.clone() for k, v in ref.state_dict().items()},
            "optimizer": {"state": {}, "param_groups": []}}


def test_upstream_checkpoint_loads_unchanged_before_or_after_the_switch(tmp_path):
    ref, _ = _pair(seed=5)
    ref = ref.double().eval()
    path = tmp_path / "model_best.pth"
    torch.save(_upstream_checkpoint(ref), path)
    saved = {k[len("module."):]: v for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    x, _ = _inputs((1, 3, 24, 40))
    ref.set_local_attention(16)
    with torch.no_grad():
        expected = ref(x)

    # loaded then switched, and switched then loaded (windows are not state: loading keeps them)
    loaded_first = MPRNet(**NARROW).double().eval()
    assert load_checkpoint(loaded_first, path) == {"epoch": 3, "optimizer": {"state": {}, "param_groups": []}}
    loaded_first.set_local_attention(16)
    switched_first = MPRNet(**NARROW).double().eval().set_local_attention(16)
    load_checkpoint(switched_first, path)
    by_load_model = load_model(path, dtype=torch.float64).set_local_attention(16)
    for model in (loaded_first, switched_first, by_load_model):
        state = model.state_dict()
        assert list(state) == list(saved)
        assert all(torch.equal(state[k], saved[k]) for k in saved)
        assert _windows(model) == _windows(ref)
        with torch.no_grad():
            for a, b in zip(model(x), expected):
                assert rel_err(a, b) < 1e-10

    # the switched model's state_dict is still an upstream one: a plain reference takes it strictly
    plain = reference.MPRNet(**NARROW).double().eval()
    plain.load_state_dict(loaded_first.state_dict(), strict=True)
    plain.set_local_attention(16)
    with torch.no_grad():
        for a, b in zip(plain(x), expected):
            assert rel_err(a, b) < 1e-10
