"""The reference MPRNet against the golden float64 fixture and the spec's state_dict layout.

The fixture (tests/data/mprnet_small_float64.pt) was produced by the upstream code in float64
with a small configuration; matching its outputs, losses and every gradient to 1e-10 relative
is the proof that the reference is numerically faithful.

tests/data/state_dict_shapes.json is the spec's ``state_dict_{deblur,derain,denoise}.txt``
(every key and shape, in order) converted once to JSON so these tests do not need the spec
directory, which lives outside the repository.  When the spec is present (``../shared/spec``
beside the repository, as in CI) a test checks the JSON against it.
"""

import ast
import json
from pathlib import Path

import pytest
import torch

from helpers import rel_err
from mprnet_kernels.reference import (
    CAB,
    PRESETS,
    SAM,
    CALayer,
    CharbonnierLoss,
    EdgeLoss,
    MPRNet,
    MPRNetLoss,
)

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "mprnet_small_float64.pt"
SHAPES_JSON = DATA / "state_dict_shapes.json"
SPEC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "spec"

TOL = 1e-10
PARAM_COUNTS = {"deblur": 20_127_073, "derain": 3_637_249, "denoise": 15_741_025}
STATE_DICT_ENTRIES = 316
DISTINCT_TENSORS = 262  # 316 entries minus the 54 extra aliases of the one shared PReLU


def tiny_model(**overrides):
    """A model small enough to build in milliseconds; used only for argument checks."""
    kwargs = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    kwargs.update(overrides)
    return MPRNet(**kwargs)


# --------------------------------------------------------------------------- golden fixture


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def golden_run(golden):
    """One float64 forward + backward of the fixture's configuration, shared by the tests."""
    model = MPRNet(**golden["config"]).to(torch.float64)
    model.load_state_dict(golden["state_dict"])
    x = golden["input"].clone().requires_grad_(True)
    target = golden["target"]
    outputs = model(x)

    char_sum = sum(CharbonnierLoss()(out, target) for out in outputs)
    edge_sum = sum(EdgeLoss()(out, target) for out in outputs)
    total = MPRNetLoss()(outputs, target)
    total.backward()
    return dict(
        model=model,
        x=x,
        outputs=outputs,
        loss_charbonnier=char_sum,
        loss_edge=edge_sum,
        loss_total=total,
        charbonnier_single=CharbonnierLoss()(outputs[0], target),
        edge_single=EdgeLoss()(outputs[0], target),
    )


def test_fixture_config_is_small(golden):
    assert golden["config"]["n_feat"] == 16 and golden["config"]["num_cab"] == 2
    assert golden["input"].dtype == torch.float64


def test_state_dict_keys_in_upstream_order(golden):
    model = MPRNet(**golden["config"])
    assert list(model.state_dict()) == list(golden["state_dict"])
    for key, value in model.state_dict().items():
        assert value.shape == golden["state_dict"][key].shape, key


@pytest.mark.parametrize("stage", [0, 1, 2], ids=["stage3", "stage2", "stage1"])
def test_outputs_match_fixture(golden, golden_run, stage):
    out = golden_run["outputs"][stage]
    ref = golden["outputs"][stage]
    assert out.shape == ref.shape == golden["input"].shape
    assert out.dtype == torch.float64
    assert rel_err(out, ref) < TOL


@pytest.mark.parametrize("name", ["loss_charbonnier", "loss_edge", "loss_total",
                                  "charbonnier_single", "edge_single"])
def test_losses_match_fixture(golden, golden_run, name):
    assert rel_err(golden_run[name], golden[name]) < TOL


def test_loss_total_is_char_plus_weighted_edge(golden_run):
    expected = golden_run["loss_charbonnier"] + 0.05 * golden_run["loss_edge"]
    assert rel_err(golden_run["loss_total"], expected) < 1e-14


def test_grad_input_matches_fixture(golden, golden_run):
    assert rel_err(golden_run["x"].grad, golden["grad_input"]) < TOL


def test_grad_params_match_fixture_key_by_key(golden, golden_run):
    params = dict(golden_run["model"].named_parameters())
    expected = golden["grad_params"]
    assert set(params) == set(expected), (
        f"only in model: {sorted(set(params) - set(expected))}; "
        f"only in fixture: {sorted(set(expected) - set(params))}")
    assert list(params) == list(expected)  # same order, too

    failures = []
    for key, ref in expected.items():
        grad = params[key].grad
        if grad is None:
            failures.append(f"{key}: no gradient")
            continue
        err = rel_err(grad, ref)
        if not err < TOL:
            failures.append(f"{key}: rel err {err:.3g}")
    assert not failures, "\n".join(failures)


