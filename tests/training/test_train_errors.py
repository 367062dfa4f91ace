"""`mprnet-kernels train` refuses bad data and arguments before training starts: a one-line
message naming the folder, file or flag, and exit status 2."""

import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import write_pairs

from mprnet_kernels.cli import main
from mprnet_kernels.images import write_png


def _train(data, out, *extra):
    return main(["train", "--task", "denoise", "--data", str(data), "--out", str(out), "--preset", "tiny",
                 "--patch", "16", "--batch", "2", "--epochs", "1", "--no-progress", *extra])


def _fails_naming(capsys, code, *words):
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("mprnet-kernels train: ") and err.count("\n") == 1, err
    for word in words:
        assert str(word) in err, err


@pytest.fixture
def data(tmp_path):
    return write_pairs(tmp_path / "data", train=2, val=1, size=16)


def test_missing_folders(data, tmp_path, capsys):
    _fails_naming(capsys, _train(tmp_path / "nowhere", tmp_path / "run"), "--data", "nowhere", "no such folder")
    shutil.rmtree(data / "val" / "target")
    _fails_naming(capsys, _train(data, tmp_path / "run"), str(data / "val" / "target"), "no such folder")
    assert not (tmp_path / "run").exists()


def test_unpaired_files(data, tmp_path, capsys):
    (data / "train" / "target" / "001.png").rename(data / "train" / "target" / "001_gt.png")
    _fails_naming(capsys, _train(data, tmp_path / "run"), str(data / "train" / "input" / "001.png"),
                  "no file of the same name", str(data / "train" / "target"))


def test_unreadable_image(data, tmp_path, capsys):
    (data / "val" / "input" / "000.png").write_bytes(b"this is not a PNG")
    _fails_naming(capsys, _train(data, tmp_path / "run"), str(data / "val" / "input" / "000.png"),
                  "not a readable image")


def test_image_smaller_than_patch(data, tmp_path, capsys):
    for side in ("input", "target"):
        write_png(data / "train" / side / "002.png", torch.rand(3, 16, 8))
    _fails_naming(capsys, _train(data, tmp_path / "run"), str(data / "train" / "input" / "002.png"),
                  "8x16 is smaller than the 16x16 training patch", "--patch")


def test_pair_size_mismatch(data, tmp_path, capsys):
    write_png(data / "train" / "target" / "000.png", torch.rand(3, 24, 24))
    _fails_naming(capsys, _train(data, tmp_path / "run"), "000.png is 16x16 but its target", "24x24")


def test_bad_arguments(data, tmp_path, capsys):
    _fails_naming(capsys, _train(data, tmp_path / "run", "--patch", "12"), "--patch", "multiple of 8", "12")
    _fails_naming(capsys, _train(data, tmp_path / "run", "--resume"), "--resume",
                  str(tmp_path / "run" / "last.pth"), "no such checkpoint")
    bogus = tmp_path / "bogus.pth"
    torch.save({"state_dict": {}}, bogus)
    _fails_naming(capsys, _train(data, tmp_path / "run", "--resume", str(bogus)), str(bogus), "'epoch'")


def test_an_earlier_run_is_not_overwritten(data, tmp_path, capsys):
    run = Path(tmp_path / "run")
    run.mkdir()
    (run / "last.pth").write_bytes(b"earlier")
    _fails_naming(capsys, _train(data, run, "--max-steps", "1"), "last.pth", "--resume", "--overwrite")
    assert _train(data, run, "--max-steps", "1", "--overwrite") == 0
