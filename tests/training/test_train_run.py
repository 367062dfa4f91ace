"""Training runs in-process on tiny data: PSNR rises, the fused loss matches the reference one
step by step, checkpoints have upstream's format, an interrupted run resumes to the same state
as an uninterrupted one, upstream checkpoints resume, and SSIM is optional."""

import sys

import pytest
import torch
from train_helpers import tiny_config, write_pairs

from mprnet_kernels import MPRNet, load_checkpoint, reference
from mprnet_kernels.checkpoint import checkpoint_config
from mprnet_kernels.cli import main
from mprnet_kernels.training.recipe import model_config
from mprnet_kernels.training.runlog import COLUMNS, read_log
from mprnet_kernels.training.schedule import lr_at
from mprnet_kernels.training.trainer import train


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_validation_psnr_rises_above_the_inputs(tmp_path):
    # Denoising 32 px patches at a high rate: 30 steps take the tiny model from below the noisy
    # inputs' PSNR (a fresh model adds its own residual) to 1-2 dB above it (seeds 0-2: +1.1 to
    # +2.3 dB over the inputs, +4 dB over epoch 1).
    data = write_pairs(tmp_path / "data", train=8)
    result = train(tiny_config(data, tmp_path / "run", epochs=15, lr=3e-3, patch=32))
    psnrs = [row["val_psnr"] for row in result.rows]
    assert psnrs[-1] > psnrs[0] + 2.0, psnrs
    assert psnrs[-1] > result.input_psnr + 0.5, (result.input_psnr, psnrs)
    assert result.best_psnr == max(psnrs)
    logged = read_log(tmp_path / "run" / "log.csv")
    assert [float(r["val_psnr"]) for r in logged] == pytest.approx(psnrs, abs=1e-4)


@pytest.mark.parametrize("task", ["deblur", "denoise"])  # edge term; clamp without edge term
def test_fused_loss_matches_the_reference_loss(pairs, tmp_path, task):
    runs = {}
    for name, loss_fn in (("fused", None), ("reference", None)):
        config = tiny_config(pairs, tmp_path / name, task=task, epochs=1, batch=2)  # 3 steps
        if name == "reference":
            loss_fn = reference.MPRNetLoss(edge_weight=config.edge_weight, clamp=config.clamp)
        runs[name] = train(config, loss_fn=loss_fn).step_losses
    assert len(runs["fused"]) == 3
    for fused, ref in zip(runs["fused"], runs["reference"]):
        assert abs(fused - ref) <= 1e-5 * abs(ref), runs


def test_checkpoint_format(pairs, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(pairs, run, epochs=1, max_steps=1))
    ckpt = _load(run / "last.pth")
    assert {"epoch", "state_dict", "optimizer", "scheduler", "config", "best_psnr", "best_epoch", "rng",
            "args"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["best_epoch"] == 1
    assert ckpt["config"] == model_config("tiny") == checkpoint_config(run / "best.pth")
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert ckpt["scheduler"]["last_epoch"] == 1 and ckpt["args"]["task"] == "denoise"
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "last.pth", "log.csv"]  # no temp files

    # The reference model loads it and restores like the trained fast model.
    ref = reference.MPRNet(**ckpt["config"])
    assert load_checkpoint(ref, run / "best.pth")["epoch"] == 1
    fast = MPRNet(**ckpt["config"])
    load_checkpoint(fast, ckpt)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=1e-4, atol=1e-5)


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_matches_an_uninterrupted_run(pairs, tmp_path):
    common = dict(epochs=3, batch=2)  # 3 steps per epoch
    train(tiny_config(pairs, tmp_path / "whole", **common))

    def stop(epoch, step, loss):
        if (epoch, step) == (1, 1):  # mid-way through the second epoch
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_config(pairs, tmp_path / "cut", **common), on_step=stop)
    assert _load(tmp_path / "cut" / "last.pth")["epoch"] == 1
    # Resume through the CLI with no other flags (they come from the checkpoint), and with a
    # loader worker this time: the data must not depend on the number of workers.
    assert main(["train", "--task", "denoise", "--data", str(pairs), "--out", str(tmp_path / "cut"),
                 "--resume", "--workers", "1", "--no-progress"]) == 0

    whole, cut = _load(tmp_path / "whole" / "last.pth"), _load(tmp_path / "cut" / "last.pth")
    assert (cut["epoch"], cut["best_epoch"], cut["best_psnr"]) == (whole["epoch"], whole["best_epoch"],
                                                                   whole["best_psnr"])
    for key in whole["state_dict"]:
        assert torch.equal(cut["state_dict"][key], whole["state_dict"][key]), key
    assert cut["optimizer"]["param_groups"] == whole["optimizer"]["param_groups"]
    for index, state in whole["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(cut["optimizer"]["state"][index][name], value), (index, name)
    assert cut["scheduler"] == whole["scheduler"]
    strip = lambda rows: [{k: r[k] for k in COLUMNS if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_log(tmp_path / "cut" / "log.csv")) == strip(read_log(tmp_path / "whole" / "log.csv"))


def test_upstream_checkpoint_resumes(pairs, tmp_path):
    # Upstream's format: epoch, state_dict with the DataParallel prefix, optimizer; no scheduler.
    torch.manual_seed(1)
    model = reference.MPRNet(**model_config("tiny"))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    reference.MPRNetLoss()(model(torch.rand(1, 3, 16, 16)), torch.rand(1, 3, 16, 16)).backward()
    optimizer.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model_latest.pth"
    torch.save({"epoch": 2, "state_dict": {"module." + k: v for k, v in weights.items()},
                "optimizer": optimizer.state_dict()}, path)

    run = tmp_path / "run"
    # No --preset: the model is built to fit the checkpoint's shapes.
    assert main(["train", "--task", "denoise", "--data", str(pairs), "--out", str(run), "--resume", str(path),
                 "--epochs", "3", "--patch", "16", "--batch", "4", "--max-steps", "1", "--lr", "1e-5",
                 "--warmup-epochs", "1", "--no-progress"]) == 0
    ckpt = _load(run / "last.pth")
    assert ckpt["epoch"] == 3 and ckpt["config"] == model_config("tiny")
    rows = read_log(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["3"]
    assert float(rows[0]["lr"]) == pytest.approx(lr_at(2, 1e-5, 1e-6, 1, 3))  # the schedule at epoch 3
    # One Adam step of lr 1e-6 from the upstream weights: moved, but by about the rate.
    moved = max((ckpt["state_dict"][k] - v).abs().max().item() for k, v in weights.items())
    assert 0 < moved < 1e-5
    assert ckpt["optimizer"]["state"][0]["step"].item() == 2  # Adam's state continued


def test_training_logs_ssim_without_torchmetrics(pairs, tmp_path, monkeypatch, capsys):
    # SSIM is the library's own (metrics.ssim): torchmetrics is only what the tests compare it with.
    for name in [m for m in sys.modules if m == "torchmetrics" or m.startswith("torchmetrics.")] + ["torchmetrics"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import torchmetrics...` raise ImportError
    train(tiny_config(pairs, tmp_path / "run", epochs=1, max_steps=1))
    assert "SSIM not computed" not in capsys.readouterr().out
    row, = read_log(tmp_path / "run" / "log.csv")
    assert -1 <= float(row["val_ssim"]) <= 1 and float(row["val_psnr"]) > 0
