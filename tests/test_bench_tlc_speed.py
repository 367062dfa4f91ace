"""bench/tlc_speed.py: what local channel attention costs, op by op and end to end, at the
smallest settings (the committed figures are in bench/results/tlc_speed-cpu.md)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import tlc_speed  # noqa: E402


def test_report_has_every_tail_and_both_models(tmp_path, capsys):
    out = tmp_path / "tlc.md"
    assert tlc_speed.main(["--preset", "tiny", "--size", "32x48", "--train-size", "16", "--warmup", "0",
                           "--reps", "1", "--out", str(out)]) == 0
    text = out.read_text()
    assert "python bench/tlc_speed.py --preset tiny --size 32x48 --train-size 16 --warmup 0 --reps 1" in text
    tails = tlc_speed.local_attention_tails("tiny", 32, 48, 16)
    for shape, window, calls in tails:
        assert f"| {'x'.join(map(str, shape))} | {window[0]}x{window[1]} | {calls} |" in text
    assert f"**all {sum(c for _, _, c in tails)} tails of one inference**" in text
    for attention in ("global", "local"):
        assert any(line.startswith(f"| {attention} |") for line in text.splitlines())
    assert "Local attention costs the fast model" in text and "wrote" in capsys.readouterr().out


def test_parts_can_be_run_alone(tmp_path):
    out = tmp_path / "ops.md"
    assert tlc_speed.main(["--preset", "tiny", "--size", "16x24", "--train-size", "8", "--warmup", "0", "--reps", "1",
                           "--ops-only", "--out", str(out)]) == 0
    assert "## The local CA tails" in out.read_text() and "## The model" not in out.read_text()
    out = tmp_path / "model.md"
    assert tlc_speed.main(["--preset", "tiny", "--size", "32x48", "--model-size", "16x24", "--train-size", "16",
                           "--warmup", "0", "--reps", "1", "--model-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## The local CA tails" not in text
    assert "Inference of 1x3x16x24 with `set_local_attention(8)` (the windows cover the same fractions" in text
    out = tmp_path / "fast.md"
    assert tlc_speed.main(["--preset", "tiny", "--size", "16x24", "--train-size", "8", "--warmup", "0", "--reps", "1",
                           "--model-only", "--fast-only", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## The fast model" in text and "Local attention costs the fast model" in text and "reference" not in text


@pytest.mark.parametrize("argv, words", [
    (["--size", "720"], "--size must be HxW"),
    (["--size", "100x128"], "multiples of 8"),
    (["--reps", "0"], "--reps must be positive"),
    (["--ops-only", "--model-only"], "not allowed with argument"),
    (["--size", "64x64", "--model-size", "32x40"], "--model-size 32x40 must be 64x64 scaled"),
    (["--size", "64x64", "--model-size", "8x8", "--train-size", "16"], "whole multiple of 8"),
    (["--train-size", "100"], "--train-size must be a multiple of 8, got 100"),
    (["--ops-only", "--fast-only"], "--fast-only chooses the model rows"),
])
def test_bad_arguments_are_named(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        tlc_speed.main(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err
