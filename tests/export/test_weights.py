"""Weights-only checkpoints (checkpoint.save_weights, export.export_weights): size, round trip,
half-precision files loading into float32 models, upstream's loader."""

import pytest
import torch

from helpers import assert_raises_mentioning
from mprnet_kernels import reference
from mprnet_kernels.checkpoint import checkpoint_config, load_checkpoint, load_model, save_weights
from mprnet_kernels.export import ExportCheckError, export_weights
from mprnet_kernels.model import MPRNet


@pytest.fixture(scope="module")
def trained(make_model, tmp_path_factory):
    """A training checkpoint as mprnet-kernels train writes one: weights after an Adam step, the
    optimizer and scheduler states, RNG, run arguments."""
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    out = model(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    sum(o.square().mean() for o in out).backward()
    optimizer.step()
    scheduler.step()
    path = tmp_path_factory.mktemp("weights") / "last.pth"
    torch.save({"epoch": 7, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "config": checkpoint_config(model.state_dict()),
                "best_psnr": 21.5, "best_epoch": 6, "rng": {"torch": torch.get_rng_state(), "cuda": []},
                "args": {"task": "denoise", "train_dir": "/data"}}, path)
    return path, model


def test_weights_file_is_a_third_of_a_training_checkpoint(trained, tmp_path):
    path, _ = trained
    written = save_weights(path, tmp_path / "w.pth")
    assert set(written) == {"state_dict", "config", "epoch", "task", "best_psnr", "best_epoch"}
    assert written["task"] == "denoise" and written["epoch"] == 7
    assert 3 * (tmp_path / "w.pth").stat().st_size < path.stat().st_size * 1.1


def test_round_trip_is_exact_and_every_loader_reads_it(trained, tmp_path):
    path, model = trained
    save_weights(path, tmp_path / "w.pth")
    loaded = load_model(tmp_path / "w.pth")
    for (key, a), b in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), key
    rest = load_checkpoint(MPRNet.from_preset("tiny"), tmp_path / "w.pth")
    assert "optimizer" not in rest and rest["task"] == "denoise"
    # upstream's loader: torch.load(path)["state_dict"] into a model built from its own code
    upstream = reference.MPRNet(**torch.load(tmp_path / "w.pth")["config"])
    upstream.load_state_dict(torch.load(tmp_path / "w.pth")["state_dict"])
    for a, b in zip(upstream.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_shared_prelu_is_stored_once(trained, tmp_path):
    _, model = trained
    save_weights(model, tmp_path / "w.pth")
    state = torch.load(tmp_path / "w.pth")["state_dict"]
    storages = {t.untyped_storage().data_ptr() for t in state.values()}
    distinct = {id(p) for p in model.parameters()}  # named_parameters drops the shared duplicates
    assert len(state) > len(storages) == len(distinct)


def test_float16_file_is_half_the_size_and_loads_into_float32_models(trained, tmp_path):
    path, model = trained
    save_weights(path, tmp_path / "w32.pth")
    report = export_weights(path, tmp_path / "w16.pth", dtype=torch.float16)
    assert report.dtype == torch.float16 and report.check.ok
    assert (tmp_path / "w16.pth").stat().st_size < 0.6 * (tmp_path / "w32.pth").stat().st_size
    state = torch.load(tmp_path / "w16.pth")["state_dict"]
    assert {t.dtype for t in state.values()} == {torch.float16}
    loaded = load_model(tmp_path / "w16.pth")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for (key, a), b in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b.half().float()), key
    target = MPRNet.from_preset("tiny")
    load_checkpoint(target, tmp_path / "w16.pth")
    assert next(target.parameters()).dtype == torch.float32


def test_module_prefix_is_dropped_and_config_inferred(trained, tmp_path):
    _, model = trained
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    written = save_weights(wrapped, tmp_path / "w.pth")
    assert not any(k.startswith("module.") for k in written["state_dict"])
    assert written["config"] == checkpoint_config(model.state_dict())


def test_a_mismatch_raises_and_removes_the_file(trained, tmp_path):
    with pytest.raises(ExportCheckError, match="MISMATCH"):
        export_weights(trained[0], tmp_path / "w.pth", dtype=torch.float16, tolerance=0)
    assert not (tmp_path / "w.pth").exists()


@pytest.mark.parametrize("source, dtype, error, words", [
    (None, torch.int8, ValueError, ["dtype", "float16"]),
    (42, None, TypeError, ["expected a path or a dict", "int"]),
    ({"state_dict": {"w": "not a tensor"}}, None, ValueError, ["not tensors", "w"]),
])
def test_bad_arguments_are_named(source, dtype, error, words, trained, tmp_path):
    source = trained[0] if source is None else source
    assert_raises_mentioning(error, words, lambda: save_weights(source, tmp_path / "w.pth", dtype=dtype))
    assert not (tmp_path / "w.pth").exists()
