"""`train --init CHECKPOINT`, fine-tuning from weights: the weights of an upstream release file,
with or without DataParallel's `module.` prefix, start a fresh schedule (epoch 0, fresh Adam,
no best PSNR); the model is built to fit the checkpoint; a finished checkpoint given to
--resume points at --init; bad combinations fail in one line."""

import argparse
from pathlib import Path

import pytest
import torch
from train_helpers import fails_naming, tiny_config

from mprnet_kernels import reference
from mprnet_kernels.cli import main
from mprnet_kernels.training.cli import add_arguments, build
from mprnet_kernels.training.errors import SetupError
from mprnet_kernels.training.recipe import model_config
from mprnet_kernels.training.runlog import read_log
from mprnet_kernels.training.schedule import lr_at
from mprnet_kernels.training.trainer import train

FLAGS = ["--patch", "16", "--batch", "2", "--max-steps", "1", "--warmup-epochs", "1", "--no-progress"]
UPSTREAM_STEPS = 5  # Adam steps in the upstream-style file's optimizer state


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _release_file(path: Path, prefix: str) -> dict:
    """An upstream-style release file of the tiny model: {'epoch': 3000, 'state_dict', 'optimizer'}
    as upstream's train.py saves it (keys prefixed `module.` when it ran under nn.DataParallel).
    Returns the weights, unprefixed."""
    torch.manual_seed(1)
    model = reference.MPRNet(**model_config("tiny"))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for _ in range(UPSTREAM_STEPS):
        optimizer.zero_grad()
        reference.MPRNetLoss()(model(torch.rand(1, 3, 16, 16)), torch.rand(1, 3, 16, 16)).backward()
        optimizer.step()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"epoch": 3000, "state_dict": {prefix + k: v for k, v in weights.items()},
                "optimizer": optimizer.state_dict()}, path)
    return weights


