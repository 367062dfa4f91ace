"""bench/profile_model.py: where the time of a training step and an inference goes
(convolutions, forward and backward, vs everything else), from torch.profiler."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import profile_model  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("aten::conv2d", "forward"), ("aten::convolution", "forward"), ("aten::_convolution", "forward"),
    ("aten::mkldnn_convolution", "forward"), ("aten::cudnn_convolution", "forward"),
    ("aten::_slow_conv2d_forward", "forward"), ("aten::thnn_conv2d", "forward"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "backward"), ("ConvolutionBackward0", "backward"),
    ("aten::convolution_backward", "backward"), ("aten::_slow_conv2d_backward", "backward"),
    ("aten::_convert_indices_from_coo_to_csr", None), ("aten::add", None), ("mprnet::ca_tail_forward", None),
    ("aten::copy_", None), ("Optimizer.step#Adam.step", None), ("aten::conv_tbc_backward_x", "backward"),
    ("mkldnn::_convolution_pointwise", "forward"), ("mkldnn::_convolution_pointwise.binary", "forward"),
    ("mkldnn::_convolution_pointwise_.binary", "forward"), ("mkldnn::_reorder_convolution_weight", None),
])
def test_conv_kind(name, kind):
    assert profile_model.conv_kind(name) == kind


def _profile(fn):
    prof = profile_model.profile_call(fn, "cpu")
    return profile_model.summarize(profile_model.split_times(prof.events()), top=5)


def test_split_of_a_known_step():
    torch.manual_seed(0)
    w = torch.randn(64, 64, 3, 3, requires_grad=True)
    x = torch.randn(1, 64, 48, 48)
    opt = torch.optim.Adam([w])

    def step():
        opt.zero_grad()
        y = F.conv2d(x, w, padding=1)
        (torch.sigmoid(y) * y).sum().backward()
        opt.step()

    step()
    s = _profile(step)
    assert s["conv_pct"] + s["rest_pct"] == pytest.approx(100, abs=0.2)
    assert s["conv_forward_pct"] > 0 and s["conv_backward_pct"] > 0
    phases = s["rest_pct_by_phase"]
    assert phases["forward"] > 0 and phases["backward"] > 0 and phases["optimizer"] > 0
    assert sum(phases.values()) == pytest.approx(s["rest_pct"], abs=0.2)
    top = [o["op"] for o in s["top_other_ops"]]
    assert top and not any(profile_model.conv_kind(n) for n in top)
    assert all(o["pct"] <= s["rest_pct"] for o in s["top_other_ops"])


def test_autocast_casts_are_not_convolution_time():
    w = torch.randn(32, 32, 3, 3)
    x = torch.randn(1, 32, 64, 64)

    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.conv2d(x, w, padding=1)

    call()
    prof = profile_model.profile_call(call, "cpu")
    split = profile_model.split_times(prof.events())
    casts = split["rest_by_op_us"].get("aten::to", 0) + split["rest_by_op_us"].get("aten::_to_copy", 0)
    assert casts > 0 and split["conv_us"]["forward"] > 0
    # Autocast's aten::conv2d casts, then calls aten::conv2d again: the outer one is the whole.
    whole = sum(e.cpu_time_total for e in prof.events() if e.name == "aten::conv2d" and e.cpu_parent is None)
    assert split["conv_us"]["forward"] == pytest.approx(whole - casts, rel=1e-6)


def test_no_convolution_no_conv_share():
    x = torch.randn(256, 256)
    s = _profile(lambda: (x.exp() + x).sum())
    assert s["conv_pct"] == 0 and s["rest_pct"] == pytest.approx(100)
    assert {o["op"] for o in s["top_other_ops"]} >= {"aten::exp", "aten::add"}


def test_script_profiles_both_models(tmp_path, capsys):
    path = tmp_path / "profile.json"
    assert profile_model.main(["--device", "cpu", "--tiny", "--what", "train,infer", "--train-image", "16",
                               "--infer-image", "16", "--warmup", "0", "--profile-reps", "1", "--top", "4",
                               "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["device"] == "cpu" and data["threads"] >= 1 and "commit" in data
    got = {(r["model"], r["what"]) for r in data["results"]}
    assert got == {(m, w) for m in ("ours", "reference") for w in ("training step", "inference")}
    for r in data["results"]:
        assert r["conv_pct"] + r["rest_pct"] == pytest.approx(100, abs=0.3) and r["wall_ms"] > 0
        assert r["profiled_calls"] == 1
        assert 0 < r["conv_pct"] < 100 and len(r["top_other_ops"]) == 4
        if r["what"] == "training step":
            assert r["shape"] == [1, 3, 16, 16] and r["conv_backward_pct"] > 0
            assert r["rest_pct_by_phase"]["optimizer"] > 0
        else:
            assert r["conv_backward_pct"] == 0 and r["rest_pct_by_phase"]["backward"] == 0
    out = capsys.readouterr().out
    assert "convolutions" in out and "everything else" in out and "top other ops" in out
