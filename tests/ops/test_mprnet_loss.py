"""mprnet::mprnet_loss and mprnet_kernels.MPRNetLoss against the reference MPRNetLoss in float64:
values and gradients (outputs and target), clamp, edge_weight 0, sizes, layouts, dtypes,
determinism, opcheck, gradcheck, torch.compile, NaN/Inf, bad input, autocast, the golden
fixture, and the Triton path (interpreted on CPU)."""

from pathlib import Path

import pytest
import torch

import mprnet_kernels
from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like, grads_through,
                     layouts, rel_err)
from mprnet_kernels.ops import mprnet_loss
from mprnet_kernels.ops import _backend
from mprnet_kernels.ops._backend import kernel
from mprnet_kernels.reference import MPRNet
from mprnet_kernels.reference import losses as ref

HALF_TYPES = [torch.bfloat16, torch.float16]
ALL_TYPES = [torch.float64, torch.float32, *HALF_TYPES]
# Odd and even H and W, H or W from 1 to 5 (below the Laplacian's stencil), batch 1 and 8,
# channels 1, 3 and 64, and H > 64 (several row bands per plane in the CPU kernel).
SHAPES = [(1, 1, 1, 1), (1, 3, 1, 5), (2, 3, 4, 3), (1, 3, 5, 2), (8, 3, 7, 6), (2, 64, 5, 4),
          (1, 1, 9, 16), (1, 3, 150, 67)]
# (edge_weight, clamp): the deblurring/deraining recipe, the denoising recipe, and the others.
RECIPES = [(0.05, False), (0.0, True), (0.05, True), (0.0, False)]
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mprnet_small_float64.pt"


def inputs(shape, dtype=torch.float64, device="cpu", seed=0, stages=3):
    """Stage outputs spilling past [0, 1] (so clamp cuts some) and a target in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    outs = [torch.rand(shape, generator=g, dtype=torch.float64) * 1.4 - 0.2 for _ in range(stages)]
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    return [o.to(device=device, dtype=dtype) for o in outs], y.to(device=device, dtype=dtype)


def forward_backward(fn, outs, y, grad_outputs=True, grad_y=True):
    outs = [o.detach().requires_grad_(grad_outputs) for o in outs]
    y = y.detach().requires_grad_(grad_y)
    loss = fn(outs, y)
    loss.backward()
    return loss, [o.grad for o in outs], y.grad


def ours(edge_weight=0.05, clamp=False):
    return lambda outs, y: mprnet_loss(outs, y, 1e-3, edge_weight, clamp)


def reference(edge_weight=0.05, clamp=False):
    return ref.MPRNetLoss(edge_weight=edge_weight, clamp=clamp)


def check_against_float64(outs, y, tol, edge_weight=0.05, clamp=False, fn=None):
    """Ours in the inputs' dtype vs the reference in float64 on the same (rounded) values."""
    loss, grads, gy = forward_backward(fn or ours(edge_weight, clamp), outs, y)
    r_loss, r_grads, r_gy = forward_backward(reference(edge_weight, clamp), [o.double() for o in outs], y.double())
    assert loss.dtype == y.dtype and gy.dtype == y.dtype
    assert rel_err(loss, r_loss) < tol, ("loss", rel_err(loss, r_loss))
    for s, (a, b) in enumerate(zip(grads, r_grads)):
        assert a.dtype == y.dtype
        assert rel_err(a, b) < tol, (f"grad outputs[{s}]", rel_err(a, b))
    assert rel_err(gy, r_gy) < tol, ("grad y", rel_err(gy, r_gy))
    return loss, grads, gy


def triton_mprnet_loss(edge_weight=0.05, clamp=False):
    """The Triton path called directly (interpreted on a CPU machine), with the backward's
    scale applied by hand: its gradients are those of the summed terms."""

    def fn(outs, y):
        loss, grads, gy = kernel("mprnet_loss", "triton")(outs, y, 1e-3, edge_weight, clamp, True, True)
        return loss, [g / y.numel() for g in grads], gy / y.numel()

    return fn


# ------------------------------------------------------------------------------- the operator


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
def test_matches_reference_float64(shape, edge_weight, clamp):
    check_against_float64(*inputs(shape), 1e-12, edge_weight, clamp)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 3, 70, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES[:2])
def test_matches_reference_lower_precision(shape, dtype, edge_weight, clamp):
    check_against_float64(*inputs(shape, dtype), OP_TOLERANCE[dtype], edge_weight, clamp)


