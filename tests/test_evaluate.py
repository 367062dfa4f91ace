"""evaluate() and `mprnet-kernels evaluate`: pairing, what is scored, the Y channel, outputs, errors."""

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from mprnet_kernels import MPRNet, cli, restore
from mprnet_kernels.images import read_image_file
from mprnet_kernels.metrics import psnr, ssim
from mprnet_kernels.restoration import tile_count
from mprnet_kernels.restoration.evaluate import Evaluation, dataset_folders, evaluate, find_pairs

H, W = 24, 40


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MPRNet.from_preset("tiny").eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save({"epoch": 3, "state_dict": tiny.state_dict(), "task": "denoise"}, path)
    return path


class Identity(nn.Module):
    """A 'model' whose restoration is its input: the scores are the inputs' own."""

    def forward(self, x):
        return [x, x, x]


def save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def noisy_pairs(root, count=3, seed=0, size=(H, W), input_suffix=".png"):
    """root/input/<i><input_suffix> and root/target/<i>.png: clean targets and noisy inputs (uint8)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i in range(count):
        target = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        noisy = np.clip(target + rng.normal(0, 12, target.shape), 0, 255).astype(np.uint8)
        save(root / "target" / f"im{i}.png", target)
        save(root / "input" / f"im{i}{input_suffix}", noisy)
        arrays[f"im{i}"] = (noisy, target)
    return root / "input", root / "target", arrays


def np_psnr(a, b, peak=255.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(peak ** 2 / mse)


def as_batch(array, scale=255.0):
    a = array.astype(np.float64) / scale
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


def matlab_y(rgb_uint8):
    """MATLAB rgb2ycbcr's Y on a uint8 image: rounded, still uint8."""
    r, g, b = (rgb_uint8[..., c].astype(np.float64) for c in range(3))
    return np.round(16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255)


# --------------------------------------------------------------------------- what is scored


def test_identity_scores_are_the_inputs_own(tmp_path):
    inp, tgt, arrays = noisy_pairs(tmp_path)
    result = evaluate(Identity(), inp, tgt)
    assert isinstance(result, Evaluation) and [r["name"] for r in result.rows] == ["im0", "im1", "im2"]
    for row in result.rows:
        noisy, target = arrays[row["name"]]
        assert row["psnr"] == pytest.approx(np_psnr(noisy, target), abs=1e-9)
        assert row["ssim"] == pytest.approx(float(ssim(as_batch(noisy), as_batch(target))), abs=1e-12)
        assert (row["height"], row["width"], row["note"]) == (H, W, None)
        assert row["input"] == str(inp / f"{row['name']}.png") and row["target"] == str(tgt / f"{row['name']}.png")
    assert result.mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.rows]), abs=1e-12)
    assert result.mean["ssim"] == pytest.approx(np.mean([r["ssim"] for r in result.rows]), abs=1e-12)
    perfect = evaluate(Identity(), tgt, tgt)
    assert perfect.mean == {"psnr": pytest.approx(100.0), "ssim": pytest.approx(1.0)}  # capped, not infinite


def test_scores_are_those_of_the_saved_pngs(tiny, tmp_path):
    inp, tgt, arrays = noisy_pairs(tmp_path, input_suffix=".jpg")  # a.jpg pairs with a.png
    result = evaluate(tiny, inp, tgt, save_dir=tmp_path / "saved", y_channel=True)
    assert result.mean["psnr"] > 0 and set(result.mean) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    for row in result.rows:
        with Image.open(tmp_path / "saved" / f"{row['name']}.png") as img:
            saved = np.asarray(img)
        target = arrays[row["name"]][1]
        assert row["psnr"] == pytest.approx(np_psnr(saved, target), abs=1e-9)
        assert row["ssim"] == pytest.approx(float(ssim(as_batch(saved), as_batch(target))), abs=1e-12)
        # The Y channel as upstream's Deraining/evaluate_PSNR_SSIM.m computes it on uint8 files.
        y_saved, y_target = matlab_y(saved), matlab_y(target)
        assert row["psnr_y"] == pytest.approx(np_psnr(y_saved, y_target), abs=1e-9)
        assert row["ssim_y"] == pytest.approx(float(ssim(as_batch(y_saved), as_batch(y_target))), abs=1e-12)
        assert row["psnr_y"] != pytest.approx(row["psnr"], abs=1e-3)


