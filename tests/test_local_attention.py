"""The reference local channel attention (TLC) against definitions written out here: the box
mean over windows, the replicate placement, the windows set_local_attention derives."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mprnet_kernels.reference import MPRNet, ca_tail, local_ca_tail, local_mean, replicate_to
from mprnet_kernels.reference.blocks import CALayer
from mprnet_kernels.shapes import local_attention_tails


def _weights(c, hidden, g):
    return (torch.randn(hidden, c, 1, 1, generator=g, dtype=torch.float64), torch.randn(hidden, generator=g, dtype=torch.float64),
            torch.randn(c, hidden, 1, 1, generator=g, dtype=torch.float64), torch.randn(c, generator=g, dtype=torch.float64))


def _numpy_local_ca_tail(x, r, w1, b1, w2, b2, k1, k2):
    """Loops over positions: the valid window means, the MLP per position, the border copied."""
    n, c, hh, ww = x.shape
    hp, wp = hh - k1 + 1, ww - k2 + 1
    top, left = (hh - hp) // 2, (ww - wp) // 2
    w1, w2 = w1.reshape(w1.shape[0], c), w2.reshape(c, -1)
    out = np.empty_like(x)
    for b in range(n):
        gate = np.empty((c, hp, wp))
        for i in range(hp):
            for j in range(wp):
                p = x[b, :, i:i + k1, j:j + k2].mean(axis=(1, 2))
                gate[:, i, j] = 1 / (1 + np.exp(-(w2 @ np.maximum(w1 @ p + b1, 0) + b2)))
        for i in range(hh):
            for j in range(ww):
                gi, gj = min(max(i - top, 0), hp - 1), min(max(j - left, 0), wp - 1)
                out[b, :, i, j] = x[b, :, i, j] * gate[:, gi, gj] + r[b, :, i, j]
    return out


@pytest.mark.parametrize("shape,window", [((2, 4, 7, 9), (3, 4)), ((1, 4, 6, 5), (1, 1)), ((1, 4, 5, 8), (5, 2)),
                                          ((1, 4, 6, 6), (6, 6)), ((2, 4, 9, 4), (2, 4))])
def test_local_ca_tail_matches_the_loops(shape, window):
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(*shape, generator=g, dtype=torch.float64), torch.randn(*shape, generator=g, dtype=torch.float64)
    w = _weights(shape[1], 2, g)
    got = local_ca_tail(x, r, *w, window)
    expected = _numpy_local_ca_tail(x.numpy(), r.numpy(), *(t.numpy() for t in w), *window)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_whole_image_window_is_the_global_tail_and_means_match_avg_pool():
    g = torch.Generator().manual_seed(1)
    x, r = torch.randn(2, 6, 10, 12, generator=g, dtype=torch.float64), torch.randn(2, 6, 10, 12, generator=g, dtype=torch.float64)
    w = _weights(6, 3, g)
    torch.testing.assert_close(local_ca_tail(x, r, *w, (10, 12)), ca_tail(x, r, *w), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(local_mean(x, (3, 5)), F.avg_pool2d(x, (3, 5), stride=1), rtol=1e-13, atol=1e-13)


def test_half_precision_means_accumulate_in_float32():
    x = torch.rand(1, 2, 64, 512).to(torch.bfloat16)
    expected = F.avg_pool2d(x.double(), (48, 384), stride=1)
    assert (local_mean(x, (48, 384)).double() - expected).abs().max() < 4e-3  # bf16 rounding of the mean alone


def test_replicate_places_the_extra_row_below():
    s = torch.arange(6.0).reshape(1, 1, 2, 3)
    out = replicate_to(s, (5, 4))  # 3 rows to add: 1 above, 2 below; 1 column: 0 left, 1 right
    assert out[0, 0, :, 0].tolist() == [0, 0, 3, 3, 3] and out[0, 0, 0].tolist() == [0, 1, 2, 2]


def test_local_ca_tail_gradcheck():
    g = torch.Generator().manual_seed(2)
    x, r = torch.randn(1, 4, 6, 7, generator=g, dtype=torch.float64), torch.randn(1, 4, 6, 7, generator=g, dtype=torch.float64)
    args = [x, r, *_weights(4, 2, g)]
    for a in args:
        a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *a: local_ca_tail(*a, (3, 2)), args)


def _windows(model):
    return {n: m.window for n, m in model.named_modules() if isinstance(m, CALayer)}


def test_windows_follow_the_feature_size_at_train_size():
    model = MPRNet.from_preset("tiny")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.set_local_attention() is model
    windows = _windows(model)
    assert len(windows) == 31 + 3 * 1
    # train 256, base 384: stage 1 sees 128x128 quarters, stage 2 128x256 halves, stage 3 256x256
    assert windows["shallow_feat1.1.CA"] == (192, 192) and windows["shallow_feat2.1.CA"] == (192, 384)
    assert windows["stage1_encoder.encoder_level3.0.CA"] == (48, 48)
    assert windows["stage2_decoder.decoder_level2.1.CA"] == (192, 192)
    assert windows["stage3_orsnet.orb3.body.0.CA"] == (384, 384)
    assert model.local_attention == {"train_size": (256, 256), "base_size": (384, 384)}
    # the given train_size is what is divided by (TLC's code divides by 256 whatever it is given)
    model.set_local_attention(128, base_size=(128, 256))
    assert _windows(model)["shallow_feat2.1.CA"] == (64, 256)  # 64x128 features: 64 * 128 // 128, 128 * 256 // 128
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.set_local_attention(None)
    assert set(_windows(model).values()) == {None} and model.local_attention is None


def test_local_attention_tails_of_a_full_frame_deblur():
    """shapes.local_attention_tails (what bench/tlc_speed.py and bench/gpu_static.py time and
    compile): one entry per CAB of the fast model, TLC's windows clipped to their maps."""
    tails = local_attention_tails("deblur", 720, 1280, 256)
    model = MPRNet.from_preset("deblur")
    assert sum(calls for _, _, calls in tails) == sum(isinstance(m, CALayer) for m in model.modules())
    # stage 3 at full resolution (ORSNet, 96 + 32 features) and stage 1's four 360x640 patches
    assert tails[0] == ((1, 128, 720, 1280), (384, 384), 24)
    assert ((4, 96, 360, 640), (192, 192), 3) in tails
    assert all(1 <= k <= hw for shape, window, _ in tails for k, hw in zip(window, shape[2:]))
    # on the train-size input every window is 1.5x its map: clipped, the global tail
    assert all(window == shape[2:] for shape, window, _ in local_attention_tails("deblur", 256, 256, 256))
    assert local_attention_tails("deblur", 720, 1280, [256, 256], [384, 384]) == tails  # pairs as lists too


