"""`mprnet-kernels bench` on tiny shapes (the hidden --tiny option: 16x16 inputs, one timed
call, a one-CAB model): the table, the JSON, the plots, the filters, the training-step and
peak-memory columns, and that a wrong op or model fails the run."""

import dataclasses
import json
import sys

import pytest
import torch

from mprnet_kernels import benchmark, cli, reference, registry, shapes
from mprnet_kernels.benchmark import model_runs, op_runs

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _bench(*args):
    return cli.main(["bench", "--tiny", "--no-progress", *args])


def assert_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_bench_writes_table_json_and_plots(tmp_path, capsys):
    path = tmp_path / "out" / "bench.json"
    plots = tmp_path / "plots"
    assert _bench("--json", str(path), "--plot", str(plots)) == 0
    out = capsys.readouterr().out
    assert "verify:" in out and "all outputs match the reference" in out
    for name in registry.op_names() + ("MPRNet inference", "MPRNet training step", "peak MiB ours/eager"):
        assert name in out
    data = json.loads(path.read_text())
    assert data["device"] in ("cpu", "cuda") and data["threads"] >= 1
    assert data["versions"]["torch"] == torch.__version__
    assert "commit" in data and "dirty" in data and data["copy_gb_per_s"] > 0
    assert data["memory_measure"] == benchmark.MEMORY_MEASURE[data["device"]]
    sizes = data["config"]["sizes"]
    assert (sizes["train_batch"], sizes["train_image"], sizes["train_reps"]) == (1, 16, 1)
    assert data["verify"] and all(v["ok"] for v in data["verify"])
    names = [r["name"] for r in data["rows"]]
    assert set(registry.op_names()) <= set(names) and {"mprnet_inference", "mprnet_training_step"} <= set(names)
    for row in data["rows"]:
        assert row["ok"] and row["ours_ms"] > 0 and row["eager_ms"] > 0 and row["compile_ms"] is None
        assert row["speedup"] == pytest.approx(row["eager_ms"] / row["ours_ms"])
        assert row["ours_compile_ms"] is None
        if row["kind"] == "op":
            assert row["mode"] == "forward+backward" and row["peak_mib"] == {}
            assert row["gb_per_s"] > 0 and row["pct_of_copy"] > 0 and row["bytes_moved"] > 0
        else:
            assert set(row["peak_mib"]) == {"ours", "eager"} and set(row["errors"]) == {"ours", "eager"}
    # A training step allocates every gradient inside the step: its peak is at least the weights.
    with torch.device("meta"):
        model = reference.MPRNet.from_preset("deblur", **sizes["model_overrides"])
    weights_mib = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    train = next(r for r in data["rows"] if r["name"] == "mprnet_training_step")
    infer = next(r for r in data["rows"] if r["name"] == "mprnet_inference")
    assert train["mode"] == "training step" and train["shape"] == [1, 3, 16, 16]
    for impl in ("ours", "eager"):
        assert train["peak_mib"][impl] >= weights_mib
        assert 0 < infer["peak_mib"][impl] < train["peak_mib"][impl]
    # The plots: every one written, each a valid PNG.
    written = {p.name for p in plots.iterdir()}
    assert written == {"ops_speedup.png", "ops_bandwidth.png", "model_inference.png", "model_training.png"}
    for name in written:
        assert_png(plots / name)
        assert f"wrote {plots / name}" in out


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
    wrong = dataclasses.replace(registry.spec("sam_gate"), reference=lambda x1, z, x: x1 * torch.sigmoid(z) + x * 1.001)
    monkeypatch.setitem(registry.OPS, "sam_gate", wrong)
    assert _bench("--ops", "sam_gate") == 1
    assert "FAIL sam_gate" in capsys.readouterr().out


def test_fails_when_a_timed_output_is_wrong(monkeypatch, capsys):
    good = registry.spec("sam_gate")
    wrong = dataclasses.replace(good, fn=lambda x1, z, x: good.fn(x1, z, x) * 1.1)
    monkeypatch.setitem(registry.OPS, "sam_gate", wrong)
    assert _bench("--ops", "sam_gate") == 1
    out = capsys.readouterr().out
    assert "FAIL (ours" in out and "off float64" in out and "timed output(s) off the reference" in out