@pytest.mark.parametrize("stages", [1, 2, 3])
def test_stage_count(stages):
    check_against_float64(*inputs((2, 3, 6, 7), stages=stages), 1e-12)


def test_matches_sum_of_single_ops():
    """The fused op is the sum of the charbonnier_loss and edge_loss ops it stands for."""
    outs, y = inputs((2, 3, 9, 8))
    expected = sum(mprnet_kernels.ops.charbonnier_loss(o, y) for o in outs)
    expected = expected + 0.3 * sum(mprnet_kernels.ops.edge_loss(o, y) for o in outs)
    assert rel_err(mprnet_loss(outs, y, 1e-3, 0.3), expected) < 1e-14


@pytest.mark.parametrize("which", [(True, False), (False, True), (True, True)], ids=["outputs", "y", "both"])
@pytest.mark.parametrize("clamp", [False, True])
def test_gradient_to_outputs_only_y_only_both(which, clamp):
    outs, y = inputs((2, 3, 5, 4))
    loss, grads, gy = forward_backward(ours(0.05, clamp), outs, y, *which)
    _, r_grads, r_gy = forward_backward(reference(0.05, clamp), outs, y, *which)
    assert all((g is None) == (not which[0]) for g in grads)
    assert (gy is None) == (not which[1])
    if which[0]:
        assert max(rel_err(a, b) for a, b in zip(grads, r_grads)) < 1e-12
    if which[1]:
        assert rel_err(gy, r_gy) < 1e-12


def test_gradient_to_some_stages_only():
    outs, y = inputs((2, 3, 5, 4))
    outs = [o.requires_grad_(s != 1) for s, o in enumerate(outs)]
    mprnet_loss(outs, y).backward()
    r_outs = [o.detach().requires_grad_(s != 1) for s, o in enumerate(outs)]
    reference()(r_outs, y).backward()
    assert outs[1].grad is None
    for s in (0, 2):
        assert rel_err(outs[s].grad, r_outs[s].grad) < 1e-12


def test_clamp_gradient_at_bounds_follows_the_convention():
    """The library's clamp gradient (reference.clamp01) passes strictly inside (0, 1): none at
    exactly 0 or 1, outside, or at NaN; the target's gradient is never masked."""
    outs, y = inputs((1, 2, 4, 5))
    values = torch.tensor([0.0, 1.0, -0.5, 1.5, 0.25, 1e-300, 1 - 2**-53], dtype=torch.float64)
    outs[0].view(-1)[: values.numel()] = values
    outs[1].view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    check_against_float64(outs, y, 1e-12, 0.05, True)
    _, grads, _ = forward_backward(ours(0.0, True), outs, y)
    assert (grads[0].view(-1)[:4] == 0).all() and (grads[0].view(-1)[4:7] != 0).all()


def test_no_gradient_pass_without_grad():
    outs, y = inputs((2, 3, 5, 4))
    loss, grads, gy = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, False, False, False)
    assert all(g.numel() == 0 for g in grads) and gy.numel() == 0 and len(grads) == 3
    loss_g, grads_g, gy_g = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, False, True, True)
    assert torch.equal(loss, loss_g) and gy_g.shape == y.shape
    with torch.no_grad():
        assert torch.equal(mprnet_loss([o.requires_grad_() for o in outs], y), loss)


def test_direct_call_without_gradients_still_differentiates():
    outs, y = inputs((2, 3, 5, 4))
    outs = [o.requires_grad_() for o in outs]
    y.requires_grad_()
    torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, True, False, False)[0].backward()
    _, r_grads, r_gy = forward_backward(reference(0.05, True), outs, y)
    assert max(rel_err(o.grad, r) for o, r in zip(outs, r_grads)) < 1e-12
    assert rel_err(y.grad, r_gy) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layouts_mixed_across_stages(dtype):
    outs, y = inputs((2, 5, 6, 7), dtype)
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"], outs[2]]
    for y_layout in ("contiguous", "channels_last", "strided"):
        loss, grads, gy = check_against_float64(mixed, layouts(y)[y_layout], OP_TOLERANCE[dtype])
    _, grads, gy = torch.ops.mprnet.mprnet_loss(mixed, layouts(y)["channels_last"], 1e-3, 0.05, False, True, True)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    assert grads[1].is_contiguous() and grads[2].is_contiguous()
    assert gy.is_contiguous(memory_format=torch.channels_last)
    # The layout changes where values are read, not how they are summed or differentiated.
    _, plain, plain_y = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, False, True, True)
    assert all(torch.equal(a, b) for a, b in zip(grads, plain)) and torch.equal(gy, plain_y)