def test_shared_prelu_gradient_is_one_entry(golden_run):
    """The fixture lists the shared PReLU once, under its first name."""
    names = [n for n, p in golden_run["model"].named_parameters() if n.endswith("body.1.weight")]
    assert names == ["shallow_feat1.1.body.1.weight"]


# --------------------------------------------------------------------------- presets


@pytest.fixture(scope="module")
def spec_shapes():
    with open(SHAPES_JSON) as f:
        return json.load(f)


@pytest.fixture(scope="module", params=list(PARAM_COUNTS))
def preset_model(request):
    """Each preset built once per module (building is cheap; forwards of them are never run)."""
    return request.param, MPRNet.from_preset(request.param)


def test_preset_state_dict_matches_spec(preset_model, spec_shapes):
    name, model = preset_model
    expected = [(k, tuple(v)) for k, v in spec_shapes[name].items()]
    actual = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert len(actual) == STATE_DICT_ENTRIES
    missing = sorted(set(dict(expected)) - set(dict(actual)))
    extra = sorted(set(dict(actual)) - set(dict(expected)))
    assert not missing and not extra, f"missing {missing[:5]}, unexpected {extra[:5]}"
    assert actual == expected  # shapes and order


def test_preset_parameter_count(preset_model):
    name, model = preset_model
    params = list(model.parameters())
    assert len(params) == DISTINCT_TENSORS
    assert sum(p.numel() for p in params) == PARAM_COUNTS[name]


def test_preset_shares_one_prelu(preset_model):
    _, model = preset_model
    state = model.state_dict()
    prelu_keys = [k for k in state if k.endswith("body.1.weight") and state[k].shape == (1,)]
    assert len(prelu_keys) == STATE_DICT_ENTRIES - DISTINCT_TENSORS + 1
    assert len({state[k].data_ptr() for k in prelu_keys}) == 1
    listed = [n for n, _ in model.named_parameters() if n in prelu_keys]
    assert listed == ["shallow_feat1.1.body.1.weight"]
    # Writing through one key is seen through every other one.
    with torch.no_grad():
        model.stage3_orsnet.orb3.body[0].body[1].weight.fill_(0.125)
    assert all(float(model.state_dict()[k]) == 0.125 for k in prelu_keys)


def test_presets_table_matches_spec():
    widths = {name: (p["n_feat"], p["scale_unetfeats"], p["scale_orsnetfeats"])
              for name, p in PRESETS.items()}
    assert widths == {"deblur": (96, 48, 32), "derain": (40, 20, 16), "denoise": (80, 48, 32)}
    for p in PRESETS.values():
        assert (p["in_c"], p["out_c"], p["num_cab"], p["kernel_size"], p["reduction"],
                p["bias"]) == (3, 3, 8, 3, 4, False)


@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason="spec directory not beside the repository")
def test_shapes_json_matches_spec_files(spec_shapes):
    for name in PARAM_COUNTS:
        parsed = {}
        with open(SPEC_DIR / f"state_dict_{name}.txt") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                key, shape = line.rstrip("\n").split("\t")
                parsed[key] = list(ast.literal_eval(shape))
        assert list(parsed.items()) == list(spec_shapes[name].items())


def test_from_preset_overrides_and_does_not_mutate_presets():
    before = {k: dict(v) for k, v in PRESETS.items()}
    model = MPRNet.from_preset("derain", num_cab=1, bias=True)
    assert len(model.stage3_orsnet.orb1.body) == 2  # one CAB + the trailing conv
    assert model.shallow_feat1[0].weight.shape == (40, 3, 3, 3)
    assert model.shallow_feat1[0].bias is not None
    assert model.stage3_orsnet.orb1.body[1].bias is None  # ORB's last conv never has a bias
    assert PRESETS == before