def test_plot_without_matplotlib_fails_before_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert _bench("--ops", "sam_gate", "--plot", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "pip install matplotlib" in err and "bench" in err
    assert not list(tmp_path.iterdir())


def _row(**kw):
    base = dict(kind="op", name="sam_gate", preset="deblur", shape=[1, 96, 64, 64], device="cpu", dtype="float32",
                backend="cpu", ours_ms=1.0, eager_ms=3.0, compile_ms=2.0, gb_per_s=10.0, pct_of_copy=50.0)
    base.update(kw)
    return benchmark.Row(**base)


def test_write_plots(tmp_path):
    rows = [_row(), _row(mode="forward", ours_ms=0.5, gb_per_s=8.0),
            _row(name="ca_tail", shape=[1, 128, 64, 64], dtype="bfloat16", compile_ms=None),
            _row(name="edge_loss", shape=[1, 3, 64, 64], gb_per_s=None, pct_of_copy=None),
            _row(kind="model", name="mprnet_inference", backend="-", mode="inference", gb_per_s=None,
                 pct_of_copy=None, ours_compile_ms=0.8, peak_mib={"ours": 10.0, "eager": 20.0, "ours_compile": 9.0}),
            _row(kind="model", name="mprnet_training_step", backend="-", mode="training step", gb_per_s=None,
                 pct_of_copy=None, peak_mib={"ours": 100.0, "eager": 150.0})]
    written = benchmark.write_plots(rows, tmp_path / "new", copy_gb_per_s=20.0)
    assert {p.name for p in written} == {"ops_speedup.png", "ops_bandwidth.png", "model_inference.png",
                                         "model_training.png"}
    for p in written:
        assert p.parent == tmp_path / "new"
        assert_png(p)
    # Only the plots that have rows.
    only_ops = benchmark.write_plots(rows[:2], tmp_path / "ops", copy_gb_per_s=20.0)
    assert {p.name for p in only_ops} == {"ops_speedup.png", "ops_bandwidth.png"}
    assert benchmark.write_plots([], tmp_path / "none") == []


def test_plots_compare_heights_and_keep_the_copy_line_visible():
    import matplotlib.pyplot as plt

    from mprnet_kernels.benchmark import plots

    rows = [_row(), _row(shape=[1, 96, 128, 128], ours_ms=46.0, eager_ms=82.0, compile_ms=None, gb_per_s=19.0),
            _row(kind="model", name="mprnet_inference", backend="-", mode="inference", ours_ms=46.0, eager_ms=82.0, compile_ms=None,
                 gb_per_s=None, pct_of_copy=None)]
    figs = plots.figures(rows, copy_gb_per_s=20.0)
    try:
        for fig in figs.values():
            assert all(ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0 for ax in fig.axes)
        # Ops as speedups: eager/ours and compile/ours, a missing compile time leaves no bar.
        (ax,) = figs["ops_speedup.png"].axes
        heights = sorted(round(b.get_height(), 6) for b in ax.patches if b.get_height() > 0)
        assert heights == sorted([3.0, 2.0, round(82.0 / 46.0, 6)])
        # The copy line is inside the axes, labelled on itself, and no legend can cover it.
        (ax,) = figs["ops_bandwidth.png"].axes
        assert ax.get_legend() is None
        (line,) = ax.get_lines()
        assert line.get_ydata()[0] == 20.0 < ax.get_ylim()[1]
        assert any("20.0 GB/s" in t.get_text() for t in ax.texts)
        labels = [t.get_text() for t in ax.texts if t.get_text().endswith("%")]
        assert labels == ["50%", "95%"]
        # The model in linear time: bar heights are the times; the legend sits outside the axes.
        (ax,) = figs["model_inference.png"].axes
        assert sorted(b.get_height() for b in ax.patches) == [46.0, 82.0]
        assert ax.get_legend().get_bbox_to_anchor().x0 >= ax.get_window_extent().x1 - 1
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_table_shows_modes_and_memory():
    rows = [_row(), _row(mode="forward"),
            _row(kind="model", name="mprnet_training_step", backend="-", mode="training step", gb_per_s=None,
                 pct_of_copy=None, peak_mib={"ours": 100.0, "eager": 150.5})]
    table = benchmark.format_table(rows)
    assert "sam_gate (fwd)" in table and "MPRNet training step" in table
    assert "peak MiB ours/eager" in table and "100/150" in table
    assert "ours+compile" not in table  # no row has it
    assert "ours+compile ms" in benchmark.format_table(rows + [_row(ours_compile_ms=1.0)])


def test_peak_memory_counts_what_a_call_allocates():
    def allocations():
        a = torch.empty(2**20, dtype=torch.uint8)
        b = torch.empty(2 * 2**20, dtype=torch.uint8)
        del a
        c = torch.empty(2**20, dtype=torch.uint8)  # reuses a's MiB: the peak stays 3 MiB
        return b, c

    assert benchmark.peak_memory(allocations, "cpu") == 3 * 2**20
    kept = []
    # `before` runs outside the measurement.
    assert benchmark.peak_memory(lambda: kept.append(torch.empty(2**20, dtype=torch.uint8)), "cpu",
                                 before=lambda: kept.append(torch.empty(5 * 2**20, dtype=torch.uint8))) == 2**20


def test_fails_when_a_training_step_is_wrong(monkeypatch, capsys):
    real = model_runs.model_impls

    def wrong_ours(*args, **kwargs):
        impls = real(*args, **kwargs)
        model, weights, loss = impls["ours"]
        impls["ours"] = (model, weights, lambda outs, y: 1.01 * loss(outs, y))  # gradients 1% off
        return impls

    monkeypatch.setattr(model_runs, "model_impls", wrong_ours)
    assert _bench("--ops", "model") == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("MPRNet")]
    assert "ok" in lines[0] and "FAIL" not in lines[0]          # inference is untouched
    assert "FAIL (ours" in lines[1] and "off the reference's first step" in lines[1]