@pytest.mark.parametrize("edge_weight, clamp", [(0.05, False), (0.5, True)])
def test_gradcheck(edge_weight, clamp):
    outs, y = inputs((1, 2, 5, 6), stages=2)
    if clamp:  # keep clear of the kinks at 0 and 1, where finite differences straddle them
        outs = [torch.where((o - 0.5).abs().sub(0.5).abs() < 1e-3, o + 3e-3, o) for o in outs]
    outs = [o.requires_grad_() for o in outs]
    y.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, t: mprnet_loss([a, b], t, 1e-3, edge_weight, clamp), (*outs, y))


@pytest.mark.parametrize(
    "make",
    [
        lambda: inputs((2, 3, 5, 7)),
        lambda: inputs((1, 8, 4, 4), torch.float32, stages=1),
        lambda: [[layouts(o.float())["channels_last"] for o in inputs((2, 6, 3, 5))[0]],
                 layouts(inputs((2, 6, 3, 5))[1].float())["channels_last"]],
        lambda: [[layouts(o)["strided"] for o in inputs((2, 3, 2, 5))[0]], inputs((2, 3, 2, 5))[1]],
        lambda: inputs((3, 2, 4, 4), torch.bfloat16, stages=2),
    ],
)
@pytest.mark.parametrize("flags", [(True, True), (False, False)])
@pytest.mark.parametrize("edge_weight, clamp", [(0.05, False), (0.0, True)])
def test_opcheck(make, flags, edge_weight, clamp):
    outs, y = make()
    outs = [o.requires_grad_() for o in outs]
    y.requires_grad_()
    torch.library.opcheck(torch.ops.mprnet.mprnet_loss, (outs, y, 1e-3, edge_weight, clamp, *flags))


def test_torch_compile_fullgraph_module_with_backward():
    outs, y = inputs((2, 3, 8, 6), torch.float32)
    for module in (mprnet_kernels.MPRNetLoss(), mprnet_kernels.MPRNetLoss(edge_weight=0, clamp=True)):
        compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
        eager = forward_backward(module, outs, y)
        traced = forward_backward(compiled, outs, y)
        assert torch.equal(traced[0], eager[0]) and torch.equal(traced[2], eager[2])
        assert all(torch.equal(a, b) for a, b in zip(traced[1], eager[1]))


def test_double_backward_is_refused():
    outs, y = inputs((1, 2, 3, 3))
    outs = [o.requires_grad_() for o in outs]
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(mprnet_loss(outs, y), outs, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_across_runs_and_thread_counts(dtype):
    outs, y = inputs((2, 3, 150, 90), dtype)  # 18 (plane, band) blocks
    outs[1].view(-1)[5] = 2.0**62  # an order-sensitive sum: see test_charbonnier_loss
    assert_deterministic_across_thread_counts(
        lambda: torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, True, True, True), (1, 2, 2))


def test_empty():
    outs, y = inputs((0, 3, 4, 4))
    loss, grads, gy = forward_backward(ours(), outs, y)
    assert torch.isnan(loss) and torch.isnan(reference()(outs, y))
    assert grads[0].shape == gy.shape == y.shape


@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_propagate_like_reference(edge_weight, clamp, bad):
    outs, y = inputs((1, 2, 6, 7))
    outs[1][0, 1, 2, 3] = bad
    a_loss, a_grads, a_gy = forward_backward(ours(edge_weight, clamp), outs, y)
    b_loss, b_grads, b_gy = forward_backward(reference(edge_weight, clamp), outs, y)
    for name, a, b in [("loss", a_loss, b_loss), ("grad_y", a_gy, b_gy)] + [
            (f"outputs[{s}]", a, b) for s, (a, b) in enumerate(zip(a_grads, b_grads))]:
        assert_nonfinite_like(a, b, name, 1e-12)


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda o, y: ([o[0], o[1][:, :2], o[2]], y), ValueError, ["outputs[1] must have shape", "like y"]),
        (lambda o, y: ([o[0], o[1], o[2].float()], y), TypeError, ["outputs[2] must have dtype", "like y"]),
        (lambda o, y: (o, y.int()), TypeError, ["y must be float64, float32, float16 or bfloat16"]),
        (lambda o, y: ([o[0].to("meta")], y), ValueError, ["outputs[0] must be on cpu like y"]),
        (lambda o, y: ([], y), ValueError, ["outputs must hold at least one tensor"]),
        (lambda o, y: ([t[0] for t in o], y[0]), ValueError, ["y must be a 4-D (N, C, H, W) tensor"]),
    ],
)
def test_bad_input(args, error, words):
    outs, y = inputs((2, 3, 4, 4))
    with pytest.raises(error) as info:
        mprnet_loss(*args(outs, y))
    for word in words:
        assert word in str(info.value), str(info.value)