def test_float_scores_skip_the_rounding(tiny, tmp_path):
    inp, tgt, arrays = noisy_pairs(tmp_path, count=2)
    quantized = evaluate(tiny, inp, tgt)
    floats = evaluate(tiny, inp, tgt, quantize=False)
    for row, q in zip(floats.rows, quantized.rows):
        noisy, target = arrays[row["name"]]
        out = restore(tiny, as_batch(noisy).float())
        assert row["psnr"] == pytest.approx(float(psnr(out.double(), as_batch(target))), abs=1e-9)
        assert row["psnr"] != q["psnr"] and row["psnr"] == pytest.approx(q["psnr"], abs=0.05)
    assert floats.settings["quantized"] is False and quantized.settings["quantized"] is True


def test_grayscale_pairs_are_scored_in_gray(tiny, tmp_path):
    rng = np.random.default_rng(7)
    target = rng.integers(0, 256, (H, W), dtype=np.uint8)
    noisy = np.clip(target + rng.normal(0, 12, target.shape), 0, 255).astype(np.uint8)
    save(tmp_path / "in" / "g.png", noisy)
    save(tmp_path / "gt" / "g.png", target)
    row, = evaluate(tiny, tmp_path / "in", tmp_path / "gt", save_dir=tmp_path / "out").rows
    with Image.open(tmp_path / "out" / "g.png") as img:
        assert img.mode == "L"  # gray in, gray out
        saved = np.asarray(img)
    assert row["psnr"] == pytest.approx(np_psnr(saved, target), abs=1e-9)
    assert row["ssim"] == pytest.approx(float(ssim(as_batch(saved), as_batch(target))), abs=1e-12)


def test_tiles_progress_and_callbacks(tiny, tmp_path):
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    seen, rows = [], []
    tiled = evaluate(tiny, inp, tgt, tile=16, overlap=8, progress=lambda d, t: seen.append((d, t)),
                     on_image=rows.append)
    total = 2 * tile_count(H, W, 16, 8)
    assert seen == [(i, total) for i in range(1, total + 1)]
    assert rows == tiled.rows
    whole = evaluate(tiny, inp, tgt)
    assert [r["psnr"] for r in tiled.rows] != [r["psnr"] for r in whole.rows]  # tiles are not the whole image
    assert tiled.settings["tile"] == 16 and tiled.settings["overlap"] == 8


def test_a_checkpoint_path_loads_the_model_it_fits(tiny, checkpoint, tmp_path):
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    by_path = evaluate(checkpoint, inp, tgt, device="cpu")
    assert by_path.rows == evaluate(tiny, inp, tgt).rows
    assert by_path.settings["checkpoint"] == str(checkpoint) and by_path.settings["task"] == "denoise"
    assert by_path.settings["config"]["n_feat"] == 8


def test_notes_say_what_reading_changed(tmp_path):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    save(tmp_path / "in" / "a.png", rgba)
    save(tmp_path / "gt" / "a.png", rgba[..., :3])
    row, = evaluate(Identity(), tmp_path / "in", tmp_path / "gt").rows
    assert row["note"] == "input: RGBA: alpha dropped"
    assert row["psnr"] == pytest.approx(100.0)


# --------------------------------------------------------------------------- pairing and errors


