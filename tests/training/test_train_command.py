"""`mprnet-kernels train` as a user runs it: a subprocess on demo data, and under torchrun with
two processes (gloo on the CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from mprnet_kernels.demo_data import make_demo_data
from mprnet_kernels.training.runlog import COLUMNS, read_log

ROOT = Path(__file__).resolve().parents[2]
TINY_FLAGS = ["--preset", "tiny", "--patch", "16", "--batch", "4", "--lr", "1e-3", "--warmup-epochs", "1",
              "--no-progress"]


def _run(args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _check_run(run, epochs):
    rows = read_log(run / "log.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert list(rows[0]) == list(COLUMNS)
    for r in rows:
        assert float(r["lr"]) > 0 and float(r["train_loss"]) > 0 and float(r["val_psnr"]) > 0
        assert 0 < float(r["val_ssim"]) <= 1 and float(r["seconds"]) > 0
    for name in ("last.pth", "best.pth"):
        ckpt = torch.load(run / name, map_location="cpu", weights_only=True)
        assert ckpt["config"]["n_feat"] == 8 and 1 <= ckpt["epoch"] <= epochs
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == epochs


def test_command_end_to_end_on_demo_data(tmp_path):
    make_demo_data(tmp_path / "data", task="denoise", count=6, size=32, val_count=2)
    run = tmp_path / "run"
    done = _run(["-m", "mprnet_kernels.cli", "train", "--task", "denoise", "--data", str(tmp_path / "data"),
                 "--out", str(run), "--epochs", "2", "--workers", "1", *TINY_FLAGS[:-1]])
    assert done.returncode == 0, done.stderr
    _check_run(run, 2)
    assert "model: preset tiny (n_feat 8" in done.stdout and "epoch 2/2" in done.stdout
    assert "epoch 1/2" in done.stderr  # the progress bar, on stderr


def test_torchrun_two_processes(pairs, tmp_path):
    run = tmp_path / "run"
    done = _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "mprnet_kernels.cli", "train", "--task", "denoise", "--data", str(pairs),
                 "--out", str(run), "--epochs", "1", *TINY_FLAGS])
    assert done.returncode == 0, done.stdout + done.stderr
    _check_run(run, 1)
    assert done.stdout.count("model: preset tiny") == 1  # rank 0 alone prints
    assert "batch 4 (2 per process x 2)" in done.stdout