def test_bad_input_under_compile():
    outs, y = inputs((2, 3, 4, 4), torch.float32)
    fn = torch.compile(mprnet_loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=r"outputs\[1\] must have shape"):
        fn([outs[0], outs[1][:, :1]], y)


# --------------------------------------------------------------------------------- the module


def test_module_same_constructor_and_call_as_reference():
    outs, y = inputs((2, 3, 6, 5))
    for kwargs in ({}, dict(edge_weight=0, clamp=True), dict(edge_weight=0.2, eps=0.01)):
        mine, theirs = mprnet_kernels.MPRNetLoss(**kwargs), ref.MPRNetLoss(**kwargs)
        assert repr(mine) == repr(theirs)
        assert rel_err(mine(outs, y), theirs(outs, y)) < 1e-13
        assert rel_err(mine(tuple(outs), y), theirs(outs, y)) < 1e-13
        assert rel_err(mine(outs[0], y), theirs(outs[0], y)) < 1e-13  # one tensor, not a list
    with pytest.raises(ValueError, match="at least one output"):
        mprnet_kernels.MPRNetLoss()([], y)
    assert mprnet_kernels.MPRNetLoss is mprnet_kernels.nn.MPRNetLoss


def test_module_any_shape_without_edge_term():
    """Charbonnier alone (the denoising recipe) is elementwise: like the reference, any shape."""
    g = torch.Generator().manual_seed(3)
    outs = [torch.rand(4, 7, generator=g, dtype=torch.float64) for _ in range(2)]
    y = torch.rand(4, 7, generator=g, dtype=torch.float64)
    for kwargs in (dict(edge_weight=0), dict(edge_weight=0, clamp=True)):
        a = forward_backward(mprnet_kernels.MPRNetLoss(**kwargs), outs, y)
        b = forward_backward(ref.MPRNetLoss(**kwargs), outs, y)
        assert rel_err(a[0], b[0]) < 1e-13 and rel_err(a[2], b[2]) < 1e-12
        assert all(rel_err(p, q) < 1e-12 for p, q in zip(a[1], b[1]))


@pytest.mark.parametrize("low", HALF_TYPES)
def test_module_mixed_dtypes_promote_like_reference(low):
    outs, y = inputs((2, 3, 5, 6))
    outs = [o.to(low).requires_grad_() for o in outs]
    loss = mprnet_kernels.MPRNetLoss()(outs, y.float())
    assert loss.dtype == torch.float32
    loss.backward()
    r_outs = [o.detach().double().requires_grad_() for o in outs]
    r_loss = ref.MPRNetLoss()(r_outs, y.float().double())
    r_loss.backward()
    assert rel_err(loss, r_loss) < 1e-5
    for o, r in zip(outs, r_outs):
        assert o.grad.dtype == low and rel_err(o.grad, r.grad) < OP_TOLERANCE[low]


def test_module_under_autocast():
    """bfloat16 stage outputs from an autocast region against a float32 target."""
    torch.manual_seed(0)
    outs, y = inputs((2, 3, 8, 8), torch.float32)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds = [conv(o) for o in outs]
        assert preds[0].dtype == torch.bfloat16
        loss = mprnet_kernels.MPRNetLoss()(preds, y)
        expected = ref.MPRNetLoss()(preds, y)
    assert loss.dtype == expected.dtype == torch.float32
    # Ours computes in float32 from the bfloat16 predictions; the reference's edge-loss
    # convolutions run in bfloat16 under autocast (about 1e-5 apart, up to 1.1e-5 over 300 seeds).
    oracle = ref.MPRNetLoss()([p.double() for p in preds], y.double())
    assert rel_err(loss, oracle) < 1e-6
    assert rel_err(loss, expected) < 1e-4
    mine, theirs = grads_through(conv.weight, loss, expected)  # the conv's graph is shared
    assert rel_err(mine, theirs) < 1e-2