def _args(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_init_fine_tunes_an_upstream_release_file(gopro, tmp_path, capsys, prefix):
    path = tmp_path / "model_deblurring.pth"
    weights = _release_file(path, prefix)
    run = tmp_path / "run"
    # No --preset: the model is built from the file's shapes (tiny, not the deblur task's preset).
    assert main(["train", "--task", "deblur", "--train-dir", str(gopro / "train"), "--val-dir",
                 str(gopro / "test"), "--out", str(run), "--init", str(path), "--epochs", "2",
                 "--lr", "1e-6", "--min-lr", "0", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert f"fine-tuning the weights of {path} (saved at its epoch 3000) from epoch 0" in out
    assert "model: preset tiny" in out and f"validation data {gopro / 'test'}" in out

    ckpt = _load(run / "last.pth")
    assert ckpt["epoch"] == 2 and ckpt["config"] == model_config("tiny")
    assert ckpt["args"]["init"] == str(path) and ckpt["args"]["preset"] == "tiny"
    # A fresh schedule: both epochs ran, at the rates of epochs 0 and 1 of a 2-epoch run.
    rows = read_log(run / "log.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([lr_at(e, 1e-6, 0.0, 1, 2) for e in (0, 1)])
    # A fresh optimizer: its two steps, not the file's five continued.
    assert ckpt["optimizer"]["state"][0]["step"].item() == 2
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(1e-6)
    # Best PSNR unset at the start: epoch 1's validation is the first best.
    assert ckpt["best_epoch"] >= 1 and ckpt["best_psnr"] > 0
    assert (run / "best.pth").is_file()
    # Started from the file's weights: two Adam steps of at most 1e-6 move them by about that,
    # while the seed-0 initialisation of a fresh model is far from them.
    moved = max((ckpt["state_dict"][k] - v).abs().max().item() for k, v in weights.items())
    assert 0 < moved < 1e-5, moved
    torch.manual_seed(0)
    fresh = reference.MPRNet(**model_config("tiny")).state_dict()
    assert max((fresh[k] - v).abs().max().item() for k, v in weights.items()) > 1e-2


def test_resume_of_a_finished_release_file_points_at_init(gopro, tmp_path, capsys):
    path = tmp_path / "model_deblurring.pth"
    _release_file(path, "module.")
    run = tmp_path / "run"
    # --epochs left at the deblur recipe's 3000: the file's own run is over.
    assert main(["train", "--task", "deblur", "--train-dir", str(gopro / "train"), "--val-dir",
                 str(gopro / "test"), "--out", str(run), "--resume", str(path), *FLAGS]) == 0
    out = capsys.readouterr().out
    line, = [x for x in out.splitlines() if x.startswith("nothing to do")]
    assert "epoch 3000 of --epochs 3000" in line and f"--init {path}" in line, line
    assert not (run / "last.pth").exists()


def test_resume_of_an_upstream_file_says_no_psnr_was_recorded(gopro, tmp_path, capsys):
    path = tmp_path / "model_latest.pth"
    _release_file(path, "module.")
    run = tmp_path / "run"
    assert main(["train", "--task", "deblur", "--train-dir", str(gopro / "train"), "--val-dir",
                 str(gopro / "test"), "--out", str(run), "--resume", str(path), "--epochs", "3001",
                 "--lr", "1e-6", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 3000 (no validation PSNR recorded in the checkpoint)" in out, out
    assert "-inf" not in out
    assert _load(run / "last.pth")["optimizer"]["state"][0]["step"].item() == UPSTREAM_STEPS + 1


def test_init_inherits_nothing_but_the_model(pairs, tmp_path):
    # A run of ours with its own settings; --init of its last.pth takes the model alone.
    train(tiny_config(pairs, tmp_path / "first", epochs=1, max_steps=1, seed=5, preset="small",
                      num_cab=1, lr=3e-3))
    config, checkpoint, weights = build(_args("--task", "denoise", "--data", str(pairs), "--out",
                                              str(tmp_path / "second"), "--init",
                                              str(tmp_path / "first" / "last.pth")))
    assert checkpoint is None and weights["epoch"] == 1
    assert config.model == model_config("small", num_cab=1)
    assert (config.preset, config.num_cab) == ("small", 1)
    assert (config.seed, config.lr, config.epochs, config.patch) == (0, 2e-4, 80, 128)  # the recipe's
    assert config.resume is None and config.init == str(tmp_path / "first" / "last.pth")


def test_preset_must_agree_with_the_init_checkpoint(tmp_path, capsys):
    path = tmp_path / "model_deraining.pth"
    _release_file(path, "module.")
    data = ["--task", "derain", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--init", str(path)]
    config, _, _ = build(_args(*data, "--preset", "tiny"))  # agrees: accepted
    assert config.model == model_config("tiny")
    with pytest.raises(SetupError) as e:
        build(_args(*data, "--preset", "small"))
    message = str(e.value)
    assert "--preset small" in message and "preset small (n_feat 16" in message, message
    assert f"--init {path} holds preset tiny (n_feat 8" in message, message
    # Through the command, the same one-line error.
    fails_naming(capsys, main(["train", *data, "--num-cab", "2"]), "--num-cab 2", "preset tiny")


def test_init_errors(gopro, tmp_path, capsys):
    path = tmp_path / "model_deblurring.pth"
    _release_file(path, "")
    dirs = ["--train-dir", str(gopro / "train"), "--val-dir", str(gopro / "test")]

    def run(*extra):
        return main(["train", "--task", "deblur", "--out", str(tmp_path / "run"), *FLAGS, *dirs, *extra])

    fails_naming(capsys, run("--init", str(path), "--resume"), "--init", "--resume", "give one")
    fails_naming(capsys, run("--init", str(path), "--resume", str(path)), "--init", "--resume")
    fails_naming(capsys, run("--init", str(tmp_path / "nowhere.pth")), "--init", "nowhere.pth",
                 "no such checkpoint")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    fails_naming(capsys, run("--init", str(tmp_path / "other.pth")), "--init", "other.pth",
                 "does not hold MPRNet weights")
    torch.save([1, 2], tmp_path / "list.pth")
    fails_naming(capsys, run("--init", str(tmp_path / "list.pth")), "--init", "holds a list")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    fails_naming(capsys, run("--init", str(tmp_path / "text.pth")), "--init", "text.pth",
                 "is not a file written by torch.save")
    assert not (tmp_path / "run").exists()
    # --init starts a new run: an earlier run's last.pth in --out is kept unless --overwrite.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pth").write_bytes(b"earlier")
    fails_naming(capsys, run("--init", str(path)), "last.pth", "--overwrite")
