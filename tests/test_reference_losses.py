"""Reference losses against an independent NumPy transcription of the spec's formulas.

The NumPy versions below loop over the 25 taps of the 5x5 Gaussian with ``np.pad(mode="edge")``
so they share no code path with the torch implementation (no conv2d, no F.pad).
"""

import re

import numpy as np
import pytest
import torch

import mprnet_kernels.reference.losses as losses_module
from helpers import rel_err
from mprnet_kernels.reference import (
    CharbonnierLoss,
    EdgeLoss,
    MPRNetLoss,
    charbonnier_loss,
    edge_loss,
    laplacian,
)

EPS = 1e-3
TAPS = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
KERNEL = np.outer(TAPS, TAPS)


def np_gauss(plane):
    """Replicate-pad by 2, then correlate with the 5x5 kernel (valid), on one (H, W) plane."""
    height, width = plane.shape
    padded = np.pad(plane, 2, mode="edge")
    out = np.zeros_like(plane)
    for i in range(5):
        for j in range(5):
            out += KERNEL[i, j] * padded[i:i + height, j:j + width]
    return out


def np_laplacian(img):
    img = np.asarray(img, dtype=np.float64)
    out = np.empty_like(img)
    for n in range(img.shape[0]):
        for c in range(img.shape[1]):
            blurred = np_gauss(img[n, c])
            sparse = np.zeros_like(blurred)
            sparse[::2, ::2] = 4 * blurred[::2, ::2]
            out[n, c] = img[n, c] - np_gauss(sparse)
    return out


def np_charbonnier(x, y, eps=EPS):
    d = np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)
    return float(np.mean(np.sqrt(d * d + eps * eps)))


def np_edge(x, y, eps=EPS):
    return np_charbonnier(np_laplacian(x), np_laplacian(y), eps)


def f64(value):
    """A float64 scalar tensor (torch.tensor of a Python float would be float32)."""
    return torch.as_tensor(value, dtype=torch.float64)


def rand(*shape, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype)


# --------------------------------------------------------------------------- laplacian


@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (2, 3), (3, 2), (4, 4), (5, 5), (6, 7),
                                (7, 9), (16, 16), (13, 20)])
def test_laplacian_matches_numpy(hw):
    x = rand(2, 3, *hw, seed=hw[0] * 31 + hw[1])
    assert rel_err(laplacian(x), torch.from_numpy(np_laplacian(x.numpy()))) < 1e-13


def test_laplacian_is_linear():
    x = rand(2, 3, 17, 22, seed=1)
    y = rand(2, 3, 17, 22, seed=2)
    assert rel_err(laplacian(x) - laplacian(y), laplacian(x - y)) < 1e-12


@pytest.mark.parametrize("hw", [(12, 12), (11, 13)])
def test_laplacian_of_constant_vanishes_in_interior(hw):
    """Even- and odd-indexed centres both see Gaussian weight 0.5 from the sparse grid.

    Only pixels at least 2 away from every border are exactly cancelled; the border depends on
    what the replicate padding repeats, which is why it is not checked here.
    """
    x = torch.full((1, 2, *hw), 0.7, dtype=torch.float64)
    lap = laplacian(x)
    assert lap[..., 2:-2, 2:-2].abs().max() < 1e-15
    assert lap.abs().max() > 1e-3  # and the border does not vanish