# ------------------------------------------------------------------------ the golden fixture


@pytest.fixture(scope="module")
def golden():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("name, make", [
    ("loss_total", lambda: mprnet_kernels.MPRNetLoss()),
    ("loss_charbonnier", lambda: mprnet_kernels.MPRNetLoss(edge_weight=0)),
    ("charbonnier_single", lambda: (lambda outs, y: mprnet_kernels.CharbonnierLoss()(outs[0], y))),
])
def test_fixture_losses(golden, name, make):
    assert rel_err(make()(golden["outputs"], golden["target"]), golden[name]) < 1e-12


def test_fixture_edge_loss_from_fused_op(golden):
    """loss_edge = (loss_total - loss_charbonnier) / 0.05, through the fused op's edge term."""
    outs, y = golden["outputs"], golden["target"]
    edge = (mprnet_loss(outs, y, 1e-3, 1.0) - mprnet_loss(outs, y, 1e-3, 0.0))
    assert rel_err(edge, golden["loss_edge"]) < 1e-11


def test_fixture_grad_of_outputs(golden):
    outs, y = golden["outputs"], golden["target"]
    _, grads, _ = forward_backward(mprnet_kernels.MPRNetLoss(), outs, y)
    _, r_grads, _ = forward_backward(ref.MPRNetLoss(), outs, y)
    assert max(rel_err(a, b) for a, b in zip(grads, r_grads)) < 1e-12


@pytest.mark.slow
def test_fixture_grad_input_through_reference_model(golden):
    """The fixture's grad_input (upstream model + upstream loss, float64), reproduced by the
    reference model with the fused loss at the end of the graph."""
    model = MPRNet(**golden["config"]).to(torch.float64)
    model.load_state_dict(golden["state_dict"])
    x = golden["input"].clone().requires_grad_()
    mprnet_kernels.MPRNetLoss()(model(x), golden["target"]).backward()
    assert rel_err(x.grad, golden["grad_input"]) < 1e-11


# ------------------------------------------------------------ the Triton path (interpreted)


# The edge term's Triton kernels are slow under the interpreter (25 taps per tile, four
# kernels per stage), so the cases with it use fewer stages and planes; the stage loop itself
# (running target gradient, partial sums per stage) is covered by the cases without it.
TRITON_CASES = [
    ((2, 3, 5, 4), 0.0, False, 3),
    ((1, 2, 37, 70), 0.0, True, 3),
    ((1, 1, 1, 1), 0.05, False, 2),
    ((1, 2, 7, 6), 0.05, True, 2),
]


@pytest.mark.parametrize("shape, edge_weight, clamp, stages", TRITON_CASES)
def test_triton_matches_reference(shape, edge_weight, clamp, stages):
    outs, y = inputs(shape, stages=stages)
    loss, grads, gy = triton_mprnet_loss(edge_weight, clamp)(outs, y)
    r_loss, r_grads, r_gy = forward_backward(reference(edge_weight, clamp), outs, y)
    assert rel_err(loss, r_loss) < 1e-12 and rel_err(gy, r_gy) < 1e-12
    assert max(rel_err(a, b) for a, b in zip(grads, r_grads)) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
def test_triton_lower_precision(dtype):
    outs, y = inputs((1, 2, 9, 6), dtype, stages=2)
    loss, grads, gy = triton_mprnet_loss(0.05, True)(outs, y)
    r_loss, r_grads, r_gy = forward_backward(reference(0.05, True), [o.double() for o in outs], y.double())
    # bfloat16 under the interpreter: see test_charbonnier_loss.test_triton_matches_reference.
    tol = OP_TOLERANCE[dtype]
    assert loss.dtype == gy.dtype == dtype
    assert rel_err(loss, r_loss) < tol and rel_err(gy, r_gy) < tol
    assert max(rel_err(a, b) for a, b in zip(grads, r_grads)) < tol


