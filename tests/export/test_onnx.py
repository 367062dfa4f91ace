"""ONNX files of the fast model, every Rewrites combination, both exporters, run in onnxruntime.

Which combinations are tested, and why the rest need not be:

- checkpoint_stages checkpoints only when gradients are enabled, and exports run under
  torch.no_grad(): the files are byte for byte those without it (tested below for both
  exporters). It is still switched on in half of the legacy matrix.
- fused_upsample_add without conv_before_upsample changes nothing (without it no resize is
  followed by an add): same legacy file, same torch.export program (tested below).
- The dynamo exporter goes through torch.export, under which the fast model runs its patches one
  by one (torch.compiler.is_compiling()), so batch_patches changes nothing, and channels_last
  only adds the layout conversions (aten.contiguous) that ONNX has no use for: the torch.export
  programs are the same (tested below), hence the ONNX files.
- The legacy exporter traces the model as it runs: batch_patches, conv_before_upsample,
  avgpool_downsample, fused_blocks and fused_upsample_add each change its graph, and so does
  channels_last together with batch_patches (the batched joins are other views in that layout).
  Without batch_patches, channels_last does not (tested below).

So the legacy exporter is tested on every combination that can give a different file (36), each
at two sizes, the irrelevant flags alternating. A dynamo export costs 10-40 s of CPU, so it is
tested on three combinations that between them use every variant of every block the flags
change (DownSample: average pooling or resize; CAB/SAM: fused or not; the up paths:
resize-then-conv, conv-then-fused-resize-add, conv-then-resize-then-add), the default one with
dynamic axes. (All 128 x 2 were run once while this was written, every file within 2e-7.)
"""

import dataclasses
import itertools

import onnx
import pytest
import torch

from helpers import assert_raises_mentioning
from mprnet_kernels.export import ExportCheckError, check_onnx, export_onnx
from mprnet_kernels.model import Rewrites

FIELDS = [f.name for f in dataclasses.fields(Rewrites)]


def _legacy_matrix():
    out = []
    for bp, cbu, ap, fb, fua, cl in itertools.product([True, False], repeat=6):
        if not cbu and fua:
            continue  # the same file as fua=False (tested below); fua alternates instead
        if not bp and cl:
            continue  # likewise for channels_last without batch_patches
        fua = fua if cbu else ap ^ fb
        cl = cl if bp else cbu ^ ap ^ fb
        out.append(Rewrites(bp, cbu, ap, fb, fua, cl, checkpoint_stages=cbu ^ fb ^ (not bp)))
    return out


def _id(rewrites):
    return "".join("1" if getattr(rewrites, f) else "0" for f in FIELDS)


LEGACY = _legacy_matrix()


def test_the_legacy_matrix_holds_every_file_that_can_differ():
    traced = {(r.batch_patches, r.conv_before_upsample, r.avgpool_downsample, r.fused_blocks,
               r.fused_upsample_add if r.conv_before_upsample else None,
               r.channels_last if r.batch_patches else None) for r in LEGACY}
    assert len(traced) == len(LEGACY) == 36
    assert {r.checkpoint_stages for r in LEGACY} == {r.channels_last for r in LEGACY} == {True, False}


@pytest.fixture(scope="session")
def legacy_file(make_model, inputs):
    """legacy_file(rewrites) -> the bytes of its legacy ONNX file (dynamic axes), exported once."""
    cache = {}

    def get(rewrites, tmp_path):
        if rewrites not in cache:
            path = tmp_path / "cached.onnx"
            export_onnx(make_model(rewrites), path, example=inputs[0], exporter="legacy", check=False)
            cache[rewrites] = path.read_bytes()
        return cache[rewrites]
    return get


