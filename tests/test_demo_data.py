"""make-demo-data: layout, determinism, task-appropriate degradations, argument checks."""

import json

import numpy as np
import pytest
from PIL import Image

from mprnet_kernels import cli
from mprnet_kernels.demo_data import TASKS, make_demo_data, make_pair

SIZE = 48


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """One small set per task: 6 train pairs, the default validation count (4)."""
    root = tmp_path_factory.mktemp("demo")
    return {task: make_demo_data(root / task, task=task, count=6, size=SIZE, seed=3) for task in TASKS}


def load(path):
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (SIZE, SIZE)
        return np.asarray(img).astype(np.float64) / 255


def pairs(info, split="train"):
    names = sorted(p.name for p in info["dirs"][split]["input"].iterdir())
    return [(load(info["dirs"][split]["input"] / n), load(info["dirs"][split]["target"] / n)) for n in names]


@pytest.mark.parametrize("task", TASKS)
def test_layout_names_counts(sets, task):
    info = sets[task]
    assert (info["train"], info["val"]) == (6, 4)
    for split, count in (("train", 6), ("val", 4)):
        names = [sorted(p.name for p in (info["root"] / split / kind).iterdir()) for kind in ("input", "target")]
        assert names[0] == names[1] == [f"{i:04d}.png" for i in range(count)]
        assert info["dirs"][split]["input"] == info["root"] / split / "input"
    record = json.loads(info["json"].read_text())
    assert record["task"] == task and record["size"] == SIZE and record["seed"] == 3
    assert [r["name"] for r in record["splits"]["val"]] == [f"{i:04d}.png" for i in range(4)]


def test_same_seed_same_bytes_other_seed_other_images(sets, tmp_path):
    again = make_demo_data(tmp_path / "again", task="derain", count=6, size=SIZE, seed=3)
    other = make_demo_data(tmp_path / "other", task="derain", count=2, size=SIZE, seed=4)
    for split in ("train", "val"):
        for kind in ("input", "target"):
            for path in sets["derain"]["dirs"][split][kind].iterdir():
                assert path.read_bytes() == (again["dirs"][split][kind] / path.name).read_bytes()
    assert not np.array_equal(load(other["dirs"]["train"]["target"] / "0000.png"),
                              load(again["dirs"]["train"]["target"] / "0000.png"))
    assert again["json"].read_bytes() == sets["derain"]["json"].read_bytes()


def test_image_i_does_not_depend_on_count_and_tasks_share_targets(sets, tmp_path):
    fewer = make_demo_data(tmp_path / "fewer", task="deblur", count=2, size=SIZE, seed=3)
    assert fewer["val"] == 4
    for name in ("0000.png", "0001.png"):
        assert (fewer["dirs"]["train"]["input"] / name).read_bytes() == \
            (sets["deblur"]["dirs"]["train"]["input"] / name).read_bytes()
        assert (sets["denoise"]["dirs"]["train"]["target"] / name).read_bytes() == \
            (sets["deblur"]["dirs"]["train"]["target"] / name).read_bytes()


def test_targets_have_structure(sets):
    for _, target in pairs(sets["deblur"]):
        assert target.std() > 0.05  # not flat
        assert np.abs(np.diff(target, axis=1)).max() > 0.2  # hard edges somewhere


def laplacian_energy(image):
    lap = 4 * image[1:-1, 1:-1] - image[:-2, 1:-1] - image[2:, 1:-1] - image[1:-1, :-2] - image[1:-1, 2:]
    return float((lap ** 2).mean())


def test_deblur_inputs_lose_high_frequencies(sets):
    for split in ("train", "val"):
        for image, target in pairs(sets["deblur"], split):
            assert laplacian_energy(image) < 0.5 * laplacian_energy(target)
            assert abs(image.mean() - target.mean()) < 0.02  # blur moves energy, it adds none


def test_derain_inputs_are_brighter_along_thin_streaks(sets):
    for image, target in pairs(sets["derain"]):
        diff = (image - target).mean(axis=2)
        assert diff.min() >= -1.5 / 255  # screen blend: never darker (up to rounding)
        streak = diff > 0.05
        assert 0.002 < streak.mean() < 0.4  # thin lines, not a veil
        assert diff[streak].mean() > 0.1
        # Slanted lines within 33 degrees of vertical: the difference is more alike down a column
        # than along a row.
        down = np.abs(np.diff(diff, axis=0)).mean()
        across = np.abs(np.diff(diff, axis=1)).mean()
        assert down < across


def test_denoise_residual_matches_recorded_sigma(sets):
    record = json.loads(sets["denoise"]["json"].read_text())["splits"]["train"]
    sigmas = []
    for (image, target), entry in zip(pairs(sets["denoise"]), record):
        sigma = entry["sigma"] / 255
        assert 10 / 255 <= sigma <= 50 / 255
        inner = (target > 0.25) & (target < 0.75)  # away from the clipping at 0 and 1
        residual = (image - target)[inner]
        assert abs(residual.mean()) < 0.2 * sigma
        assert residual.std() == pytest.approx(sigma, rel=0.15)
        sigmas.append(sigma)
    assert max(sigmas) - min(sigmas) > 5 / 255  # sigma varies between images


def test_make_pair_is_the_files_content():
    image, target, params = make_pair("denoise", 32, [7], 2)
    again = make_pair("denoise", 32, [7], 2)
    assert image.shape == target.shape == (32, 32, 3) and image.dtype == np.float32
    assert np.array_equal(image, again[0]) and np.array_equal(target, again[1]) and params == again[2]
    assert 0 <= image.min() and image.max() <= 1


@pytest.mark.parametrize("kwargs, word", [
    (dict(count=0), "count"), (dict(count=2.5), "count"), (dict(size=20), "size"), (dict(size=8), "size"),
    (dict(size=0), "size"), (dict(task="deraze"), "task"), (dict(seed=-1), "seed"), (dict(val_count=0), "val_count"),
])
def test_bad_arguments_name_themselves(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=f"^{word}: expected"):
        make_demo_data(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()  # checked before anything is written


def test_refuses_a_folder_that_holds_a_set(sets):
    with pytest.raises(FileExistsError, match="not empty"):
        make_demo_data(sets["deblur"]["root"], count=1, size=16)


def test_cli_writes_a_set(tmp_path, capsys):
    assert cli.main(["make-demo-data", str(tmp_path / "d"), "--task", "denoise", "--count", "3",
                     "--val-count", "2", "--size", "16", "--seed", "5"]) == 0
    assert "3 train and 2 val denoise pairs" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "val" / "target").iterdir())) == 2
    with Image.open(tmp_path / "d" / "train" / "input" / "0002.png") as img:
        assert img.size == (16, 16)


@pytest.mark.parametrize("argv, word", [
    (["--count", "0"], "--count"), (["--size", "30"], "--size"), (["--val-count", "-1"], "--val-count"),
])
def test_cli_bad_arguments_exit_2(tmp_path, capsys, argv, word):
    assert cli.main(["make-demo-data", str(tmp_path / "d")] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mprnet-kernels make-demo-data: {word}: expected"), err


def test_cli_refuses_an_existing_set(sets, capsys):
    assert cli.main(["make-demo-data", str(sets["derain"]["root"]), "--count", "1", "--size", "16"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_help_states_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["make-demo-data", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("default 64", "default 128", "a quarter of --count, at least 4", "multiple of 8",
                 "deblur", "derain", "denoise"):
        assert text in out, text
