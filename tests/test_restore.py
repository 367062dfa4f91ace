"""restore(): padding, cropping, tiles and their blending; the `restore` command end to end."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import mprnet_kernels
from mprnet_kernels import MPRNet, cli, restore
from mprnet_kernels.demo_data import make_pair
from mprnet_kernels.images import as_written, pad_to_multiple, read_image_file
from mprnet_kernels.reference import PRESETS
from mprnet_kernels.restoration import (check_tiling, local_attention_arguments, tile_count, tile_starts,
                                        tiling_difference)

TINY = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
SMALL = dict(n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2)
REPO = Path(__file__).resolve().parents[1]


def seeded_model(config, seed=0):
    torch.manual_seed(seed)
    return MPRNet(**config).eval()


@pytest.fixture(scope="module")
def tiny():
    return seeded_model(TINY)


def rand_image(*shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


class Local(nn.Module):
    """A purely local (per-pixel) stand-in for MPRNet: tiles must reproduce it exactly."""

    def forward(self, x):
        y = torch.sigmoid(3 * x - 1.2) * 1.1 - 0.02
        return [y, x, x]


class Recorder(nn.Module):
    """Returns [x, x, x] and records the shape, dtype and mode of every call."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros((), dtype=dtype))
        self.calls = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), x.dtype, torch.is_inference_mode_enabled()))
        return [x + self.weight] * 3


# --------------------------------------------------------------------------- whole images


