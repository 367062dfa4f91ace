"""mprnet_kernels.metrics: our SSIM against torchmetrics and closed forms, the Y channel, PSNR."""

import math
import sys

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from mprnet_kernels import metrics
from mprnet_kernels.metrics import psnr, rgb_to_y, ssim, validation_ssim

SIZES = [(1, 3, 11, 11), (2, 3, 24, 40), (1, 3, 13, 29), (1, 1, 37, 16), (3, 3, 31, 12), (1, 3, 64, 47)]


def pair(shape, seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("shape", SIZES)
def test_valid_ssim_matches_torchmetrics_map_inside_the_borders(shape):
    # torchmetrics (>= 1.0) reflect-pads by the window's half width and averages its map over
    # every pixel; inside a 5-pixel border its map sees no padding, and that part is the
    # "valid" map of Wang et al.'s code, which ours averages.
    x, y = pair(shape, seed=shape[2])
    _, full = tm_ssim(x, y, data_range=1.0, reduction="none", return_full_image=True)
    expected = full[..., 5:-5, 5:-5].flatten(1).mean(1)
    assert torch.allclose(ssim(x, y), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape", SIZES + [(2, 3, 6, 9), (1, 3, 8, 8)])
def test_reflect_ssim_is_what_torchmetrics_computes(shape):
    x, y = pair(shape, seed=shape[3])
    expected = tm_ssim(x, y, data_range=1.0, reduction="none")
    assert torch.allclose(ssim(x, y, border="reflect"), expected, rtol=0, atol=1e-7)


def test_float32_inputs_agree_too():
    x, y = pair((2, 3, 24, 40), seed=5)
    x, y = x.float(), y.float()
    assert torch.allclose(ssim(x, y, border="reflect").float(), tm_ssim(x, y, data_range=1.0, reduction="none"),
                          atol=1e-5)


def test_constant_images_have_the_closed_form():
    # No variance and no covariance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) everywhere.
    a, b = 0.3, 0.7
    x, y = (torch.full((1, 3, 16, 20), v, dtype=torch.float64) for v in (a, b))
    c1 = (0.01 * 1.0) ** 2
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-12)
    assert ssim(x * 255, y * 255, data_range=255).item() == pytest.approx(ssim(x, y).item(), abs=1e-12)


def test_one_window_by_hand():
    # An 11 x 11 image has one valid position: the Gaussian-weighted statistics of all of it.
    x, y = pair((1, 1, 11, 11), seed=9, noise=0.2)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    a, b = x[0, 0].numpy(), y[0, 0].numpy()
    ma, mb = (w * a).sum(), (w * b).sum()
    va, vb, cov = (w * a * a).sum() - ma ** 2, (w * b * b).sum() - mb ** 2, (w * a * b).sum() - ma * mb
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    expected = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    assert ssim(x, y).item() == pytest.approx(expected, abs=1e-12)


def test_channels_are_averaged_and_images_kept_apart():
    x, y = pair((2, 3, 20, 24), seed=3)
    per_channel = torch.stack([ssim(x[:, c:c + 1], y[:, c:c + 1]) for c in range(3)], 1)
    assert torch.allclose(ssim(x, y), per_channel.mean(1), atol=1e-14)
    assert torch.allclose(ssim(x, y)[1:], ssim(x[1:], y[1:]), atol=1e-14)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-14)  # symmetric
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert (ssim(x, y) < 0.99).all()  # and a different image is not 1


@pytest.mark.parametrize("kwargs, args, message", [
    ({}, ((1, 3, 10, 20), (1, 3, 10, 20)), r"^output: SSIM with border='valid' needs images of at least 11 x 11"),
    ({"border": "reflect"}, ((1, 3, 5, 20), (1, 3, 5, 20)), r"^output: .* at least 6 x 6"),
    ({}, ((1, 3, 12, 20), (1, 3, 12, 21)), r"^target: expected the shape of output"),
    ({}, ((3, 12, 20), (3, 12, 20)), r"^output: expected a floating-point \(N, C, H, W\)"),
    ({"border": "same"}, ((1, 3, 12, 20), (1, 3, 12, 20)), r"^border: expected one of 'valid', 'reflect'"),
    ({"data_range": 0}, ((1, 3, 12, 20), (1, 3, 12, 20)), r"^data_range: expected a positive number"),
])
def test_bad_arguments_name_themselves(kwargs, args, message):
    with pytest.raises(ValueError, match=message):
        ssim(torch.rand(args[0]), torch.rand(args[1]), **kwargs)


def test_integer_images_are_refused():
    with pytest.raises(ValueError, match=r"^output: expected a floating-point"):
        ssim(torch.zeros(1, 3, 12, 12, dtype=torch.uint8), torch.zeros(1, 3, 12, 12))


def test_y_channel_is_matlabs_rgb2ycbcr():
    # MATLAB: Y = 16 + (65.481 R + 128.553 G + 24.966 B) for R, G, B in [0, 1], out of 255.
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                        [0.2, 0.5, 0.9]], dtype=torch.float64).T.reshape(3, 1, 6)
    y = rgb_to_y(rgb)
    assert y.shape == (1, 1, 6)
    expected = [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966, 16 + 0.2 * 65.481 + 0.5 * 128.553 + 0.9 * 24.966]
    assert (y.flatten() * 255).tolist() == pytest.approx(expected, abs=1e-9)
    assert rgb_to_y(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)
    with pytest.raises(ValueError, match=r"^image: expected a floating-point \(\.\.\., 3, H, W\)"):
        rgb_to_y(torch.rand(4, 4, 5))


def test_psnr_per_image_and_in_float64():
    target = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    out = target + torch.tensor([0.1, 0.001], dtype=torch.float64).view(2, 1, 1, 1)
    result = psnr(out, target)
    assert result.dtype == torch.float64
    assert result.tolist() == pytest.approx([20.0, 60.0], abs=1e-9)
    assert psnr(out.float(), target.float()).dtype == torch.float32
    assert psnr(target, target).tolist() == pytest.approx([100.0, 100.0])  # capped, not infinite
    assert psnr(target + 2, target).tolist() == pytest.approx([10 * math.log10(4)] * 2)  # output clamped


def test_validation_ssim_needs_no_torchmetrics(monkeypatch):
    for name in [m for m in sys.modules if m == "torchmetrics" or m.startswith("torchmetrics.")] + ["torchmetrics"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import torchmetrics` now raises ImportError
    fn = validation_ssim
    x, y = pair((2, 3, 8, 8), seed=1)
    assert fn(x, x).tolist() == pytest.approx([1.0, 1.0])
    clamped = torch.ones_like(x, dtype=torch.float32)  # the output is clamped to [0, 1] first
    assert torch.allclose(fn(x + 1, y), ssim(clamped, y.float(), border="reflect"), atol=1e-12)


def test_validation_ssim_keeps_the_torchmetrics_numbers():
    fn = validation_ssim
    x, y = pair((2, 3, 24, 40), seed=2)
    x, y = x.float(), y.float()
    assert torch.allclose(fn(x, y).float(), tm_ssim(x, y, data_range=1.0, reduction="none"), atol=1e-5)


def test_module_constants_are_the_standard_ones():
    assert (metrics.SSIM_WINDOW, metrics.SSIM_SIGMA, metrics.SSIM_K1, metrics.SSIM_K2) == (11, 1.5, 0.01, 0.03)
