"""load_checkpoint: upstream and bare formats, prefixes, and readable mismatch reports.

All checkpoints are made here from small models (building one takes milliseconds); preset-sized
ones are built on the meta device, which allocates nothing.
"""

import argparse
import os

import pytest
import torch
import torch.nn as nn

from mprnet_kernels.checkpoint import CheckpointMismatchError, load_checkpoint
from mprnet_kernels.reference import MPRNet

SMALL = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)


def small_model(seed):
    torch.manual_seed(seed)
    model = MPRNet(**SMALL)
    with torch.no_grad():  # make the PReLU differ between seeds too
        model.shallow_feat1[1].body[1].weight.fill_(0.1 * seed)
    return model


def assert_same_weights(model, state_dict):
    got = model.state_dict()
    assert list(got) == list(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(got[key], value), key


@pytest.fixture
def source():
    return small_model(1)


@pytest.fixture
def target():
    return small_model(2)


def upstream_checkpoint(model):
    """What upstream training writes: epoch, weights and an Adam state after one step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    optimizer.zero_grad()
    return {"epoch": 7, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("as_str", [False, True])
def test_upstream_file_round_trip(tmp_path, source, target, as_str):
    checkpoint = upstream_checkpoint(source)
    path = tmp_path / "model_best.pth"
    torch.save(checkpoint, path)

    rest = load_checkpoint(target, str(path) if as_str else path)

    assert_same_weights(target, source.state_dict())
    assert set(rest) == {"epoch", "optimizer"}
    assert rest["epoch"] == 7
    assert set(rest["optimizer"]) == {"state", "param_groups"}
    assert len(rest["optimizer"]["state"]) == len(list(source.parameters()))


def test_upstream_dict_round_trip(source, target):
    rest = load_checkpoint(target, {"epoch": 3, "state_dict": source.state_dict(), "note": "x"})
    assert rest == {"epoch": 3, "note": "x"}
    assert_same_weights(target, source.state_dict())


def test_bare_state_dict_file_and_dict(tmp_path, source):
    path = tmp_path / "bare.pt"
    torch.save(source.state_dict(), path)
    for spec in (path, source.state_dict()):
        target = small_model(3)
        assert load_checkpoint(target, spec) == {}
        assert_same_weights(target, source.state_dict())


def test_shared_prelu_loaded_everywhere(source, target):
    load_checkpoint(target, source.state_dict())
    expected = float(source.shallow_feat1[1].body[1].weight.detach())
    state = target.state_dict()
    prelu = [k for k in state if k.endswith("body.1.weight") and state[k].shape == (1,)]
    assert len(prelu) > 10
    assert all(float(state[k]) == expected for k in prelu)


def test_module_prefix_stripped(tmp_path, source, target):
    prefixed = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save({"epoch": 1, "state_dict": prefixed}, tmp_path / "dp.pth")
    assert load_checkpoint(target, tmp_path / "dp.pth") == {"epoch": 1}
    assert_same_weights(target, source.state_dict())


def test_prefix_kept_for_wrapped_model(source):
    class Wrapper(nn.Module):  # what nn.DataParallel's keys look like
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    wrapped = Wrapper(small_model(4))
    prefixed = {"module." + k: v for k, v in source.state_dict().items()}
    load_checkpoint(wrapped, prefixed)
    assert_same_weights(wrapped.module, source.state_dict())


def test_loads_into_float64_model(source):
    target = small_model(5).to(torch.float64)
    load_checkpoint(target, source.state_dict())
    for key, value in target.state_dict().items():
        assert value.dtype == torch.float64
        assert torch.equal(value, source.state_dict()[key].to(torch.float64))


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path, target):
    path = tmp_path / "nope" / "missing.pth"
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint(target, path)
    assert str(path) in str(info.value)


def test_not_a_checkpoint(tmp_path, target):
    with pytest.raises(ValueError, match="not tensors"):
        load_checkpoint(target, {"epoch": 1, "weights": {}})
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list"):
        load_checkpoint(target, tmp_path / "list.pt")
    with pytest.raises(TypeError):
        load_checkpoint(target, 42)


# --------------------------------------------------------------------------- mismatches


def test_missing_key_strict(source, target):
    state = source.state_dict()
    del state["tail.weight"]
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, state)
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "<dict>" in message
    assert "missing keys (1): tail.weight" in message
    assert "unexpected" not in message and "shape" not in message
    assert "hint" not in message  # the checkpoint is the model's own configuration
    assert_same_weights(target, before)  # nothing was loaded


def test_unexpected_key_strict_names_file(tmp_path, source, target):
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, tmp_path / "extra.pt")
    message = str(info.value)
    assert str(tmp_path / "extra.pt") in message
    assert "unexpected keys (1): extra.weight" in message
    assert "missing" not in message


def test_many_missing_keys_are_truncated(source, target):
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("stage3_orsnet")}
    removed = len(source.state_dict()) - len(state)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, state)
    message = str(info.value)
    assert f"missing keys ({removed})" in message
    assert f"... and {removed - 10} more" in message
    assert len(message) < 2000


def test_strict_false_ignores_missing_and_unexpected(source, target):
    state = source.state_dict()
    del state["tail.weight"]
    state["extra.weight"] = torch.zeros(2)
    kept_tail = target.tail.weight.detach().clone()
    assert load_checkpoint(target, {"state_dict": state}, strict=False) == {}
    assert torch.equal(target.tail.weight, kept_tail)
    assert torch.equal(target.concat23.weight, source.concat23.weight)


def test_strict_false_still_rejects_shape_mismatch(source, target):
    state = source.state_dict()
    state["tail.weight"] = torch.zeros(3, 5, 3, 3)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, state, strict=False)
    assert "tail.weight: checkpoint (3, 5, 3, 3) vs model (3, 12, 3, 3)" in str(info.value)


def test_conflicting_shared_prelu_values(source, target):
    state = source.state_dict()
    state["stage1_decoder.skip_attn1.body.1.weight"] = torch.tensor([0.9])
    with pytest.raises(CheckpointMismatchError, match="shared parameter"):
        load_checkpoint(target, state)


def test_preset_detected_with_other_num_cab(target):
    derain = MPRNet.from_preset("derain", num_cab=1)  # ~1M parameters: cheap to build
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, {"epoch": 5, "state_dict": derain.state_dict()})
    message = str(info.value)
    assert "shallow_feat1.0.weight: checkpoint (40, 3, 3, 3) vs model (8, 3, 3, 3)" in message
    assert "the checkpoint looks like the 'derain' preset (n_feat=40" in message
    assert "MPRNet.from_preset('derain', num_cab=1)" in message
    assert "... and" in message  # long lists are cut


@pytest.mark.parametrize("preset", ["deblur", "denoise", "derain"])
def test_full_preset_detected(preset, target):
    with torch.device("meta"):
        checkpoint = MPRNet.from_preset(preset).state_dict()
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(target, checkpoint)
    message = str(info.value)
    assert f"looks like the '{preset}' preset" in message
    assert f"MPRNet.from_preset('{preset}')" in message
    others = {"deblur", "denoise", "derain"} - {preset}
    assert not any(f"'{o}'" in message for o in others)


def test_non_preset_config_is_described():
    with torch.device("meta"):
        model = MPRNet.from_preset("derain", num_cab=1)
    source = MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=6, num_cab=1)  # no preset's widths
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, source.state_dict())
    message = str(info.value)
    assert "preset" not in message
    assert "MPRNet(in_c=3, out_c=3, n_feat=8, scale_unetfeats=4, scale_orsnetfeats=6, num_cab=1" \
        in message


def test_extra_preset_detected(source):
    """SMALL is the `tiny` preset's configuration."""
    with torch.device("meta"):
        model = MPRNet.from_preset("derain", num_cab=1)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, source.state_dict())
    assert "build the model with MPRNet.from_preset('tiny')" in str(info.value)