@pytest.mark.parametrize("hw", [(1, 1), (2, 7), (5, 3), (13, 21), (8, 8), (16, 24), (31, 9)])
def test_same_shape_values_in_range(tiny, hw):
    x = rand_image(3, *hw)
    y = restore(tiny, x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1
    assert not y.is_inference()
    y.mul_(0.5)  # an ordinary tensor: in-place use works


def test_equals_manual_pad_model_crop(tiny):
    x = rand_image(2, 3, 13, 21)
    with torch.no_grad():
        manual = tiny(F.pad(x, (0, 3, 0, 3), mode="reflect"))[0][..., :13, :21].clamp(0, 1)
    assert torch.equal(restore(tiny, x), manual)
    multiple = rand_image(3, 16, 24)  # no padding at all
    with torch.no_grad():
        assert torch.equal(restore(tiny, multiple), tiny(multiple[None])[0][0].clamp(0, 1))


def test_padding_reflects_or_replicates_short_sides():
    x = rand_image(1, 3, 5, 13)
    assert torch.equal(pad_to_multiple(x), F.pad(x, (0, 3, 0, 3), mode="reflect"))
    # Height 3 is too short to mirror a pad of 5: replicated; width 5 mirrors its pad of 3.
    x = rand_image(1, 3, 3, 5)
    expected = F.pad(F.pad(x, (0, 3, 0, 0), mode="reflect"), (0, 0, 0, 5), mode="replicate")
    assert torch.equal(pad_to_multiple(x), expected)
    one = rand_image(3, 1, 1)
    assert torch.equal(pad_to_multiple(one), one.expand(3, 8, 8))


def test_three_and_four_dimensional_inputs(tiny):
    batch = rand_image(2, 3, 12, 20)
    out = restore(tiny, batch)
    assert out.shape == batch.shape
    assert torch.equal(restore(tiny, batch[1]), restore(tiny, batch[1:])[0])
    assert torch.allclose(restore(tiny, batch[0]), out[0], atol=1e-5)


def test_runs_in_inference_mode_in_the_models_dtype():
    model = Recorder(torch.float64)
    x = rand_image(3, 10, 12)
    y = restore(model, x)
    assert model.calls == [((1, 3, 16, 16), torch.float64, True)]
    assert y.dtype == torch.float32 and torch.equal(y, x)
    assert restore(Local(), x.double()).dtype == torch.float64  # no parameters: the image's dtype


def test_does_not_modify_the_input(tiny):
    x = rand_image(3, 13, 21)
    before = x.clone()
    restore(tiny, x, tile=16, overlap=8)
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- tiles


@pytest.mark.parametrize("size, tile, overlap", [(40, 16, 4), (16, 16, 0), (10, 16, 8), (100, 32, 31), (33, 8, 0)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    t = min(tile, size)
    assert starts[-1] + t == size  # the last tile is aligned to the edge
    for a, b in zip(starts, starts[1:]):
        assert a + t - b >= overlap  # consecutive tiles overlap by at least `overlap`


def test_tile_at_least_the_image_is_the_whole_path(tiny):
    for hw in ((13, 21), (24, 32), (32, 32)):
        x = rand_image(3, *hw)
        assert torch.equal(restore(tiny, x, tile=32, overlap=8), restore(tiny, x))


@pytest.mark.parametrize("hw, tile, overlap", [((50, 70), 16, 4), ((50, 70), 24, 0), ((13, 100), 16, 7),
                                               ((64, 64), 8, 7), ((37, 45), 32, 16)])
def test_tiles_reproduce_a_local_model_exactly(hw, tile, overlap):
    x = rand_image(2, 3, *hw)
    model = Local()
    whole = restore(model, x)
    tiled = restore(model, x, tile=tile, overlap=overlap)
    assert torch.equal(tiled, whole)  # the blending weights sum to one everywhere


def test_each_tile_runs_at_tile_size():
    model = Recorder()
    x = rand_image(3, 20, 50)  # padded to 24 x 56: one row of tiles, four along the width
    assert torch.equal(restore(model, x, tile=16, overlap=4), x)
    shapes = [c[0] for c in model.calls]
    assert shapes == [(1, 3, 16, 16)] * len(tile_starts(24, 16, 4)) * len(tile_starts(56, 16, 4))
    model.calls.clear()
    restore(model, rand_image(3, 12, 50), tile=16, overlap=4)  # height 16 fits one tile: not cut
    assert {c[0] for c in model.calls} == {(1, 3, 16, 16)} and len(model.calls) == len(tile_starts(56, 16, 4))


class TileIndex(nn.Module):
    """Outputs the number of earlier calls everywhere: shows how tiles are weighted."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        out = torch.full_like(x, float(self.calls))
        self.calls += 1
        return [out] * 3


def test_tiles_cross_fade_linearly_over_the_overlap():
    # Width 40, tile 24, overlap 8: tiles at 0 and 16, sharing columns 16-23. The first tile (0)
    # fades out as the second (1) fades in: their blend is the second's weight, (j + 1) / 9.
    out = restore(TileIndex(), torch.zeros(3, 16, 40), tile=24, overlap=8)
    expected = torch.cat([torch.zeros(16), torch.arange(1, 9) / 9, torch.ones(16)]).double()
    for row in out.reshape(-1, 40):
        assert torch.allclose(row.double(), expected, atol=1e-6)


def test_tiled_mprnet_is_close_to_whole_but_not_equal():
    # MPRNet's channel attention pools over its whole input, so tiles see other statistics and
    # the results differ. For this seeded small config (random init: a weak proxy whose residuals
    # are large) on a 96 x 96 synthetic blurred image, tile 64 overlap 16, the difference measured
    # 29.7 dB PSNR (26.3-29.7 dB over model seeds 0-2; max |diff| 0.29-0.59). The lower bound
    # leaves room for other BLAS builds; a tile left out (zeros) or weights that do not normalise
    # (overlaps doubled) would fall far below it.
    model = seeded_model(SMALL)
    x = torch.from_numpy(make_pair("deblur", 96, [0], 0)[0].transpose(2, 0, 1).copy())
    diff = tiling_difference(model, x, tile=64, overlap=16)
    assert 24 < diff["psnr"] < 40, diff
    assert diff["max_abs"] > 1e-3


@pytest.mark.parametrize("tile, overlap, word", [
    (0, 0, "tile"), (12, 0, "tile"), (-8, 0, "tile"), (16.0, 0, "tile"), (True, 0, "tile"),
    (16, -1, "overlap"), (16, 16, "overlap"), (16, 20, "overlap"), (16, 1.5, "overlap"), (None, -3, "overlap"),
])
def test_bad_tiling_arguments_name_themselves(tiny, tile, overlap, word):
    with pytest.raises(ValueError, match=f"^{word}: expected"):
        restore(tiny, rand_image(3, 8, 8), tile=tile, overlap=overlap)


@pytest.mark.parametrize("image", [torch.rand(8, 8), torch.rand(1, 8, 8), torch.rand(1, 1, 3, 8, 8),
                                   torch.zeros(3, 8, 8, dtype=torch.uint8), torch.rand(3, 0, 8)])
def test_bad_images_are_rejected(tiny, image):
    with pytest.raises(ValueError, match="^image: expected"):
        restore(tiny, image)


@pytest.mark.parametrize("hw, tile, overlap", [((20, 50), 16, 4), ((12, 50), 16, 4), ((13, 21), 32, 8),
                                               ((13, 21), None, 32), ((64, 64), 8, 7), ((37, 45), 24, 0)])
def test_progress_reports_every_model_call(hw, tile, overlap):
    model, seen = Recorder(), []
    restore(model, rand_image(2, 3, *hw), tile=tile, overlap=overlap,
            progress=lambda done, total: seen.append((done, total)))
    total = len(model.calls)
    assert tile_count(*hw, tile, overlap) == total  # what a caller can know before running
    assert seen == [(i, total) for i in range(1, total + 1)]


def test_tile_count_is_one_for_whole_images_and_checks_its_arguments():
    assert tile_count(5000, 3000, None) == 1
    # The 872 x 1000 image at --tile 128: tiles start every 96 px, 9 down and 11 across.
    assert tile_count(872, 1000, 128, 32) == len(tile_starts(872, 128, 32)) * len(tile_starts(1000, 128, 32)) == 99
    with pytest.raises(ValueError, match="^tile: expected"):
        tile_count(40, 40, 12)


def test_progress_must_be_callable(tiny):
    with pytest.raises(TypeError, match="^progress: expected a callable"):
        restore(tiny, rand_image(3, 8, 8), progress=5)


def test_tiling_errors_speak_the_callers_language():
    with pytest.raises(ValueError, match=r"^tile: .*\(None for whole images\), got 100$"):
        check_tiling(100, 32)
    with pytest.raises(ValueError) as cli_error:
        check_tiling(100, 32, prefix="--")
    assert str(cli_error.value) == ("--tile: expected a positive multiple of 8 (leave --tile out for whole images), "
                                    "got 100")


def test_exported_from_the_package():
    assert mprnet_kernels.restore is restore and "restore" in mprnet_kernels.__all__


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"epoch": 1, "state_dict": tiny.state_dict(), "task": "denoise"}, path)
    return path


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


@pytest.fixture
def inputs(tmp_path):
    """A folder of odd-sized images in several modes, one loose RGB file and a corrupt one."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    files = {
        "rgb": save(folder / "rgb.png", rng.integers(0, 256, (13, 21, 3), dtype=np.uint8)),
        "gray": save(folder / "gray.png", rng.integers(0, 256, (9, 7), dtype=np.uint8), "L"),
        "rgba": save(folder / "rgba.png", rng.integers(0, 256, (16, 24, 4), dtype=np.uint8), "RGBA"),
        "g16": save(folder / "g16.png", rng.integers(0, 65536, (11, 10), dtype=np.uint16)),
        "loose": save(tmp_path / "loose.jpg", rng.integers(0, 256, (20, 17, 3), dtype=np.uint8)),
    }
    (folder / "readme.txt").write_text("not an image, skipped by folder expansion")
    return folder, files


#: The mode each kind of input is written back in: grayscale stays grayscale (16-bit stays 16-bit).
OUTPUT_MODES = {"rgb": "RGB", "gray": "L", "rgba": "RGB", "g16": "I;16", "loose": "RGB"}


def expected_png(model, path, **kw):
    """The pixel values restore's PNG for path should hold, as Pillow reads them back."""
    f = read_image_file(path)
    written = as_written(restore(model, f.image, **kw), f.mode)
    scale = 65535 if f.mode == "I;16" else 255
    a = written.mul(scale).round().numpy().astype(np.int64)
    return a.transpose(1, 2, 0) if f.mode == "RGB" else a[0]


def check_outputs(out, model, files, **kw):
    for name, path in files.items():
        with Image.open(out / f"{path.stem}.png") as img:
            assert img.format == "PNG"
            assert img.mode == OUTPUT_MODES.get(name, "RGB"), (name, img.mode)
            with Image.open(path) as original:
                assert img.size == original.size, name
            assert np.array_equal(np.asarray(img).astype(np.int64), expected_png(model, path, **kw)), name


def test_cli_files_and_folders(tiny, checkpoint, inputs, tmp_path, capsys):
    folder, files = inputs
    out = tmp_path / "out"
    assert cli.main(["restore", str(folder), str(files["loose"]), "-o", str(out), "--checkpoint", str(checkpoint),
                     "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["g16.png", "gray.png", "loose.png", "rgb.png", "rgba.png"]
    check_outputs(out, tiny, files)
    notes = [line for line in captured.out.splitlines() if line.startswith("note: ")]
    assert notes == [f"note: {files['rgba']}: RGBA: alpha dropped"]  # gray in, gray out: nothing to say
    assert "(denoise;" in captured.out  # the checkpoint's own task, no --task given
    assert "wrote 5 PNG(s)" in captured.out and captured.err == ""


def test_cli_tiles(tiny, checkpoint, inputs, tmp_path):
    folder, files = inputs
    assert cli.main(["restore", str(files["rgba"]), str(files["rgb"]), "-o", str(tmp_path / "out"),
                     "--checkpoint", str(checkpoint), "--tile", "16", "--overlap", "8"]) == 0
    check_outputs(tmp_path / "out", tiny, {k: files[k] for k in ("rgba", "rgb")}, tile=16, overlap=8)


def test_cli_corrupt_file_is_reported_and_skipped(tiny, checkpoint, inputs, tmp_path, capsys):
    folder, files = inputs
    bad = folder / "broken.png"
    bad.write_bytes(files["rgb"].read_bytes()[:40])
    out = tmp_path / "out"
    assert cli.main(["restore", str(folder), "-o", str(out), "--checkpoint", str(checkpoint)]) == 1
    captured = capsys.readouterr()
    assert f"error: {bad}: not a readable image" in captured.err
    assert "1 input(s) failed" in captured.out
    assert not (out / "broken.png").exists()
    check_outputs(out, tiny, {k: files[k] for k in ("rgb", "gray", "rgba", "g16")})


def cli_error(capsys, argv):
    """(exit status, stderr) of an in-process run."""
    status = cli.main(["restore"] + argv)
    return status, capsys.readouterr().err


def test_cli_same_stem_stops_before_any_work(checkpoint, inputs, tmp_path, capsys):
    folder, files = inputs
    other = save(tmp_path / "elsewhere" / "RGB.jpg", np.zeros((8, 8, 3), np.uint8))
    status, err = cli_error(capsys, [str(folder), str(other), "-o", str(tmp_path / "out"), "--checkpoint",
                                     str(checkpoint)])
    assert status == 2 and "same name" in err and str(other) in err and str(files["rgb"]) in err
    assert not (tmp_path / "out").exists()


def test_cli_same_file_twice_is_restored_once(checkpoint, inputs, tmp_path, capsys):
    folder, files = inputs
    assert cli.main(["restore", str(files["rgb"]), str(folder / "." / "rgb.png"), "-o", str(tmp_path / "out"),
                     "--checkpoint", str(checkpoint)]) == 0
    assert "restoring 1 image(s)" in capsys.readouterr().out


def test_cli_refuses_to_overwrite_an_input(checkpoint, inputs, capsys):
    folder, files = inputs
    before = files["rgb"].read_bytes()
    status, err = cli_error(capsys, [str(files["rgb"]), "-o", str(folder), "--checkpoint", str(checkpoint)])
    assert status == 2 and "overwrite" in err
    assert files["rgb"].read_bytes() == before


@pytest.mark.parametrize("argv, words", [
    (["--tile", "12"], ["--tile: expected"]),
    (["--tile", "16", "--overlap", "16"], ["--overlap: expected less than --tile"]),
    (["--device", "nonsense"], ["--device"]),
])
def test_cli_bad_options_exit_2(checkpoint, inputs, tmp_path, capsys, argv, words):
    status, err = cli_error(capsys, [str(inputs[1]["rgb"]), "-o", str(tmp_path / "o"), "--checkpoint",
                                     str(checkpoint)] + argv)
    assert status == 2
    for word in words:
        assert word in err, err


def test_cli_missing_or_bad_checkpoint_exit_2(inputs, tmp_path, capsys):
    rgb = str(inputs[1]["rgb"])
    status, err = cli_error(capsys, [rgb, "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "none.pth")])
    assert status == 2 and f"--checkpoint: {tmp_path / 'none.pth'}: no such file" in err
    torch.save({"epoch": 1, "state_dict": {"conv.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    status, err = cli_error(capsys, [rgb, "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "other.pth")])
    assert status == 2 and "cannot load it" in err and "MPRNet" in err
    (tmp_path / "junk.pth").write_bytes(b"definitely not a checkpoint")
    status, err = cli_error(capsys, [rgb, "-o", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "junk.pth")])
    assert status == 2 and "junk.pth: cannot load it" in err
    assert not (tmp_path / "o").exists()


def test_cli_missing_input_or_no_images_exit_2(checkpoint, tmp_path, capsys):
    status, err = cli_error(capsys, [str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--checkpoint",
                                     str(checkpoint)])
    assert status == 2 and "nope.png: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    status, err = cli_error(capsys, [str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--checkpoint",
                                     str(checkpoint)])
    assert status == 2 and "no image files" in err


def test_cli_builds_the_model_the_checkpoint_fits(tmp_path, inputs, capsys):
    # A preset's widths (derain, one CAB per block to keep it quick) and a config entry, as
    # `mprnet-kernels train` writes: both read back without being told the configuration.
    derain = MPRNet.from_preset("derain", num_cab=1).eval()
    torch.save({"epoch": 1, "state_dict": derain.state_dict()}, tmp_path / "derain.pth")
    small = seeded_model(SMALL, seed=3)
    torch.save({"epoch": 1, "state_dict": small.state_dict(), "config": dict(SMALL), "task": "denoise"},
               tmp_path / "small.pth")
    torch.save({"epoch": 1, "state_dict": small.state_dict(), "args": {"task": "deblur", "lr": 1e-3}},
               tmp_path / "args.pth")
    image = save(tmp_path / "x" / "a.png", np.random.default_rng(2).integers(0, 256, (8, 12, 3), dtype=np.uint8))
    expected = {"derain.pth": expected_png(derain, image), "small.pth": expected_png(small, image)}
    expected["args.pth"] = expected["small.pth"]
    for ckpt, task, warning, used in (("derain.pth", "derain", None, "derain"),
                                      ("derain.pth", "deblur", "derain preset's widths, but --task is deblur",
                                       "deblur"),
                                      ("derain.pth", None, None, "derain"),  # no --task: the preset's
                                      ("small.pth", "denoise", None, "denoise"),
                                      ("small.pth", "derain", "trained for denoise, not --task derain", "derain"),
                                      ("small.pth", None, None, "denoise"),  # no --task: the recorded one
                                      ("args.pth", "denoise", "trained for deblur, not --task denoise", "denoise"),
                                      ("args.pth", None, None, "deblur")):
        out = tmp_path / f"out-{ckpt}-{task}"
        argv = ["restore", str(image), "-o", str(out), "--checkpoint", str(tmp_path / ckpt)]
        assert cli.main(argv + (["--task", task] if task else [])) == 0
        captured = capsys.readouterr()
        assert (warning in captured.err) if warning else ("warning" not in captured.err), captured.err
        assert f"({used}; MPRNet" in captured.out, captured.out
        assert np.array_equal(np.asarray(Image.open(out / "a.png")), expected[ckpt])
    assert PRESETS["derain"]["n_feat"] == derain.shallow_feat1[0].out_channels


def test_cli_without_task_for_a_checkpoint_that_says_none_exit_2(tiny, inputs, tmp_path, capsys):
    torch.save({"epoch": 1, "state_dict": tiny.state_dict()}, tmp_path / "bare.pth")  # tiny widths: no task's preset
    status, err = cli_error(capsys, [str(inputs[1]["rgb"]), "-o", str(tmp_path / "o"), "--checkpoint",
                                     str(tmp_path / "bare.pth")])
    assert status == 2 and "--task: the checkpoint does not say which task" in err
    assert "deblur | derain | denoise" in err and not (tmp_path / "o").exists()
    assert cli.main(["restore", str(inputs[1]["rgb"]), "-o", str(tmp_path / "o"), "--checkpoint",
                     str(tmp_path / "bare.pth"), "--task", "deblur"]) == 0


class NotWeights:
    """Pickled into a checkpoint, refused by torch.load(weights_only=True)."""


@pytest.mark.parametrize("content", ["junk", "object", "bare list"])
def test_cli_checkpoint_that_is_not_one_is_one_line(inputs, tmp_path, capsys, content):
    path = tmp_path / "bad.pth"
    if content == "junk":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif content == "object":
        torch.save({"state_dict": {}, "extra": NotWeights()}, path)
    else:
        torch.save([torch.zeros(2)], path)
    status, err = cli_error(capsys, [str(inputs[1]["rgb"]), "-o", str(tmp_path / "o"), "--checkpoint", str(path)])
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"mprnet-kernels restore: --checkpoint: {path}: cannot load it"), err
    assert "Traceback" not in err and "WeightsUnpickler" not in err


def test_cli_modes_kept_or_converted_with_notes(tiny, checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(4)
    gray = rng.integers(0, 256, (12, 20), dtype=np.uint8)
    files = {
        "la": save(tmp_path / "in" / "la.png", np.stack([gray, gray], axis=2), "LA"),
        "one": save(tmp_path / "in" / "one.png", gray > 127),
        "pal": tmp_path / "in" / "pal.png",
    }
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).convert("P").save(files["pal"])
    out = tmp_path / "out"
    assert cli.main(["restore", str(tmp_path / "in"), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    notes = sorted(line for line in capsys.readouterr().out.splitlines() if line.startswith("note: "))
    assert notes == [f"note: {files['la']}: grayscale with alpha: alpha dropped",
                     f"note: {files['one']}: 1-bit: written as 8-bit grayscale",
                     f"note: {files['pal']}: palette image: written as RGB"]
    modes = {name: Image.open(out / f"{name}.png").mode for name in files}
    assert modes == {"la": "L", "one": "L", "pal": "RGB"}
    assert np.array_equal(np.asarray(Image.open(out / "la.png")), expected_png(tiny, files["la"]))


def test_cli_applies_exif_orientation(tiny, checkpoint, tmp_path, capsys):
    stored = np.random.default_rng(5).integers(0, 256, (16, 40, 3), dtype=np.uint8)  # 40 wide, 16 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=95)
    out = tmp_path / "out"
    assert cli.main(["restore", str(path), "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    assert f"note: {path}: EXIF orientation 6 applied: rotated 90 degrees clockwise" in capsys.readouterr().out
    with Image.open(out / "phone.png") as img:
        assert img.size == (16, 40)  # upright: 16 wide, 40 high
        result = np.asarray(img)
    with Image.open(path) as jpeg:  # the decoded JPEG, turned by hand
        upright = np.rot90(np.asarray(jpeg), k=-1)
    expected = to_rgb_uint8(restore(tiny, torch.from_numpy(upright.copy()).permute(2, 0, 1).float() / 255))
    assert np.array_equal(result, expected)


def to_rgb_uint8(image):
    return image.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class FakeBar:
    """Stands in for the tqdm bar: records the total, every update and what is written."""

    made = []

    def __init__(self, total, unit, disable):
        self.total, self.unit, self.n, self.updates = total, unit, 0, []
        FakeBar.made.append(self)

    def update(self, n=1):
        self.n += n
        self.updates.append(n)

    def write(self, message, file=None):
        print(message, file=file)

    def set_postfix_str(self, text, refresh=True):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cli_progress_counts_tiles(checkpoint, inputs, tmp_path, monkeypatch):
    from mprnet_kernels.restoration import cli as restore_cli

    FakeBar.made.clear()
    monkeypatch.setattr(restore_cli, "progress_bar", FakeBar)
    folder, files = inputs
    big = save(tmp_path / "big" / "big.png", np.zeros((40, 72, 3), np.uint8))  # 3 x 8 tiles of 16, overlap 8
    assert cli.main(["restore", str(big), str(files["rgb"]), "-o", str(tmp_path / "out"), "--checkpoint",
                     str(checkpoint), "--tile", "16", "--overlap", "8"]) == 0
    bar, = FakeBar.made
    per_file = [tile_count(40, 72, 16, 8), tile_count(13, 21, 16, 8)]
    assert bar.unit == "tile" and bar.total == sum(per_file) == bar.n
    assert per_file[0] == 4 * 8 and len([u for u in bar.updates if u]) == sum(per_file)  # one step per tile
    FakeBar.made.clear()
    assert cli.main(["restore", str(big), "-o", str(tmp_path / "out2"), "--checkpoint", str(checkpoint)]) == 0
    assert (FakeBar.made[0].unit, FakeBar.made[0].total, FakeBar.made[0].n) == ("image", 1, 1)


def test_cli_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["restore", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("INPUT", "-o OUT", "--checkpoint CKPT", "--tile T", "--overlap O", "default 32", "multiple of 8"):
        assert text in out, text


def test_subprocess_run_exit_status_and_outputs(tiny, checkpoint, inputs, tmp_path):
    folder, files = inputs
    (folder / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "mprnet_kernels.cli", "restore", str(folder), "-o", str(out),
                          "--checkpoint", str(checkpoint), "--tile", "16", "--overlap", "8", "--no-progress"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 1, run.stderr
    assert f"error: {folder / 'zz_corrupt.png'}" in run.stderr
    assert "note: " in run.stdout and "wrote 4 PNG(s)" in run.stdout
    check_outputs(out, tiny, {k: files[k] for k in ("rgb", "gray", "rgba", "g16")}, tile=16, overlap=8)


def test_tiling_bench_script_runs(tmp_path):
    # bench/tiling.py is a script outside the package: run it as one, with the smallest settings.
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, str(REPO / "bench" / "tiling.py"), "--steps", "1", "--size", "32",
                          "--images", "1", "--tiles", "16", "--overlap", "4"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "small config, random init: 1 images 32x32" in run.stdout
    assert "small config, trained 1 steps" in run.stdout and "tile 16 overlap 4: tiled vs whole" in run.stdout


# --------------------------------------------------------------------------- local attention


def test_local_attention_applies_for_the_call_only(tiny):
    image = rand_image(3, 40, 56, seed=3)
    whole = restore(tiny, image)
    local = restore(tiny, image, local_attention=8)   # windows smaller than the maps at 40x56
    assert tiny.local_attention is None and (local - whole).abs().max() > 1e-6
    twin = seeded_model(TINY).set_local_attention(8)
    assert torch.equal(restore(twin, image), local)  # the same as converting the model by hand
    assert torch.equal(restore(twin, image, local_attention=False), whole)
    assert twin.local_attention == {"train_size": (8, 8), "base_size": (12, 12)}  # its own setting back
    assert torch.equal(restore(tiny, image, local_attention={"train_size": 8, "base_size": 12}), local)
    assert local_attention_arguments(True) == {"train_size": 256} and local_attention_arguments(False) == {
        "train_size": None}


@pytest.mark.parametrize("value, error, words", [
    ("yes", TypeError, "local_attention: expected None, True, False"),
    ({"train": 8}, ValueError, "local_attention: unknown key(s) ['train']"),
    (12, ValueError, "local_attention: train_size must be a positive int or (height, width), multiples of 8"),
])
def test_bad_local_attention_is_named(tiny, value, error, words):
    with pytest.raises(error) as info:
        restore(tiny, rand_image(3, 16, 16), local_attention=value)
    assert words in str(info.value)
    assert tiny.local_attention is None


def test_cli_local_attention(tiny, checkpoint, inputs, tmp_path, capsys):
    folder, files = inputs
    picked = {k: files[k] for k in ("rgb", "rgba")}
    out = tmp_path / "out"
    assert cli.main(["restore", *map(str, picked.values()), "-o", str(out), "--checkpoint", str(checkpoint),
                     "--local-attention", "--train-size", "8"]) == 0
    assert "local channel attention (train size 8, base size 12)" in capsys.readouterr().out
    check_outputs(out, tiny, picked, local_attention=8)


@pytest.mark.parametrize("argv, words", [
    (["--train-size", "8"], "--train-size: only means something with --local-attention"),
    (["--base-size", "8"], "--base-size: only means something with --local-attention"),
    (["--local-attention", "--train-size", "12"], "--train-size must be a positive int"),
    (["--local-attention", "--base-size", "0"], "--base-size must be a positive int"),
    (["--local-attention", "--train-size", "256", "--base-size", "2"], "choose a larger --base-size"),
])
def test_cli_bad_local_attention_options_exit_2(checkpoint, inputs, tmp_path, capsys, argv, words):
    status, err = cli_error(capsys, [str(inputs[1]["rgb"]), "-o", str(tmp_path / "o"), "--checkpoint",
                                     str(checkpoint)] + argv)
    assert status == 2 and words in err, err
    assert not (tmp_path / "o").exists()