def test_plans():
    quick = [label for label, _ in benchmark.plan(benchmark.BenchConfig(progress=False))]
    assert [label for label in quick if "training" in label] == ["MPRNet training step deblur 1x3x64x64 float32"]
    assert not any(" fwd " in label for label in quick)
    full = [label for label, _ in benchmark.plan(benchmark.BenchConfig(full=True, progress=False))]
    for preset in ("deblur", "derain", "denoise"):
        for dtype in ("float32", "bfloat16"):
            assert f"MPRNet training step {preset} 1x3x128x128 {dtype}" in full
            assert f"MPRNet {preset} 256x256 {dtype}" in full
    assert "sam_gate fwd deblur 8x96x128x256 float32" in full and "sam_gate deblur 8x96x128x256 bfloat16" in full
    # The losses see the same stage outputs under every preset: one call each (mprnet_loss: one
    # per loss recipe, deblur and derain sharing theirs).
    assert [c.preset for c in benchmark.op_cases("edge_loss", ["deblur", "derain", "denoise"], 4, 256, 3)] == ["deblur"]
    assert [c.preset for c in benchmark.op_cases("mprnet_loss", ["deblur", "derain", "denoise"], 4, 256, 3)] == [
        "deblur", "denoise"]


def test_forward_rows(monkeypatch):
    cfg = benchmark.BenchConfig(progress=False)
    shape = (1, 3, 16, 16)
    for op in ("charbonnier_loss", "mprnet_loss", "sam_gate"):
        s = (1, 8, 16, 16) if op == "sam_gate" else shape
        [row] = op_runs.op_rows(registry.spec(op), "deblur", s, torch.float32, cfg, benchmark.TINY, 1e10,
                                mode="forward")
        assert row.ok and row.mode == "forward" and row.ours_ms > 0
        elements = torch.Size(s).numel()
        assert row.bytes_moved == registry.spec(op).forward_passes * elements * 4
        assert 0 < registry.spec(op).forward_passes < registry.spec(op).passes
    good = registry.spec("sam_gate")
    wrong = dataclasses.replace(good, fn=lambda x1, z, x: good.fn(x1, z, x) + 0.1)
    [row] = op_runs.op_rows(wrong, "deblur", (1, 8, 16, 16), torch.float32, cfg, benchmark.TINY, 1e10,
                            mode="forward")
    assert not row.ok and row.ours_ms is None and "ours" in row.note


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


def test_local_attention_rows(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert _bench("--ops", "model", "--local-attention", "--json", str(path), "--plot", str(tmp_path / "p")) == 0
    out = capsys.readouterr().out
    assert "MPRNet inference, local CA" in out and "local costs" in out
    data = json.loads(path.read_text())
    assert data["config"]["local_attention"] is True
    (local,) = [r for r in data["rows"] if r["name"] == "mprnet_inference_local"]
    assert local["ok"] and local["train_size"] == 8 and local["ours_global_ms"] > 0
    assert set(local["errors"]) == {"ours", "eager"} and local["ours_ms"] > 0 and local["eager_ms"] > 0
    assert_png(tmp_path / "p" / "model_inference_local.png")
    from mprnet_kernels.benchmark import BenchConfig, model_runs
    from mprnet_kernels.benchmark.config import TINY

    assert model_runs.local_train_size(720) == 360 and model_runs.local_train_size(20) == 8
    # the cached models go back to global attention after the row
    model_runs.local_row("deblur", 16, torch.float32, BenchConfig(sizes=TINY), TINY)
    try:
        assert all(m.local_attention is None for m in model_runs.model_pair("deblur", "cpu", TINY.model_overrides))
    finally:
        model_runs.clear_models()


def test_median_times_in_turns_alternates_after_the_warm_up():
    from mprnet_kernels.benchmark.timing import median_times_in_turns

    calls = []
    times = median_times_in_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu",
                                  warmup=2, reps=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