@pytest.mark.parametrize("name", ["small", "tiny"])
def test_extra_presets_are_the_deblur_preset_narrowed(name):
    from mprnet_kernels.reference import EXTRA_PRESETS

    model = MPRNet.from_preset(name)
    config = EXTRA_PRESETS[name]
    assert model.shallow_feat1[0].weight.shape == (config["n_feat"], 3, 3, 3)
    assert len(model.stage3_orsnet.orb1.body) == config["num_cab"] + 1
    assert {k: v for k, v in config.items() if k not in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab")} \
        == {k: v for k, v in PRESETS["deblur"].items() if k not in ("n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab")}
    assert "small" not in PRESETS  # PRESETS stays the three published models


def test_from_preset_unknown_name():
    with pytest.raises(ValueError) as info:
        MPRNet.from_preset("dehaze")
    message = str(info.value)
    assert "'dehaze'" in message
    for name in ("deblur", "derain", "denoise", "small", "tiny"):
        assert name in message


def test_from_preset_unknown_override():
    with pytest.raises(TypeError):
        MPRNet.from_preset("derain", widht=3)


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("shape", [(1, 3, 50, 64), (1, 3, 48, 60), (2, 3, 4, 8)])
def test_size_not_multiple_of_8(shape):
    with pytest.raises(ValueError) as info:
        tiny_model()(torch.zeros(shape))
    message = str(info.value)
    assert "multiples of 8" in message and str(shape) in message and "pad" in message


@pytest.mark.parametrize("shape", [(1, 1, 16, 16), (1, 4, 16, 16), (3, 16, 16), (1, 1, 3, 16, 16)])
def test_wrong_channels_or_rank(shape):
    with pytest.raises(ValueError) as info:
        tiny_model()(torch.zeros(shape))
    message = str(info.value)
    assert str(shape) in message and "(N, 3, H, W)" in message


def _both_models():
    import mprnet_kernels

    return [tiny_model(), mprnet_kernels.MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)]


@pytest.mark.parametrize("model", _both_models(), ids=["reference", "fast"])
def test_dtype_mismatch_names_the_parameters_and_the_fix(model):
    with pytest.raises(TypeError) as info:
        model(torch.rand(1, 3, 16, 16, dtype=torch.float64))
    message = str(info.value)
    assert "torch.float64" in message and "parameters are torch.float32" in message
    assert "model.double()" in message and "autocast" in message


@pytest.mark.parametrize("model", _both_models(), ids=["reference", "fast"])
def test_integer_image_is_refused(model):
    with pytest.raises(TypeError, match=r"floating-point image .* got torch.uint8.*/ 255"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


@pytest.mark.parametrize("model", _both_models(), ids=["reference", "fast"])
def test_autocast_accepts_a_half_input_but_not_float64(model):
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.rand(1, 3, 16, 16).bfloat16())[0].shape == (1, 3, 16, 16)  # dtypes differ: allowed
        with pytest.raises(TypeError, match="torch.float64"):
            model(torch.rand(1, 3, 16, 16, dtype=torch.float64))
        # autocast never casts float64 weights either
        with pytest.raises(TypeError, match="parameters are torch.float64"):
            model.double()(torch.rand(1, 3, 16, 16))
    model.float()


def test_in_c_must_equal_out_c():
    with pytest.raises(ValueError, match="in_c and out_c"):
        tiny_model(in_c=3, out_c=1)


def test_tiny_forward_shapes_and_dtype():
    torch.manual_seed(0)
    model = tiny_model()
    x = torch.rand(2, 3, 16, 24)
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    for out in outputs:
        assert out.shape == x.shape and out.dtype == torch.float32
        assert torch.isfinite(out).all()


def test_samples_are_independent():
    """Nothing mixes samples of a batch (channel attention pools per sample)."""
    torch.manual_seed(1)
    model = tiny_model().to(torch.float64)
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    batched = model(x)
    single = model(x[1:])
    for a, b in zip(batched, single):
        assert rel_err(a[1:], b) < 1e-13


# --------------------------------------------------------------------------- blocks


def test_blocks_standalone():
    torch.manual_seed(2)
    x = torch.rand(2, 8, 6, 10, dtype=torch.float64)

    ca = CALayer(8, reduction=4).to(torch.float64)
    gate = torch.sigmoid(ca.conv_du[2](torch.relu(ca.conv_du[0](x.mean((2, 3), keepdim=True)))))
    assert rel_err(ca(x), x * gate) < 1e-14

    cab = CAB(8, 3, 4, bias=False).to(torch.float64)  # act omitted: gets its own PReLU
    assert rel_err(cab(x), cab.CA(cab.body(x)) + x) < 1e-14

    sam = SAM(8, kernel_size=1).to(torch.float64)
    img = torch.rand(2, 3, 6, 10, dtype=torch.float64)
    feats, out_img = sam(x, img)
    expected_img = sam.conv2(x) + img
    assert rel_err(out_img, expected_img) < 1e-14
    assert rel_err(feats, sam.conv1(x) * torch.sigmoid(sam.conv3(expected_img)) + x) < 1e-14