def test_laplacian_follows_dtype_and_device():
    x64 = rand(1, 2, 9, 10)
    assert laplacian(x64).dtype == torch.float64
    assert laplacian(x64.float()).dtype == torch.float32
    # A float32 kernel would cap agreement with float64 NumPy near 1e-8.
    assert rel_err(laplacian(x64), torch.from_numpy(np_laplacian(x64.numpy()))) < 1e-13
    meta = laplacian(torch.empty(1, 5, 9, 10, device="meta"))
    assert meta.device.type == "meta" and meta.shape == (1, 5, 9, 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_laplacian_on_cuda():
    x = rand(1, 3, 12, 13)
    out = laplacian(x.cuda())
    assert out.device.type == "cuda"
    assert rel_err(out.cpu(), laplacian(x)) < 1e-12


def test_laplacian_rejects_non_4d():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        laplacian(torch.zeros(3, 8, 8))


def test_laplacian_gradcheck_small_odd():
    x = rand(1, 2, 5, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(laplacian, (x,))


# --------------------------------------------------------------------------- Charbonnier / edge


def test_charbonnier_matches_numpy():
    x, y = rand(2, 3, 8, 9, seed=3), rand(2, 3, 8, 9, seed=4)
    value = charbonnier_loss(x, y, EPS)
    assert rel_err(value, f64(np_charbonnier(x.numpy(), y.numpy()))) < 1e-14
    assert rel_err(CharbonnierLoss()(x, y), value) == 0
    # Zero error costs exactly eps.
    assert float(charbonnier_loss(x, x, 0.25)) == pytest.approx(0.25, rel=1e-15)


@pytest.mark.parametrize("channels", [1, 3, 64])
def test_edge_loss_any_channel_count(channels):
    x = rand(2, channels, 10, 13, seed=channels)
    y = rand(2, channels, 10, 13, seed=channels + 100)
    expected = f64(np_edge(x.numpy(), y.numpy()))
    assert rel_err(EdgeLoss()(x, y), expected) < 1e-13
    assert rel_err(edge_loss(x, y, EPS), expected) < 1e-13


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_loss_follows_dtype(dtype):
    x, y = rand(1, 3, 8, 8, dtype=dtype, seed=5), rand(1, 3, 8, 8, dtype=dtype, seed=6)
    value = EdgeLoss()(x, y)
    assert value.dtype == dtype and value.dim() == 0
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    assert rel_err(value, f64(np_edge(x.double().numpy(), y.double().numpy()))) < tol


def test_edge_loss_eps():
    x, y = rand(1, 1, 6, 6, seed=7), rand(1, 1, 6, 6, seed=8)
    assert rel_err(EdgeLoss(eps=0.1)(x, y), f64(np_edge(x.numpy(), y.numpy(), 0.1))) < 1e-13


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        charbonnier_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="shapes differ"):
        edge_loss(torch.zeros(1, 3, 4, 4), torch.zeros(3, 4, 4))


# --------------------------------------------------------------------------- MPRNetLoss


def stage_outputs(seed=10, low=-0.3, high=1.3):
    """Three 'stage outputs' that stray outside [0, 1], as a real model's do."""
    return [low + (high - low) * rand(2, 3, 8, 12, seed=seed + s) for s in range(3)]


def test_mprnet_loss_default():
    outs, target = stage_outputs(), rand(2, 3, 8, 12, seed=20)
    expected = (sum(np_charbonnier(o.numpy(), target.numpy()) for o in outs)
                + 0.05 * sum(np_edge(o.numpy(), target.numpy()) for o in outs))
    assert rel_err(MPRNetLoss()(outs, target), f64(expected)) < 1e-13


def test_mprnet_loss_edge_weight_and_eps():
    outs, target = stage_outputs(), rand(2, 3, 8, 12, seed=21)
    expected = (sum(np_charbonnier(o.numpy(), target.numpy(), 0.01) for o in outs)
                + 0.5 * sum(np_edge(o.numpy(), target.numpy(), 0.01) for o in outs))
    value = MPRNetLoss(edge_weight=0.5, eps=0.01)(outs, target)
    assert rel_err(value, f64(expected)) < 1e-13


def test_mprnet_loss_clamp():
    outs, target = stage_outputs(), rand(2, 3, 8, 12, seed=22)
    clamped = [np.clip(o.numpy(), 0, 1) for o in outs]
    expected = (sum(np_charbonnier(c, target.numpy()) for c in clamped)
                + 0.05 * sum(np_edge(c, target.numpy()) for c in clamped))
    leaves = [o.clone().requires_grad_(True) for o in outs]
    value = MPRNetLoss(clamp=True)(leaves, target)
    assert rel_err(value, f64(expected)) < 1e-13
    assert rel_err(MPRNetLoss()(outs, target), value) > 1e-3  # clamping changed something
    value.backward()
    for leaf in leaves:
        outside = (leaf < 0) | (leaf > 1)
        assert outside.any()
        assert (leaf.grad[outside] == 0).all()
        assert (leaf.grad[~outside] != 0).any()


def test_mprnet_loss_edge_weight_zero_skips_edge(monkeypatch):
    """The denoising recipe: Charbonnier only, on clamped outputs; no Laplacian is computed."""
    outs, target = stage_outputs(), rand(2, 3, 8, 12, seed=23)

    def forbidden(*args, **kwargs):
        raise AssertionError("laplacian called although edge_weight == 0")

    monkeypatch.setattr(losses_module, "laplacian", forbidden)
    value = MPRNetLoss(edge_weight=0, clamp=True)(outs, target)
    expected = sum(np_charbonnier(np.clip(o.numpy(), 0, 1), target.numpy()) for o in outs)
    assert rel_err(value, f64(expected)) < 1e-13
    unclamped = MPRNetLoss(edge_weight=0.0)(outs, target)
    assert rel_err(unclamped, f64(
        sum(np_charbonnier(o.numpy(), target.numpy()) for o in outs))) < 1e-13


def test_mprnet_loss_single_tensor_and_empty():
    out, target = stage_outputs()[0], rand(2, 3, 8, 12, seed=24)
    assert rel_err(MPRNetLoss()(out, target), MPRNetLoss()([out], target)) == 0
    with pytest.raises(ValueError, match="at least one"):
        MPRNetLoss()([], target)


BOUNDS = [-0.5, 0.0, 0.5, 1.0, 1.5]


def _clamp_grad(fn, values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    fn(x).sum().backward()
    return x.grad.tolist()


def test_clamp01_convention():
    # The library's definition, whatever the installed torch's clamp does at the bounds.
    from mprnet_kernels.reference import clamp01

    assert _clamp_grad(clamp01, BOUNDS + [float("nan"), 1e-300, 1 - 2**-53]) == [0, 0, 1, 0, 0, 0, 1, 1]
    x = torch.tensor(BOUNDS + [float("nan"), -float("inf"), float("inf")], dtype=torch.float64)
    assert torch.equal(clamp01(x).nan_to_num(7.0), torch.clamp(x, 0, 1).nan_to_num(7.0))
    assert torch.isnan(clamp01(x)[5])


def test_torch_clamp_convention_for_information(record_property):
    """Which convention the installed torch's clamp has (2.11: gradient 1 at the bounds; 2.14:
    0, the library's). Information only: the library never relies on it."""
    grad = _clamp_grad(lambda x: torch.clamp(x, 0, 1), BOUNDS)
    known = {(0, 0, 1, 0, 0): "no gradient at the bounds (the library's convention)",
             (0, 1, 1, 1, 0): "gradient 1 at the bounds"}
    assert tuple(grad) in known, grad
    record_property("torch_clamp_convention", known[tuple(grad)])
    print(f"torch {torch.__version__} clamp: {known[tuple(grad)]}")


# --------------------------------------------------------------------------- integer images


def _loss_modules():
    import mprnet_kernels.nn as fast

    return [(family, name, getattr(module, name)) for family, module in (("reference", losses_module), ("fast", fast))
            for name in ("CharbonnierLoss", "EdgeLoss", "MPRNetLoss")]


@pytest.mark.parametrize("family,name,cls", _loss_modules(), ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("bad", ["prediction", "target"])
def test_integer_images_are_refused(family, name, cls, bad):
    # An 8-bit target promoted to 0-255 floats gave MPRNetLoss 392.77 without complaint.
    images = {"prediction": torch.rand(1, 3, 8, 8), "target": torch.rand(1, 3, 8, 8)}
    images[bad] = (images[bad] * 255).to(torch.uint8)
    arg = "outputs[0]" if (name == "MPRNetLoss" and bad == "prediction") else bad
    # the reference modules report their functional's name (charbonnier_loss, edge_loss)
    named = name if family == "fast" or name == "MPRNetLoss" else re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    with pytest.raises(TypeError, match=rf"{named}: {re.escape(arg)} is torch.uint8.*\[0, 1\].*float\(\) / 255"):
        cls()([images["prediction"]] if name == "MPRNetLoss" else images["prediction"], images["target"])
