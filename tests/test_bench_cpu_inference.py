"""bench/cpu_inference.py: CPU inference of the fast model (prepacked convolutions and the buffer cache on and off)
against the reference, at the smallest settings; torch.compile(freezing) is left out here (its
compile is minutes; the committed run has it: bench/results/2026-12-07-cpu-epyc-2threads/)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import cpu_inference  # noqa: E402


def test_rows_are_checked_and_written(tmp_path, capsys):
    out = tmp_path / "cpu.json"
    assert cpu_inference.main(["--preset", "tiny", "--sizes", "16,64x48", "--dtypes", "float32,bfloat16",
                               "--rounds", "1", "--no-compile", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["environment"]["threads"] >= 1 and "commit" in doc["environment"]
    rows = doc["rows"]
    assert [(r["shape"], r["dtype"]) for r in rows] == [
        ([1, 3, 16, 16], "float32"), ([1, 3, 16, 16], "bfloat16"), ([1, 3, 64, 48], "float32"),
        ([1, 3, 64, 48], "bfloat16")]
    for r in rows:
        assert r["ok"] and set(r["ms"]) == {"eager", "ours", "ours_unpacked", "ours_uncached"}
        assert r["compile_s"] is None
        # 16x16 feature maps of the tiny preset are under the cache's 64 KiB threshold; 64x48 not
        assert (r["cache_mb"] > 0) == (r["shape"][2] == 64)
        assert max(r["errors"].values()) < cpu_inference.TOLERANCE[r["dtype"]]
    assert "| 1x3x64x48 | bfloat16 |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["--sizes", "abc"], "--sizes: expected HxW"),
    (["--sizes", "20"], "multiples of 8"),
    (["--dtypes", "float32,fp8"], "--dtypes: expected float32 or bfloat16, got 'fp8'"),
    (["--rounds", "0"], "--rounds must be positive"),
    (["--preset", "huge"], "invalid choice"),
])
def test_bad_arguments_are_named(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        cpu_inference.main(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err