def test_triton_layouts_flags_and_clamp_bounds():
    outs, y = inputs((1, 3, 6, 5), torch.float32)
    outs[0].view(-1)[:4] = torch.tensor([0.0, 1.0, -1.0, 2.0])
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"], outs[2]]
    fn = kernel("mprnet_loss", "triton")
    loss, grads, gy = fn(mixed, layouts(y)["channels_last"], 1e-3, 0.0, True, True, True)
    r_loss, r_grads, r_gy = forward_backward(reference(0.0, True), outs, y)
    assert rel_err(loss, r_loss) < 1e-5 and rel_err(gy / y.numel(), r_gy) < 1e-5
    assert max(rel_err(a / y.numel(), b) for a, b in zip(grads, r_grads)) < 1e-5
    assert grads[0].is_contiguous(memory_format=torch.channels_last) and grads[1].is_contiguous()
    assert (grads[0].reshape(-1)[:4] == 0).all()
    no_grad = fn(mixed, layouts(y)["channels_last"], 1e-3, 0.0, True, False, False)
    assert torch.equal(no_grad[0], loss) and all(g.numel() == 0 for g in no_grad[1]) and no_grad[2].numel() == 0
    with pytest.raises(ValueError, match=r"outputs\[2\] must have shape"):
        fn([outs[0], outs[1], outs[2][:, :1]], y, 1e-3, 0.05, True, True, True)


def test_triton_edge_term_with_mixed_layouts():
    outs, y = inputs((1, 2, 6, 5), stages=2)
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"]]
    loss, grads, gy = triton_mprnet_loss(0.05, False)(mixed, layouts(y)["channels_last"])
    r_loss, r_grads, r_gy = forward_backward(reference(0.05, False), outs, y)
    assert rel_err(loss, r_loss) < 1e-12 and rel_err(gy, r_gy) < 1e-12
    assert max(rel_err(a, b) for a, b in zip(grads, r_grads)) < 1e-12


# ------------------------------------------------------------------------------------- on GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("edge_weight, clamp", RECIPES[:2])
def test_cuda_matches_float64(dtype, edge_weight, clamp):
    outs, y = inputs((4, 3, 67, 129), dtype, "cuda")
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"], outs[2]]
    check_against_float64(mixed, y, OP_TOLERANCE[dtype], edge_weight, clamp)


@pytest.mark.gpu
def test_cuda_deterministic_opcheck_and_device_mismatch():
    outs, y = inputs((16, 3, 256, 256), torch.float32, "cuda")
    first = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, False, True, True)
    second = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, False, True, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1]))
    small = [o[:2, :, :5, :7].clone().requires_grad_() for o in outs]
    args = (small, y[:2, :, :5, :7].clone(), 1e-3, 0.05, True, True, False)
    torch.library.opcheck(torch.ops.mprnet.mprnet_loss, args)
    with pytest.raises((ValueError, RuntimeError), match="y"):
        mprnet_loss(outs, y.cpu())


# ------------------------------------------------ GPU: each CUDA backend against float64

# Batch 1 and 8, channels 1, 3 and 64, odd and even sizes, widths over the CUDA C++ kernel's
# 128-column strips and heights over several of its row chunks; H and W of 1 to 5 separately.
GPU_SHAPES = [(8, 3, 67, 45), (1, 64, 33, 130), (1, 1, 300, 257)]
GPU_SMALL_SIZES = [(h, w) for h in range(1, 6) for w in range(1, 6)]


def on_backend(backend, fn, *args):
    """fn(*args) with the CUDA dispatch of mprnet_loss on `backend`; skips when it is missing."""
    if backend not in _backend.available_backends("mprnet_loss"):
        pytest.skip(f"no {backend} backend for mprnet_loss in this install")
    with _backend.using_cuda_backend("mprnet_loss", backend):
        return fn(*args)


def check_backend(backend, outs, y, tol, edge_weight, clamp):
    """Loss and gradients (through autograd), then the loss alone (no gradient written)."""
    on_backend(backend, check_against_float64, outs, y, tol, edge_weight, clamp)
    loss, grads, gy = on_backend(backend, torch.ops.mprnet.mprnet_loss, outs, y, 1e-3, edge_weight, clamp,
                                 False, False)
    assert all(g.numel() == 0 for g in grads) and gy.numel() == 0 and loss.device == y.device
    expected = reference(edge_weight, clamp)([o.double() for o in outs], y.double())
    assert rel_err(loss, expected) < tol, ("loss without gradients", rel_err(loss, expected))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_backends_match_float64(backend, dtype, edge_weight, clamp, shape):
    outs, y = inputs(shape, dtype, "cuda")
    # Stage outputs in all three layouts, the target plain or channels_last.
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"], outs[2]]
    y_in = layouts(y)["channels_last"] if shape[0] % 2 == 0 else y
    check_backend(backend, mixed, y_in, OP_TOLERANCE[dtype], edge_weight, clamp)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("h, w", GPU_SMALL_SIZES)