def test_dataset_folders_accept_upstreams_layouts(tmp_path):
    for sub in ("flat", "gopro/test", "demo/val"):
        (tmp_path / sub / "input").mkdir(parents=True)
        (tmp_path / sub / "target").mkdir()
    assert dataset_folders(tmp_path / "flat") == (tmp_path / "flat" / "input", tmp_path / "flat" / "target")
    assert dataset_folders(tmp_path / "gopro") == (tmp_path / "gopro/test/input", tmp_path / "gopro/test/target")
    assert dataset_folders(tmp_path / "demo")[0] == tmp_path / "demo/val/input"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^data: .*empty holds no input/ and target/ folders \(looked in "):
        dataset_folders(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"^--data: .*nope: no such folder"):
        dataset_folders(tmp_path / "nope", "--data")


def test_pairs_follow_stems_in_input_order(tmp_path):
    for name in ("b.jpg", "a.png", "c.bmp"):
        save(tmp_path / "in" / name, np.zeros((12, 12, 3), np.uint8))
    for name in ("c.png", "a.png", "b.png"):
        save(tmp_path / "gt" / name, np.zeros((12, 12, 3), np.uint8))
    pairs = find_pairs(tmp_path / "in", tmp_path / "gt")
    assert [(s, i.name, t.name) for s, i, t in pairs] == [("a", "a.png", "a.png"), ("b", "b.jpg", "b.png"),
                                                          ("c", "c.bmp", "c.png")]


def make_case(tmp_path, case):
    """(input folder, target folder, evaluate kwargs) set up to fail one way."""
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    kwargs = {}
    if case == "no target":
        (tgt / "im1.png").unlink()
    elif case == "no input":
        save(tgt / "extra.png", np.zeros((H, W, 3), np.uint8))
    elif case == "same stem":
        save(inp / "im0.jpg", np.zeros((H, W, 3), np.uint8))
    elif case == "sizes":
        save(tgt / "im1.png", np.zeros((H, W + 1, 3), np.uint8))
    elif case == "small":
        for folder in (inp, tgt):
            save(folder / "im1.png", np.zeros((10, 30, 3), np.uint8))
    elif case == "empty":
        for f in inp.iterdir():
            f.unlink()
    elif case == "missing":
        inp = tmp_path / "nowhere"
    elif case == "overwrite":
        kwargs["save_dir"] = tgt
    elif case == "tile":
        kwargs["tile"] = 20
    return inp, tgt, kwargs


ERRORS = {
    "no target": r"^target_dir: inputs and targets pair by file name without extension; 1 input\(s\) without a "
                 r"target in .*: im1$",
    "no input": r"^target_dir: .*1 target\(s\) without an input in .*: extra$",
    "same stem": r"^input_dir: .*share one: im0.jpg and im0.png|^input_dir: .*share one: im0.png and im0.jpg",
    "sizes": r"^inputs and targets must have the same size .*im1.png is 24x40 but .*im1.png is 24x41$",
    "small": r"^SSIM needs images of at least 11x11 pixels: .*im1.png \(10x30\)$",
    "empty": r"^input_dir: .*input: no image files in this folder$",
    "missing": r"^input_dir: .*nowhere: no such folder$",
    "overwrite": r"^save_dir: .* would overwrite .*target/im0.png",
    "tile": r"^tile: expected a positive multiple of 8",
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_problems_stop_before_any_image_is_restored(tmp_path, case):
    inp, tgt, kwargs = make_case(tmp_path, case)

    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("restored an image before the pairs were checked")

    with pytest.raises(ValueError, match=ERRORS[case]):
        evaluate(Refuses(), inp, tgt, **kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"y_channel": "yes"}, TypeError, "^y_channel: expected True or False"),
    ({"progress": 3}, TypeError, "^progress: expected a callable"),
    ({"device": "cpu"}, ValueError, "^device: only used to load a checkpoint"),
])
def test_bad_arguments_name_themselves(tmp_path, kwargs, error, message):
    inp, tgt, _ = noisy_pairs(tmp_path, count=1)
    with pytest.raises(error, match=message):
        evaluate(Identity(), inp, tgt, **kwargs)
    with pytest.raises(TypeError, match="^model_or_checkpoint: expected an MPRNet module"):
        evaluate(5, inp, tgt)


# --------------------------------------------------------------------------- the command


