"""`train --train-dir DIR --val-dir DIR`: upstream's folder layouts (GoPro's train/ and test/,
Rain13K's train/ and test/Rain100L, SIDD's train/ and val/, each holding input/ and target/),
beside `--data DIR` for DIR/train and DIR/val; errors name the flag and the folder."""

import re

import pytest
from train_helpers import fails_naming, write_pairs

from mprnet_kernels.cli import main
from mprnet_kernels.training.config import build_config
from mprnet_kernels.training.data import find_pairs
from mprnet_kernels.training.errors import SetupError
from mprnet_kernels.training.runlog import read_log

FLAGS = ["--preset", "tiny", "--patch", "16", "--batch", "2", "--epochs", "1", "--max-steps", "1",
         "--no-progress"]


def test_train_and_val_dirs_on_the_gopro_layout(gopro, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "deblur", "--train-dir", str(gopro / "train"), "--val-dir",
                 str(gopro / "test"), "--out", str(run), *FLAGS]) == 0
    out = capsys.readouterr().out
    assert f"training data {gopro / 'train'}, validation data {gopro / 'test'}" in out
    assert "data: 4 training pairs" in out and "2 validation images" in out
    row, = read_log(run / "log.csv")
    assert float(row["val_psnr"]) > 0


def test_data_is_short_for_train_and_val_dirs():
    config = build_config("deblur", "GoPro", "run", {})
    assert (config.train_dir, config.val_dir, config.data) == ("GoPro/train", "GoPro/val", "GoPro")
    config = build_config("derain", None, "run", {}, train_dir="Datasets/train", val_dir="Datasets/test/Rain100L")
    assert (config.train_dir, config.val_dir, config.data) == ("Datasets/train", "Datasets/test/Rain100L", None)
    for folders, words in (({}, "no data"), ({"val_dir": "v"}, "--train-dir is needed"),
                           ({"train_dir": "t"}, "--val-dir is needed")):
        with pytest.raises(SetupError, match=words):
            build_config("deblur", None, "run", {}, **folders)
    with pytest.raises(SetupError, match="--data and --train-dir and --val-dir: .* not both"):
        build_config("deblur", "GoPro", "run", {}, train_dir="t", val_dir="v")


def test_folder_errors_name_the_flag(gopro, tmp_path, capsys):
    dirs = ["--train-dir", str(gopro / "train"), "--val-dir", str(gopro / "test")]

    def run(*extra):
        return main(["train", "--task", "deblur", "--out", str(tmp_path / "run"), *FLAGS, *extra])

    fails_naming(capsys, run(), "no data", "--data", "--train-dir", "--val-dir")
    fails_naming(capsys, run("--data", str(gopro), dirs[0], dirs[1]), "--data and --train-dir", "not both")
    fails_naming(capsys, run(*dirs[:2]), "--train-dir", "--val-dir is needed")
    fails_naming(capsys, run(*dirs[2:]), "--val-dir", "--train-dir is needed")
    fails_naming(capsys, run("--train-dir", str(gopro / "nope"), *dirs[2:]), "--train-dir",
                 str(gopro / "nope"), "no such folder")
    fails_naming(capsys, run(*dirs[:2], "--val-dir", str(gopro)), str(gopro / "input"), "no such folder",
                 f"--val-dir {gopro} must hold input/ and target/")
    # --data on GoPro's layout: DIR/val is missing, and the message says how to name DIR/test.
    fails_naming(capsys, run("--data", str(gopro)), str(gopro / "val"), "no such folder",
                 f"--val-dir {gopro / 'test'}")
    assert not (tmp_path / "run").exists()


def test_groundtruth_folders_are_targets(tmp_path):
    # Upstream's SIDD patch script writes input/ and groundtruth/.
    root = write_pairs(tmp_path / "SIDD", train=2, val=1, size=16)
    (root / "train" / "target").rename(root / "train" / "groundtruth")
    notes = []
    pairs = find_pairs(root / "train", "--train-dir", report=notes.append)
    assert [p.target for p in pairs] == [root / "train" / "groundtruth" / f"{i:03d}.png" for i in range(2)]
    assert len(notes) == 1 and "no target/; its groundtruth/ holds the targets" in notes[0], notes
    (root / "train" / "groundtruth").rename(root / "train" / "labels")
    with pytest.raises(SetupError, match=re.escape(str(root / "train" / "target")) + ": no such folder"):
        find_pairs(root / "train", "--train-dir")


def test_pair_sizes_are_read_upright(tmp_path):
    # read_image applies EXIF orientation, so the up-front size check must see the turned size too
    import numpy as np
    from PIL import Image

    for sub in ("input", "target"):
        (tmp_path / sub).mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 wide x 48 high, shown turned: 48 x 64
    array = np.zeros((48, 64, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "input" / "a.jpg", exif=exif.tobytes())
    Image.fromarray(array).save(tmp_path / "target" / "a.jpg")
    with pytest.raises(SetupError, match=r"a.jpg is 48x64 but its target .*a.jpg is 64x48"):
        find_pairs(tmp_path, report=lambda _: None)
    Image.fromarray(np.zeros((64, 48, 3), dtype=np.uint8)).save(tmp_path / "target" / "a.jpg")
    (pair,) = find_pairs(tmp_path, report=lambda _: None)
    assert (pair.height, pair.width) == (64, 48)