def test_cuda_backends_small_sizes_float64(backend, h, w):
    check_backend(backend, *inputs((2, 3, h, w), torch.float64, "cuda"), 1e-12, 0.05, True)


@pytest.mark.gpu
@pytest.mark.parametrize("stages", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("edge_weight", [0.05, 0.0])
def test_cuda_cpp_stage_counts(stages, dtype, edge_weight):
    """More stage outputs than one launch takes (3 in float32, 2 in float64 within the shared
    memory budget): groups of launches, the target's gradient carried between them."""
    outs, y = inputs((2, 3, 40, 150), dtype, "cuda", stages=stages)
    on_backend("cuda", check_against_float64, outs, y, OP_TOLERANCE[dtype], edge_weight, True)


@pytest.mark.gpu
@pytest.mark.parametrize("flags", [(True, False), (False, True)], ids=["outputs", "y"])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES[:2])
def test_cuda_cpp_gradient_flags(flags, edge_weight, clamp):
    outs, y = inputs((2, 3, 37, 140), torch.float32, "cuda")
    op = torch.ops.mprnet.mprnet_loss
    loss, grads, gy = on_backend("cuda", op, outs, y, 1e-3, edge_weight, clamp, *flags)
    both = on_backend("cuda", op, outs, y, 1e-3, edge_weight, clamp, True, True)
    assert torch.equal(loss, both[0])
    if flags[0]:
        assert gy.numel() == 0 and all(torch.equal(a, b) for a, b in zip(grads, both[1]))
    else:
        assert all(g.numel() == 0 for g in grads) and torch.equal(gy, both[2])


@pytest.mark.gpu
@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
def test_cuda_cpp_nan_inf_and_clamp_bounds(edge_weight, clamp):
    outs, y = inputs((1, 2, 37, 140))
    outs[0].view(-1)[:4] = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=torch.float64)
    outs[1][0, 1, 20, 130] = float("nan")
    outs[2][0, 0, 0, 127] = float("inf")
    expected = forward_backward(reference(edge_weight, clamp), outs, y)
    ours = on_backend("cuda", forward_backward, lambda o, t: mprnet_loss(o, t, 1e-3, edge_weight, clamp),
                      [o.cuda() for o in outs], y.cuda())
    assert_nonfinite_like(ours[0].cpu(), expected[0], "loss")
    assert_nonfinite_like(ours[2].cpu(), expected[2], "grad_y", 1e-12)
    for s, (a, b) in enumerate(zip(ours[1], expected[1])):
        assert_nonfinite_like(a.cpu(), b, f"outputs[{s}]", 1e-12)
    if clamp:
        assert (ours[1][0].reshape(-1)[:4] == 0).all()


@pytest.mark.gpu
def test_cuda_backends_deterministic_and_agree():
    outs, y = inputs((16, 3, 256, 256), torch.float32, "cuda")
    op = torch.ops.mprnet.mprnet_loss
    for backend in ("cuda", "triton"):
        first = on_backend(backend, op, outs, y, 1e-3, 0.05, True, True, True)
        second = on_backend(backend, op, outs, y, 1e-3, 0.05, True, True, True)
        assert torch.equal(first[0], second[0]) and torch.equal(first[2], second[2]), backend
        assert all(torch.equal(a, b) for a, b in zip(first[1], second[1])), backend
    outs, y = inputs((2, 3, 70, 150), torch.float64, "cuda")
    ours = on_backend("cuda", op, outs, y, 1e-3, 0.05, True, True, True)
    triton = on_backend("triton", op, outs, y, 1e-3, 0.05, True, True, True)
    from native_ext import loss_tile_host

    host = loss_tile_host().mprnet_loss_tiles([o.cpu() for o in outs], y.cpu(), 1e-3, 0.05, True, True, True, 128, 0, 3,
                                         False)
    for other in (triton, host):
        assert rel_err(ours[0], other[0].to(y.device)) < 1e-13
        assert rel_err(ours[2], other[2].to(y.device)) < 1e-13
        assert all(rel_err(a, b.to(y.device)) < 1e-13 for a, b in zip(ours[1], other[1]))
