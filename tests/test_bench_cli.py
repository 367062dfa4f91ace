"""`mprnet-kernels bench` on tiny shapes (the hidden --tiny option: 16x16 inputs, one timed
call, a one-CAB model): the table, the JSON, the filters, and that a wrong op fails the run."""

import json

import pytest
import torch

from mprnet_kernels import benchmark, cli, shapes, verify


def _bench(*args):
    return cli.main(["bench", "--tiny", "--no-progress", *args])


def test_bench_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    assert _bench("--json", str(path)) == 0
    out = capsys.readouterr().out
    assert "verify:" in out and "all outputs match the reference" in out
    for name in shapes.OPS + ("MPRNet inference",):
        assert name in out
    data = json.loads(path.read_text())
    assert data["device"] in ("cpu", "cuda") and data["threads"] >= 1
    assert data["versions"]["torch"] == torch.__version__
    assert "commit" in data and data["copy_gb_per_s"] > 0
    assert data["verify"] and all(v["ok"] for v in data["verify"])
    names = [r["name"] for r in data["rows"]]
    assert set(shapes.OPS) <= set(names) and "mprnet_inference" in names
    for row in data["rows"]:
        assert row["ok"] and row["ours_ms"] > 0 and row["eager_ms"] > 0 and row["compile_ms"] is None
        assert row["speedup"] == pytest.approx(row["eager_ms"] / row["ours_ms"])
        if row["kind"] == "op":
            assert row["gb_per_s"] > 0 and row["pct_of_copy"] > 0 and row["bytes_moved"] > 0


def test_ops_filter(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert _bench("--ops", "sam_gate", "--json", str(path)) == 0
    data = json.loads(path.read_text())
    assert {r["name"] for r in data["rows"]} == {"sam_gate"}
    assert {v["op"] for v in data["verify"]} == {"sam_gate"}
    assert "ca_tail" not in capsys.readouterr().out


def test_presets_filter(tmp_path):
    path = tmp_path / "bench.json"
    assert _bench("--ops", "ca_tail", "--presets", "derain,denoise", "--json", str(path)) == 0
    rows = json.loads(path.read_text())["rows"]
    assert [r["preset"] for r in rows] == ["derain", "denoise"]
    # The CAB widths of those presets (n_feat + scale_orsnetfeats carries the most traffic).
    assert [r["shape"][1] for r in rows] == [56, 112]


def test_unknown_op_is_an_error(capsys):
    assert _bench("--ops", "frobnicate") == 2
    assert "frobnicate" in capsys.readouterr().err


def test_fails_when_verify_fails(monkeypatch, capsys):
    wrong = verify.Case("sam_gate", verify.CASES[0].make_inputs, verify.CASES[0].ours,
                        lambda x1, z, x: x1 * torch.sigmoid(z) + x * 1.001)
    monkeypatch.setattr(verify, "CASES", [wrong])
    assert _bench("--ops", "sam_gate") == 1
    assert "FAIL sam_gate" in capsys.readouterr().out


def test_fails_when_a_timed_output_is_wrong(monkeypatch, capsys):
    good = benchmark.OP_BENCHES["sam_gate"]
    wrong = benchmark.OpBench("sam_gate", good.passes, good.make_inputs,
                              lambda preset: lambda x1, z, x: good.ours(preset)(x1, z, x) * 1.1, good.eager)
    monkeypatch.setitem(benchmark.OP_BENCHES, "sam_gate", wrong)
    assert _bench("--ops", "sam_gate") == 1
    out = capsys.readouterr().out
    assert "FAIL (ours" in out and "off float64" in out and "timed output(s) off the reference" in out


def test_plot(tmp_path, capsys):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert _bench("--ops", "sam_gate", "--plot", str(tmp_path)) == 2
        err = capsys.readouterr().err
        assert "pip install matplotlib" in err and "bench" in err
        assert not list(tmp_path.iterdir())  # fails before timing anything
    else:
        assert _bench("--ops", "sam_gate", "--plot", str(tmp_path)) == 0
        assert {p.name for p in tmp_path.glob("*.png")} >= {"ops_time.png", "ops_bandwidth.png"}


def test_help_says_compile_is_optional_on_cpu(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "--compile" in out and "CPU" in out and "--tiny" not in out


def test_shapes_come_from_the_model():
    found = shapes.model_shapes("deblur", 2, 64, 64)
    # Stage 1's SAM sees the stitched top and bottom halves as one batch of 2N, stage 2's the
    # full image.
    assert {s.shape for s in found["sam_gate"]} == {(4, 96, 32, 64), (2, 96, 64, 64)}
    assert shapes.representative_shape("ca_tail", "deblur", 2, 64, 64).shape == (2, 128, 64, 64)
    assert [s.shape for s in found["mprnet_loss"]] == [(2, 3, 64, 64)]
    # Batching patches changes the shapes, not the work: the reference (one patch at a time)
    # runs the same number of elements through its CABs and SAMs.
    from mprnet_kernels import reference

    with torch.device("meta"):
        model = reference.MPRNet.from_preset("deblur")
    elements = {"ca_tail": 0, "sam_gate": 0}
    for m in model.modules():
        op = "ca_tail" if isinstance(m, reference.CAB) else "sam_gate" if isinstance(m, reference.SAM) else None
        if op:
            m.register_forward_hook(lambda m, i, o, op=op: elements.__setitem__(op, elements[op] + i[0].numel()))
    with torch.no_grad():
        model(torch.empty(2, 3, 64, 64, device="meta"))
    for op, total in elements.items():
        assert sum(s.calls * s.numel for s in found[op]) == total