def run(capsys, argv):
    status = cli.main(["evaluate"] + argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_data_root_csv_json_and_save(tiny, checkpoint, tmp_path, capsys):
    inp, tgt, _ = noisy_pairs(tmp_path / "Rain100L", count=2)
    out = tmp_path / "out"
    status, stdout, err = run(capsys, ["--checkpoint", str(checkpoint), "--data", str(tmp_path / "Rain100L"),
                                       "--y-channel", "--csv", str(out / "r.csv"), "--json", str(out / "r.json"),
                                       "--save", str(out / "png"), "--no-progress"])
    assert status == 0 and err == "", err
    expected = evaluate(tiny, inp, tgt, y_channel=True)
    data = json.loads((out / "r.json").read_text())
    assert data["count"] == 2 and data["task"] == "denoise" and data["checkpoint"] == str(checkpoint)
    assert data["mean"] == pytest.approx(expected.mean) and data["images"] == expected.rows
    assert set(data["metrics"]) == {"psnr", "ssim", "psnr_y", "ssim_y"} and data["quantized"] is True
    with open(out / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["im0", "im1"]
    assert list(rows[0]) == ["name", "input", "target", "height", "width", "psnr", "ssim", "psnr_y", "ssim_y", "note"]
    assert [float(r["ssim_y"]) for r in rows] == [r["ssim_y"] for r in expected.rows]
    assert sorted(p.name for p in (out / "png").iterdir()) == ["im0.png", "im1.png"]
    m = expected.mean
    assert (f"mean over 2 image(s): PSNR {m['psnr']:.4f} dB, SSIM {m['ssim']:.6f}; "
            f"Y channel: PSNR {m['psnr_y']:.4f} dB, SSIM {m['ssim_y']:.6f}") in stdout
    assert "(denoise; MPRNet" in stdout and stdout.count(" PSNR ") >= 3  # one line per image, then the mean


def test_cli_input_target_and_tiles(tiny, checkpoint, tmp_path, capsys):
    inp, tgt, _ = noisy_pairs(tmp_path, count=1)
    status, stdout, _ = run(capsys, ["--checkpoint", str(checkpoint), "--input", str(inp), "--target", str(tgt),
                                     "--tile", "16", "--overlap", "8", "--json", str(tmp_path / "r.json")])
    assert status == 0 and "tiles 16 overlapping by 8" in stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["images"] == evaluate(tiny, inp, tgt, tile=16, overlap=8).rows


@pytest.mark.parametrize("extra, message", [
    (["--tile", "100"], "--tile: expected a positive multiple of 8 (leave --tile out for whole images), got 100"),
    (["--data", "X"], "--data: give either --data ROOT or --input DIR and --target DIR, not both"),
    (["--no-target"], "--target: required (give --input DIR and --target DIR, or --data ROOT)"),
    (["--missing-pair"], "--target: inputs and targets pair by file name"),
    (["--empty-input"], "--input: "),
    (["--bare-checkpoint"], "--task: the checkpoint does not say which task it restores"),
    (["--junk-checkpoint"], "cannot load it"),
])
def test_cli_problems_exit_2_in_one_line(checkpoint, tiny, tmp_path, capsys, extra, message):
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    ckpt = checkpoint
    if extra == ["--no-target"]:
        argv = ["--input", str(inp)]
    else:
        argv = ["--input", str(inp), "--target", str(tgt)]
        if extra == ["--missing-pair"]:
            (tgt / "im0.png").unlink()
        elif extra == ["--empty-input"]:
            for f in inp.iterdir():
                f.unlink()
        elif extra == ["--bare-checkpoint"]:
            ckpt = tmp_path / "bare.pth"
            torch.save({"state_dict": tiny.state_dict()}, ckpt)
        elif extra == ["--junk-checkpoint"]:
            ckpt = tmp_path / "junk.pth"
            ckpt.write_bytes(b"not a checkpoint at all")
        else:
            argv += extra
    status, stdout, err = run(capsys, ["--checkpoint", str(ckpt)] + argv)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("mprnet-kernels evaluate: ") and message in err, err
    assert "evaluating" not in stdout


def test_cli_unreadable_image_on_the_way_exits_1(checkpoint, tmp_path, capsys):
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    data = (inp / "im1.png").read_bytes()
    (inp / "im1.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    status, _, err = run(capsys, ["--checkpoint", str(checkpoint), "--input", str(inp), "--target", str(tgt)])
    assert status == 1 and "im1.png" in err


def test_cli_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--checkpoint CKPT", "--data ROOT", "--input DIR", "--target DIR", "--task", "--tile T",
                 "--overlap O", "--y-channel", "--no-quantize", "--csv PATH", "--json PATH", "--save DIR",
                 "--device", "--no-progress", "--local-attention", "--train-size S", "--base-size B",
                 "PSNR and SSIM per image"):
        assert text in out, text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "evaluate" in capsys.readouterr().out


def test_read_image_file_is_what_evaluate_reads(tmp_path):
    # The rows' sizes come from the files as read (EXIF orientation applied), not as stored.
    stored = np.zeros((12, 30, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    for folder in ("in", "gt"):
        (tmp_path / folder).mkdir()
        Image.fromarray(stored).save(tmp_path / folder / "p.png", exif=exif.tobytes())
    row, = evaluate(Identity(), tmp_path / "in", tmp_path / "gt").rows
    read = read_image_file(tmp_path / "in" / "p.png").image
    assert (row["height"], row["width"]) == tuple(read.shape[1:]) == (30, 12)
    assert "EXIF orientation 6 applied" in row["note"]


def test_cli_progress_bar_counts_tiles(checkpoint, tmp_path, capsys, monkeypatch):
    from mprnet_kernels.restoration import evaluate_cli

    made = []

    class Bar:
        def __init__(self, total, unit, disable):
            self.total, self.unit, self.steps = total, unit, []
            made.append(self)

        def update(self, n=1):
            self.steps.append(n)

        def write(self, message, file=None):
            print(message, file=file)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(evaluate_cli, "progress_bar", Bar)
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--input", str(inp), "--target", str(tgt),
                     "--tile", "16", "--overlap", "8"]) == 0
    bar, = made
    assert bar.unit == "tile" and bar.total == 2 * tile_count(H, W, 16, 8) == sum(bar.steps) == len(bar.steps)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if " dB  SSIM " in line] == ["im0", "im1"]  # one line per image


def test_the_package_root_exports_evaluate():
    import mprnet_kernels
    from mprnet_kernels.restoration import evaluate as module

    assert mprnet_kernels.evaluate is module.evaluate and mprnet_kernels.Evaluation is module.Evaluation
    assert {"evaluate", "Evaluation", "load_model", "checkpoint_config"} <= set(mprnet_kernels.__all__)
    from mprnet_kernels import checkpoint, export

    assert (mprnet_kernels.export_onnx, mprnet_kernels.export_program, mprnet_kernels.save_weights) == (
        export.export_onnx, export.export_program, checkpoint.save_weights)


def test_local_attention_scores_and_settings(tiny, checkpoint, tmp_path, capsys):
    inp, tgt, _ = noisy_pairs(tmp_path, count=2)
    whole, local = evaluate(tiny, inp, tgt), evaluate(tiny, inp, tgt, local_attention=8)
    assert whole.settings["local_attention"] is None and tiny.local_attention is None
    assert local.settings["local_attention"] == {"train_size": [8, 8], "base_size": [12, 12]}
    assert [r["psnr"] for r in local.rows] != [r["psnr"] for r in whole.rows]  # 24x40 maps, windows under them
    status, stdout, err = run(capsys, ["--checkpoint", str(checkpoint), "--input", str(inp), "--target", str(tgt),
                                       "--local-attention", "--train-size", "8", "--json", str(tmp_path / "r.json"),
                                       "--no-progress"])
    assert status == 0 and err == "", err
    assert "local channel attention (train size 8, base size 12)" in stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["local_attention"] == local.settings["local_attention"] and data["images"] == local.rows
