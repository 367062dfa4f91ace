"""The pieces of `train` on their own: recipe table, flag precedence, schedule, sampler, patches,
metrics, validation padding, the log."""

import math

import pytest
import torch

from mprnet_kernels.reference import PRESETS
from mprnet_kernels.training.config import build_config
from mprnet_kernels.training.data import random_patch
from mprnet_kernels.training.errors import SetupError
from mprnet_kernels.images import pad_to_multiple
from mprnet_kernels.metrics import psnr, validation_ssim
from mprnet_kernels.training.recipe import RECIPES, model_config
from mprnet_kernels.training.runlog import RunLog, read_log
from mprnet_kernels.training.sampler import EpochSampler
from mprnet_kernels.training.schedule import WarmupCosine, lr_at


def test_recipe_is_upstreams():
    for task, epochs in (("deblur", 3000), ("derain", 250), ("denoise", 80)):
        r = RECIPES[task]
        assert (r.preset, r.batch, r.lr, r.min_lr, r.warmup_epochs, r.epochs) == (task, 16, 2e-4, 1e-6, 3, epochs)
        assert r.patch == (128 if task == "denoise" else 256)
        assert (r.edge_weight, r.clamp) == ((0.0, True) if task == "denoise" else (0.05, False))
    assert model_config("derain") == PRESETS["derain"]
    assert model_config("small", num_cab=3) == dict(PRESETS["deblur"], n_feat=16, scale_unetfeats=8,
                                                    scale_orsnetfeats=8, num_cab=3)


def test_flags_override_checkpoint_override_recipe():
    config = build_config("derain", "d", "r", {"lr": 1e-3, "epochs": None})
    assert (config.lr, config.epochs, config.patch, config.model) == (1e-3, 250, 256, PRESETS["derain"])
    inherited = dict(config.as_dict(), epochs=7, patch=64, preset="tiny")
    resumed = build_config("derain", "d", "r", {"patch": 32}, inherited)
    assert (resumed.epochs, resumed.patch, resumed.lr, resumed.model["n_feat"]) == (7, 32, 1e-3, 8)
    with pytest.raises(SetupError, match="--task deblur.*--task derain"):
        build_config("deblur", "d", "r", {}, inherited)


@pytest.mark.parametrize("flags, flag", [({"patch": 20}, "--patch"), ({"batch": 0}, "--batch"),
                                         ({"preset": "huge"}, "--preset"), ({"min_lr": 1.0}, "--min-lr"),
                                         ({"num_cab": 0}, "--num-cab")])
def test_bad_values_name_the_flag(flags, flag):
    with pytest.raises(SetupError, match=flag):
        build_config("denoise", "d", "r", flags)


def test_schedule_warms_up_then_anneals_to_min_lr():
    rates = [lr_at(e, 2e-4, 1e-6, 3, 10) for e in range(10)]
    assert rates[:3] == pytest.approx([2e-4 / 3, 4e-4 / 3, 2e-4])
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))  # strictly decreasing after warm-up
    assert rates[-1] == pytest.approx(1e-6)
    assert rates[6] == pytest.approx(1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi * 4 / 7)))

    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-4)
    sched = WarmupCosine(opt, 2e-4, 1e-6, 3, 10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(rates)
    # Jumping to an epoch (resume without a saved scheduler) lands on the same rate.
    fresh = WarmupCosine(torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=2e-4), 2e-4, 1e-6, 3, 10)
    fresh.seek(6)
    assert fresh.optimizer.param_groups[0]["lr"] == pytest.approx(rates[6])