def test_local_model_on_a_large_input_differs_and_on_the_train_size_input_is_global():
    torch.manual_seed(0)
    model = MPRNet.from_preset("tiny").double().eval()
    x = torch.rand(1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        global_out = model(x)
        model.set_local_attention(16, base_size=16)   # every window is its layer's size at 16x16
        local_out = model(x)
        same_size = model(x[..., :16, :16])
        model.set_local_attention(None)
        back = model(x)
        global_small = model(x[..., :16, :16])
    assert (local_out[0] - global_out[0]).abs().max() > 1e-4
    for a, b in zip(same_size, global_small):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # windows = whole maps: global
    for a, b in zip(back, global_out):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kwargs,words", [
    (dict(train_size=100), "train_size must be a positive int or (height, width), multiples of 8, got 100"),
    (dict(train_size=(256,)), "train_size"), (dict(train_size=True), "train_size"), (dict(train_size=0), "train_size"),
    (dict(train_size=256, base_size=0), "base_size must be a positive int"),
    (dict(train_size=256, base_size=4), "choose a larger base_size"),
    (dict(train_size=None, base_size=384), "base_size needs a train_size"),
])
def test_bad_arguments_are_named(kwargs, words):
    with pytest.raises(ValueError) as info:
        MPRNet.from_preset("tiny").set_local_attention(**kwargs)
    assert words in str(info.value)
