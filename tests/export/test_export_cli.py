"""`mprnet-kernels export`: each format written and checked, a mismatch exits 1 with the numbers,
usage problems exit 2 before anything is written."""

import argparse

import onnx
import pytest
import torch

from mprnet_kernels.cli import main as cli_main
from mprnet_kernels.export import cli


@pytest.fixture(scope="module")
def checkpoint(make_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.pth"
    torch.save({"epoch": 2, "state_dict": make_model().state_dict()}, path)
    return path


def run(*argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args([str(a) for a in argv]))


def test_the_command_writes_weights_through_the_package_cli(checkpoint, capsys):
    assert cli_main(["export", str(checkpoint), "--format", "weights", "--dtype", "fp16"]) == 0
    out = checkpoint.with_name("tiny.fp16.weights.pth")
    assert out.exists()
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "float16" in printed and ": ok" in printed


def test_onnx_fp16_static(checkpoint, tmp_path, capsys):
    # the legacy exporter: seconds, where dynamo takes tens (test_onnx.py runs the dynamo exporter)
    out = tmp_path / "m.onnx"
    assert run(checkpoint, "--format", "onnx", "--exporter", "legacy", "--dtype", "fp16", "--size", 32, 32,
               "--out", out) == 0
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    assert "onnxruntime vs PyTorch, float16" in capsys.readouterr().out


def test_pt2_bfloat16_with_the_fused_ops_kept_says_it_needs_the_import(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert run(checkpoint, "--format", "pt2", "--dtype", "bf16", "--keep-ops", "--size", 32, 32, "--out", out) == 0
    printed = capsys.readouterr().out
    assert "torch.export.load vs PyTorch, bfloat16" in printed and "import mprnet_kernels" in printed


def test_a_mismatch_exits_1_says_by_how_much_and_leaves_no_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code = run(checkpoint, "--format", "onnx", "--exporter", "legacy", "--dynamic", "--size", 32, 32,
               "--tolerance", 0, "--out", out)
    err = capsys.readouterr().err
    assert code == 1 and "MISMATCH" in err and "relative error" in err and "1x3x32x32" not in err
    assert "2x3x32x32" in err and not out.exists()  # the dynamic check traces with batch 2


@pytest.mark.parametrize("argv, words", [
    (["--format", "onnx", "--dtype", "bf16"], ["bf16", "onnxruntime"]),
    (["--format", "pt2", "--exporter", "legacy"], ["--exporter", "onnx"]),
    (["--format", "onnx", "--keep-ops"], ["--keep-ops", "pt2"]),
    (["--format", "weights", "--dynamic"], ["--dynamic", "weights"]),
    (["--format", "onnx", "--size", "30", "32"], ["--size", "multiples of 8"]),
    (["--format", "pt2", "--dynamic", "--size", "8", "32"], ["--size", "16"]),
    (["--format", "onnx", "--batch", "0"], ["--batch"]),
    (["--format", "onnx", "--tolerance", "-1"], ["--tolerance"]),
])
def test_usage_problems_exit_2_before_writing(argv, words, checkpoint, tmp_path, capsys):
    out = tmp_path / "m.out"
    assert run(checkpoint, *argv, "--out", out) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_unusable_checkpoints_and_outputs_exit_2(checkpoint, tmp_path, capsys):
    assert run(tmp_path / "missing.pth", "--format", "weights") == 2
    assert "no such checkpoint" in capsys.readouterr().err
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert run(junk, "--format", "weights", "--out", tmp_path / "w.pth") == 2
    assert "cannot load it" in capsys.readouterr().err
    assert run(checkpoint, "--format", "weights", "--out", checkpoint) == 2
    assert "the checkpoint itself" in capsys.readouterr().err
    assert run(checkpoint, "--format", "weights", "--out", tmp_path / "no" / "w.pth") == 2
    assert "does not exist" in capsys.readouterr().err