@pytest.mark.parametrize("rewrites", LEGACY, ids=_id)
def test_legacy_export_matches_pytorch_at_two_sizes(rewrites, legacy_file, make_model, inputs, ort_errors, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(legacy_file(rewrites, tmp_path))
    errors = ort_errors(path, make_model(rewrites), inputs)
    assert max(errors) < 1e-5, errors


@pytest.mark.parametrize("base, flag", [
    (Rewrites(), "checkpoint_stages"),
    (Rewrites(batch_patches=False, checkpoint_stages=True), "channels_last"),
    (Rewrites(conv_before_upsample=False, fused_upsample_add=False, checkpoint_stages=True), "fused_upsample_add"),
], ids=lambda v: v if isinstance(v, str) else _id(v))
def test_legacy_file_is_the_same_with_or_without(base, flag, legacy_file, tmp_path):
    assert base in LEGACY  # one side comes from the matrix
    other = dataclasses.replace(base, **{flag: not getattr(base, flag)})
    assert legacy_file(base, tmp_path) == legacy_file(other, tmp_path)


DYNAMO = [
    pytest.param(Rewrites(), True, id="all-on-dynamic"),
    pytest.param(Rewrites.none(), False, id="none-static"),
    pytest.param(dataclasses.replace(Rewrites.none(), conv_before_upsample=True, fused_blocks=True, batch_patches=True),
                 False, id="conv-first-no-fused-add-static"),
]


@pytest.mark.parametrize("rewrites, dynamic", DYNAMO)
def test_dynamo_export_matches_pytorch(rewrites, dynamic, make_model, inputs, ort_errors, tmp_path):
    model = make_model(rewrites)
    path = tmp_path / "model.onnx"
    report = export_onnx(model, path, example=inputs[0], dynamic=dynamic)
    assert report.check.ok and len(report.check.shapes) == (2 if dynamic else 1)
    errors = ort_errors(path, model, inputs if dynamic else inputs[:1])
    assert max(errors) < 1e-5, errors
    ops = {n.domain for n in onnx.load(str(path)).graph.node}
    assert ops <= {"", "ai.onnx"}, ops  # standard ONNX only, no custom domain


def _program_ops(model, example):
    """The torch.export program's calls as (op, input positions), the layout-only
    aten.contiguous nodes taken out (their users read their input instead)."""
    with torch.no_grad():
        graph = torch.export.export(model, (example,)).graph
    alias, index, ops = {}, {}, []
    for node in graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.contiguous.default:
            alias[node] = alias.get(node.args[0], node.args[0])
            continue
        index[node] = len(index)
        args = torch.fx.node.map_arg((node.args, node.kwargs), lambda a: ("node", index[alias.get(a, a)]))
        ops.append((node.op, str(node.target), str(args)))
    return ops


def test_dynamo_program_ignores_batch_patches_checkpointing_layout_and_a_lone_fused_add(make_model, inputs):
    programs = {}
    for rewrites in (Rewrites(), Rewrites(batch_patches=False, checkpoint_stages=True), Rewrites(channels_last=False),
                     Rewrites.none(), dataclasses.replace(Rewrites.none(), fused_upsample_add=True)):
        programs[rewrites] = _program_ops(make_model(rewrites), inputs[0])
    first, *same = list(programs.values())[:3]
    assert all(p == first for p in same)
    none, lone_add = list(programs.values())[3:]
    assert none == lone_add and none != first


def test_reference_model_exports_too(make_model, inputs, tmp_path):
    report = export_onnx(make_model(reference=True), tmp_path / "ref.onnx", example=inputs[0], exporter="legacy")
    assert report.check.ok


def test_float16_file_runs_in_onnxruntime_within_half_tolerance(make_model, inputs, ort_errors, tmp_path):
    model = make_model()
    path = tmp_path / "half.onnx"
    report = export_onnx(model, path, example=inputs[0], exporter="legacy", dtype="fp16")
    assert report.dtype == torch.float16 and report.check.dtype == torch.float16 and report.check.ok
    assert next(model.parameters()).dtype == torch.float32  # converted on a copy
    errors = ort_errors(path, model, inputs)
    assert max(errors) < 2e-2, errors


def test_bfloat16_onnx_is_refused_because_it_cannot_be_checked(make_model, tmp_path):
    assert_raises_mentioning(ValueError, ["dtype", "bfloat16", "onnxruntime"],
                             lambda: export_onnx(make_model(), tmp_path / "m.onnx", dtype=torch.bfloat16))
    assert not (tmp_path / "m.onnx").exists()


def test_check_catches_a_file_of_other_weights(make_model, inputs, tmp_path):
    model = make_model()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, example=inputs[0], exporter="legacy", dynamic=False, check=False)
    other = make_model()
    with torch.no_grad():
        other.tail.weight.mul_(1.01)
    result = check_onnx(path, other, inputs[:1])
    assert not result.ok and result.worst > 1e-4 and "MISMATCH" in result.summary()
    assert check_onnx(path, model, inputs[:1]).ok


def test_a_mismatch_raises_with_the_numbers_and_removes_the_file(make_model, inputs, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportCheckError) as info:
        export_onnx(make_model(), path, example=inputs[0], exporter="legacy", dynamic=False, tolerance=0)
    assert "removed" in str(info.value) and "MISMATCH" in str(info.value)
    assert info.value.result.worst > 0 and not path.exists()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(exporter="tf"), ValueError, ["exporter", "dynamo", "legacy"]),
    (dict(dtype="int8"), ValueError, ["dtype", "fp16"]),
    (dict(dtype=torch.float64), ValueError, ["dtype", "float64"]),
    (dict(example=torch.rand(1, 3, 30, 32)), ValueError, ["example", "multiples of 8"]),
    (dict(example=torch.rand(2, 3, 8, 32)), ValueError, ["example", "dynamic", "16"]),
    (dict(example=torch.zeros(1, 3, 32, 32, dtype=torch.int64)), TypeError, ["example", "floating"]),
    (dict(tolerance=-1.0), ValueError, ["tolerance", ">= 0"]),
])
def test_bad_arguments_are_named(kwargs, error, words, make_model, tmp_path):
    assert_raises_mentioning(error, words, lambda: export_onnx(make_model(), tmp_path / "m.onnx", **kwargs))
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_must_be_a_module(tmp_path):
    assert_raises_mentioning(TypeError, ["model", "nn.Module"], lambda: export_onnx("model.pth", tmp_path / "m.onnx"))


class _FixedWidth(torch.nn.Module):
    """Runs at any size in PyTorch, but its trace keeps the example's width as a constant."""

    def forward(self, x):
        return x * torch.ones(int(x.shape[3]))


def test_a_dynamic_file_that_does_not_run_at_another_size_fails_and_is_removed(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportCheckError) as info:
        export_onnx(_FixedWidth(), path, example=torch.rand(2, 3, 32, 32), exporter="legacy")
    assert "FAILED to run" in str(info.value) and "1x3x48x40" in str(info.value)
    assert info.value.result.worst == float("inf") and not path.exists()


def test_local_attention_exports_at_a_fixed_size_and_refuses_dynamic_axes(make_model, inputs, ort_errors, tmp_path):
    model = make_model().set_local_attention(train_size=16)
    assert_raises_mentioning(ValueError, ["dynamic", "local attention", "dynamic=False"],
                             lambda: export_onnx(model, tmp_path / "m.onnx", example=inputs[0], exporter="legacy"))
    export_onnx(model, tmp_path / "m.onnx", example=inputs[1], exporter="legacy", dynamic=False)
    assert max(ort_errors(tmp_path / "m.onnx", model, inputs[1:])) < 1e-5