def test_any_module_without_mprnet_keys():
    model = nn.Linear(3, 2)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)})
    message = str(info.value)
    assert "weight: checkpoint (2, 4) vs model (2, 3)" in message and "hint" not in message
    load_checkpoint(model, {"module.weight": torch.ones(2, 3), "module.bias": torch.ones(2)})
    assert torch.equal(model.weight, torch.ones(2, 3))


def test_path_object_type(tmp_path, source, target):
    """os.PathLike other than pathlib also works (anything with __fspath__)."""
    class MyPath:
        def __init__(self, p):
            self.p = p

        def __fspath__(self):
            return str(self.p)

    torch.save(source.state_dict(), tmp_path / "w.pt")
    assert isinstance(MyPath(tmp_path), os.PathLike)
    assert load_checkpoint(target, MyPath(tmp_path / "w.pt")) == {}
    assert_same_weights(target, source.state_dict())


def test_unreadable_files_say_so_in_one_line(tmp_path, target):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"not a file written by torch\.save") as info:
        load_checkpoint(target, text)
    assert "\n" not in str(info.value)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": target.state_dict(), "args": argparse.Namespace(task="deblur")}, unsafe)
    with pytest.raises(ValueError, match=r"holds an object of type argparse\.Namespace.*weights_only=True") as info:
        load_checkpoint(target, unsafe)
    assert "\n" not in str(info.value) and "unsafe.pth" in str(info.value)


# --------------------------------------------------------------------------- load_model


@pytest.mark.parametrize("entry", ["file", "dict", "bare"])
def test_load_model_builds_the_model_the_checkpoint_fits(tmp_path, source, entry):
    from mprnet_kernels import load_model
    from mprnet_kernels.model import MPRNet as FastMPRNet

    checkpoint = upstream_checkpoint(source) if entry != "bare" else source.state_dict()
    if entry == "file":
        torch.save(checkpoint, tmp_path / "c.pth")
        checkpoint = tmp_path / "c.pth"
    fast = load_model(checkpoint)
    assert isinstance(fast, FastMPRNet) and not fast.training
    assert_same_weights(fast, source.state_dict())
    ref = load_model(checkpoint, reference=True, dtype=torch.float64)
    assert type(ref) is MPRNet and next(ref.parameters()).dtype == torch.float64
    unfused = load_model(checkpoint, rewrites={"fused_blocks": False})
    assert not unfused.rewrites.fused_blocks and unfused.rewrites.batch_patches
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want = source.double()(x)[0]
        torch.testing.assert_close(ref(x)[0], want, rtol=0, atol=1e-12)
        torch.testing.assert_close(fast.double()(x)[0], want, rtol=0, atol=1e-10)


def test_load_model_rejects_rewrites_for_the_reference(source):
    from mprnet_kernels import load_model

    with pytest.raises(ValueError, match="rewrites"):
        load_model(source.state_dict(), reference=True, rewrites={"fused_blocks": False})