def test_sampler_shards_add_up_to_the_single_process_batch():
    single = EpochSampler(10, 4, seed=3)
    shards = [EpochSampler(10, 4, rank=r, world=2, seed=3) for r in range(2)]
    for s in [single, *shards]:
        s.set_epoch(5)
    items = list(single)
    assert len(items) == len(single) == 12  # ceil(10 / 4) full batches
    assert {i for i, _ in items} == set(range(10))  # every pair seen
    parts = [list(s) for s in shards]
    assert [len(p) for p in parts] == [6, 6]
    for step in range(3):
        together = parts[0][2 * step:2 * step + 2] + parts[1][2 * step:2 * step + 2]
        assert sorted(together) == sorted(items[4 * step:4 * step + 4])
    # The order depends on (seed, epoch) only.
    again = EpochSampler(10, 4, seed=3)
    again.set_epoch(5)
    assert list(again) == items
    again.set_epoch(6)
    assert list(again) != items
    assert len(EpochSampler(10, 4, max_steps=2)) == 8
    with pytest.raises(SetupError, match="--batch 3"):
        EpochSampler(10, 3, world=2)


def test_patches_get_the_same_crop_flip_and_rotation():
    img = torch.arange(3 * 12 * 10, dtype=torch.float32).view(3, 12, 10)
    views = set()
    for seed in range(64):
        a, b = random_patch(img, img + 1, 8, torch.Generator().manual_seed(seed))
        assert a.shape == (3, 8, 8) and torch.equal(b, a + 1)
        corner = int(a[0, 0, 0])  # the value in the corner says which crop and rotation
        views.add((corner, int(a[0, 0, 1]) - corner))
    assert len(views) > 20  # crops and all orientations are drawn


def test_psnr_and_ssim():
    target = torch.full((2, 3, 8, 8), 0.5)
    out = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)
    assert psnr(out, target).tolist() == pytest.approx([20.0, 40.0], abs=1e-3)
    assert psnr(target + 2, target).tolist() == pytest.approx([10 * math.log10(4)] * 2)  # output clamped to 1
    assert validation_ssim(target, target).tolist() == pytest.approx([1.0, 1.0])


def test_validation_padding_is_reflect_to_multiples_of_8():
    x = torch.rand(1, 3, 13, 17)
    padded = pad_to_multiple(x)
    assert padded.shape == (1, 3, 16, 24)
    assert torch.equal(padded[..., :13, :17], x)
    assert torch.equal(padded[..., 13, :17], x[..., 11, :])  # reflected, not repeated


def test_cpu_validation_leaves_no_inference_cache_behind_for_training():
    """Validation's no-grad forwards fill the fast model's CPU buffer cache; training (gradients
    on) never reuses those blocks, so validate gives them back."""
    import mprnet_kernels
    from mprnet_kernels.cpu_cache import cpu_cache_stats
    from mprnet_kernels.training.distributed import Dist
    from mprnet_kernels.training.validation import validate

    torch.manual_seed(0)
    model = mprnet_kernels.MPRNet.from_preset("tiny").train()
    loader = [(torch.rand(1, 3, 60, 44), torch.rand(1, 3, 60, 44))]
    scopes = cpu_cache_stats()["scopes"]
    mean_psnr, mean_ssim = validate(model, loader, Dist(0, 1, 0, torch.device("cpu"), False), amp=False, ssim=None)
    stats = cpu_cache_stats()
    assert stats["scopes"] == scopes + 1 and stats["hits"] + stats["misses"] > 0  # the forward used it
    assert stats["cached_bytes"] == 0 and model.training and mean_ssim is None and math.isfinite(mean_psnr)


def test_log_drops_rows_after_the_resumed_epoch(tmp_path):
    log = RunLog(tmp_path / "log.csv")
    for epoch in (1, 2, 3):
        log.append(epoch, 1e-4, 0.5, None if epoch == 2 else 30.0, None, 1.0)
    rows = read_log(tmp_path / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[1]["val_psnr"] == "" and rows[0]["val_ssim"] == ""
    RunLog(tmp_path / "log.csv", keep_through_epoch=2)
    assert [r["epoch"] for r in read_log(tmp_path / "log.csv")] == ["1", "2"]
