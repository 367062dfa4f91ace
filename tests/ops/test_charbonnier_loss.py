"""mprnet::charbonnier_loss against the reference Charbonnier loss in float64: values and
gradients, sizes, layouts, dtypes, determinism, opcheck, gradcheck, torch.compile, NaN/Inf, bad
input, the module (autocast included), and the Triton kernel (interpreted on CPU)."""

from functools import partial

import pytest
import torch

import helpers
import mprnet_kernels
from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like,
                     assert_raises_mentioning, forward_backward, grads_through, layouts, opcheck_inputs,
                     rel_err, triton_loss)
from mprnet_kernels.ops import charbonnier_loss
from mprnet_kernels.ops._backend import kernel
from mprnet_kernels.reference import losses as ref

HALF_TYPES = [torch.bfloat16, torch.float16]
ALL_TYPES = [torch.float64, torch.float32, *HALF_TYPES]
# Odd and even H and W, H or W from 1 to 5, batch 1 and 8, channels 1, 3 and 64, and sizes
# past one CPU reduction block (2^16 elements) and one Triton block (4096).
SHAPES = [(1, 1, 1, 1), (1, 3, 1, 5), (2, 3, 4, 3), (1, 3, 2, 5), (8, 3, 7, 6), (2, 64, 5, 4),
          (8, 1, 9, 16), (2, 3, 129, 131)]
# The op itself takes any number of dimensions, like the reference.
OTHER_RANKS = [(), (7,), (3, 1000), (2, 3, 4, 5, 6)]


inputs = partial(helpers.seeded_randn, 2)  # (x, y)
NAMES = ("loss", "grad_x", "grad_y")


def check_against_float64(x, y, tol, fn=charbonnier_loss):
    """Our op in the inputs' dtype vs the reference in float64 on the same (rounded) values."""
    return helpers.check_against_float64(fn, ref.charbonnier_loss, (x, y), tol, NAMES)


triton_charbonnier = partial(triton_loss, "charbonnier_loss")


# ------------------------------------------------------------------------------- the operator


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ALL_TYPES)
def test_matches_reference(shape, dtype):
    check_against_float64(*inputs(shape, dtype), OP_TOLERANCE[dtype])


@pytest.mark.parametrize("shape", OTHER_RANKS)
def test_any_rank(shape):
    check_against_float64(*inputs(shape), 1e-12)


@pytest.mark.parametrize("eps", [1e-3, 0.5, 1e-6])
def test_eps(eps):
    x, y = inputs((2, 3, 6, 5))
    y = x + 1e-3 * y  # differences of the order of eps, where eps matters
    fn = lambda a, b: charbonnier_loss(a, b, eps)  # noqa: E731
    ours = forward_backward(fn, x, y)
    expected = forward_backward(lambda a, b: ref.charbonnier_loss(a, b, eps), x, y)
    for a, b in zip(ours, expected):
        assert rel_err(a, b) < 1e-13


@pytest.mark.parametrize("which", [(True, False), (False, True), (True, True)], ids=["x", "y", "both"])
def test_gradient_to_x_only_y_only_both(which):
    x, y = inputs((2, 3, 5, 4))
    _, gx, gy = forward_backward(charbonnier_loss, x, y, which=which)
    _, rx, ry = forward_backward(ref.charbonnier_loss, x, y, which=which)
    for ours, expected, wanted in ((gx, rx, which[0]), (gy, ry, which[1])):
        assert (ours is None) == (not wanted)
        if wanted:
            assert rel_err(ours, expected) < 1e-12


def test_no_gradient_pass_without_grad():
    """compute_grad follows torch.is_grad_enabled() and requires_grad; without it the op
    writes no gradient (an empty tensor) and the loss is bitwise the same."""
    x, y = inputs((2, 3, 5, 4))
    loss, grad = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, False)
    assert grad.numel() == 0
    loss_g, grad_g = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, True)
    assert torch.equal(loss, loss_g) and grad_g.shape == x.shape
    with torch.no_grad():
        assert torch.equal(charbonnier_loss(x.requires_grad_(), y), loss)


def test_direct_call_without_compute_grad_still_differentiates():
    x, y = (t.requires_grad_() for t in inputs((2, 3, 5, 4)))
    loss, _ = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, False)
    loss.backward()
    _, rx, ry = forward_backward(ref.charbonnier_loss, x, y)
    assert rel_err(x.grad, rx) < 1e-12 and rel_err(y.grad, ry) < 1e-12


def test_grad_output_scales_gradient():
    x, y = (t.requires_grad_() for t in inputs((2, 3, 5, 4)))
    (charbonnier_loss(x, y) * -3.5).backward()
    xr, yr = (t.detach().requires_grad_() for t in (x, y))
    (ref.charbonnier_loss(xr, yr) * -3.5).backward()
    assert rel_err(x.grad, xr.grad) < 1e-12 and rel_err(y.grad, yr.grad) < 1e-12


def test_float16_gradient_keeps_its_bits_under_loss_scaling():
    """The saved per-element gradient is unscaled (in [-1, 1]); dividing by numel in the forward
    would make a float16 dL/dx over 2^20 elements (about 1e-6) subnormal, with a few bits left,
    before the loss scale (GradScaler's) lifts it back to normal range."""
    x, y = inputs((4, 4, 256, 256), torch.float16)
    scale = 2.0**10
    x.requires_grad_()
    (charbonnier_loss(x, y) * scale).backward()
    xr = x.detach().double().requires_grad_()
    (ref.charbonnier_loss(xr, y.double()) * scale).backward()
    assert rel_err(x.grad, xr.grad) < 2e-3


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layouts(layout, dtype):
    base = inputs((2, 5, 6, 7), dtype)
    x, y = (layouts(t)[layout] for t in base)
    _, gx, _ = check_against_float64(x, y, OP_TOLERANCE[dtype])
    loss, grad = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, True)
    loss0, grad0 = torch.ops.mprnet.charbonnier_loss(*base, 1e-3, True)
    if layout != "channels_last":  # the same order of summation: the same bits
        assert torch.equal(loss, loss0)
    assert torch.equal(grad, grad0)
    expect_cl = layout == "channels_last"
    assert grad.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


def test_mixed_layouts():
    x, y = inputs((2, 4, 5, 3))
    loss = charbonnier_loss(layouts(x)["channels_last"], layouts(y)["strided"])
    assert rel_err(loss, ref.charbonnier_loss(x, y)) < 1e-13


def test_gradcheck():
    x, y = (t.requires_grad_() for t in inputs((2, 3, 4, 5)))
    assert torch.autograd.gradcheck(charbonnier_loss, (x, y))
    # The gradient of y alone, and a non-contiguous x.
    assert torch.autograd.gradcheck(lambda b: charbonnier_loss(layouts(x.detach())["strided"], b), (y,))


# Not the empty input: its loss is NaN, which opcheck's comparisons never accept.
@pytest.mark.parametrize("make", opcheck_inputs(inputs) + [lambda: inputs((5, 7))])
@pytest.mark.parametrize("compute_grad", [True, False])
def test_opcheck(make, compute_grad):
    x, y = (t.requires_grad_() for t in make())
    torch.library.opcheck(torch.ops.mprnet.charbonnier_loss, (x, y, 1e-3, compute_grad))


def test_torch_compile_fullgraph_module_with_backward():
    x, y = (t.float() for t in inputs((2, 3, 6, 6)))
    module = mprnet_kernels.CharbonnierLoss()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    eager = forward_backward(module, x, y)
    traced = forward_backward(compiled, x, y)
    for a, b in zip(traced, eager):
        assert torch.equal(a, b)
    with torch.no_grad():  # the no-grad graph (no gradient pass) too
        assert torch.equal(compiled(x, y), eager[0])


def test_double_backward_is_refused():
    x, y = (t.requires_grad_() for t in inputs((1, 2, 3, 3)))
    (grad,) = torch.autograd.grad(charbonnier_loss(x, y), x, create_graph=False)
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(charbonnier_loss(x, y), x, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_deterministic_across_runs_and_thread_counts(dtype):
    x, y = inputs((3, 3, 200, 190), dtype)  # 6 reduction blocks
    # One huge term makes the sum depend on its order (the small terms are lost when added to
    # it one by one but not when summed first), so a partition that followed the thread count
    # would show; with ordinary terms the final rounding would mostly hide it.
    x.view(-1)[5] = 2.0**62
    assert_deterministic_across_thread_counts(lambda: torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, True), (1, 2, 2))


def test_empty():
    x, y = (t.requires_grad_() for t in inputs((0, 3, 4, 4)))
    loss = charbonnier_loss(x, y)
    assert torch.isnan(loss) and torch.isnan(ref.charbonnier_loss(x, y))
    loss.backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_inf_propagate_like_reference(dtype, bad):
    x, y = inputs((1, 2, 3, 4), dtype)
    x[0, 0, 1, 2] = bad
    ours = forward_backward(charbonnier_loss, x, y)
    expected = forward_backward(ref.charbonnier_loss, x.double(), y.double())
    for name, a, b in zip(NAMES, ours, expected):
        assert_nonfinite_like(a, b, name, OP_TOLERANCE[dtype])


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda a, b: (a, b[:, :2]), ValueError, ["y must have shape", "like x"]),
        (lambda a, b: (a, b.float()), TypeError, ["y must have dtype", "torch.float64", "float"]),
        (lambda a, b: (a.int(), b), TypeError, ["x must be float64, float32, float16 or bfloat16"]),
        (lambda a, b: (a, b[0]), ValueError, ["y must have shape"]),
        (lambda a, b: (a, b.to("meta")), ValueError, ["y must be on cpu like x"]),
    ],
)
def test_bad_input(args, error, words):
    x, y = inputs((2, 3, 4, 4))
    assert_raises_mentioning(error, words, charbonnier_loss, *args(x, y))


def test_bad_input_under_compile():
    x, y = (t.float() for t in inputs((2, 3, 4, 4)))
    fn = torch.compile(charbonnier_loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="y must have shape"):
        fn(x, y[:, :1])


# --------------------------------------------------------------------------------- the module


def test_module_same_constructor_and_call_as_reference():
    x, y = inputs((2, 3, 5, 6))
    for eps in (1e-3, 0.1):
        ours, theirs = mprnet_kernels.CharbonnierLoss(eps), ref.CharbonnierLoss(eps)
        assert repr(ours) == repr(theirs)
        assert rel_err(ours(x, y), theirs(x, y)) < 1e-13
    assert mprnet_kernels.CharbonnierLoss is mprnet_kernels.nn.CharbonnierLoss


@pytest.mark.parametrize("low", HALF_TYPES)
def test_module_mixed_dtypes_promote_like_reference(low):
    x, y = inputs((2, 3, 5, 6))
    x_low = x.to(low).requires_grad_()
    loss = mprnet_kernels.CharbonnierLoss()(x_low, y.float())
    assert loss.dtype == torch.float32  # the promoted dtype, as `x - y` in the reference
    loss.backward()
    assert x_low.grad.dtype == low
    xr = x_low.detach().double().requires_grad_()
    ref.charbonnier_loss(xr, y.float().double()).backward()
    assert rel_err(loss, ref.charbonnier_loss(xr, y.float().double())) < 1e-5
    assert rel_err(x_low.grad, xr.grad) < OP_TOLERANCE[low]


def test_module_under_autocast():
    """A bfloat16 prediction from an autocast region against a float32 target."""
    x, y = inputs((2, 3, 8, 8))
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = conv(x.float())
        assert pred.dtype == torch.bfloat16
        loss = mprnet_kernels.CharbonnierLoss()(pred, y.float())
        expected = ref.CharbonnierLoss()(pred, y.float())
    assert loss.dtype == expected.dtype == torch.float32
    assert rel_err(loss, expected) < 1e-5
    ours, theirs = grads_through(conv.weight, loss, expected)  # the conv's graph is shared
    assert rel_err(ours, theirs) < 1e-2


# ------------------------------------------------------------ the Triton kernel (interpreted)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 4), (1, 3, 41, 103), (7,)])
@pytest.mark.parametrize("dtype", ALL_TYPES)
def test_triton_matches_reference(shape, dtype):
    x, y = inputs(shape, dtype)
    loss, grad = triton_charbonnier(x, y)
    expected = forward_backward(ref.charbonnier_loss, x.double(), y.double())
    assert loss.dtype == grad.dtype == dtype
    assert rel_err(loss, expected[0]) < OP_TOLERANCE[dtype]
    # The interpreter narrows float32 to bfloat16 by truncation where GPUs round to nearest, so
    # its bfloat16 gradient is up to 2^-8 off: still inside the 1e-2 bfloat16 tolerance.
    assert rel_err(grad, expected[1]) < OP_TOLERANCE[dtype]


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_triton_layouts_and_no_grad(layout):
    base = inputs((2, 3, 5, 6), torch.float32)
    x, y = (layouts(t)[layout] for t in base)
    loss, grad = kernel("charbonnier_loss", "triton")(x, y, 1e-3, True)
    loss0, grad0 = kernel("charbonnier_loss", "triton")(*base, 1e-3, False)
    assert torch.equal(loss, loss0) and grad0.numel() == 0
    assert rel_err(grad / x.numel(), forward_backward(ref.charbonnier_loss, *base)[1]) < 1e-5
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    assert grad.is_contiguous(memory_format=fmt)


def test_triton_float64_eps_is_exact():
    """Triton passes floats as float32; eps^2 travels as a float32 pair so float64 stays exact."""
    x, y = inputs((1, 2, 3, 5))
    y = x + 1e-4 * y
    loss, grad = kernel("charbonnier_loss", "triton")(x, y, 1e-3, True)
    expected = forward_backward(ref.charbonnier_loss, x, y)
    assert rel_err(loss, expected[0]) < 1e-14
    assert rel_err(grad / x.numel(), expected[1]) < 1e-14


def test_triton_bad_input_and_empty():
    x, y = inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match="y must have shape"):
        kernel("charbonnier_loss", "triton")(x, y[:, :2], 1e-3, True)
    loss, grad = kernel("charbonnier_loss", "triton")(x[:0], y[:0], 1e-3, True)
    assert torch.isnan(loss) and grad.shape == (0, 3, 4, 4)


# ------------------------------------------------------------------------------------- on GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_float64(dtype, layout):
    base = inputs((4, 3, 67, 129), dtype, "cuda")
    x, y = (layouts(t)[layout] for t in base)
    check_against_float64(x, y, OP_TOLERANCE[dtype])


@pytest.mark.gpu
def test_cuda_deterministic_opcheck_and_device_mismatch():
    x, y = (t.float().cuda() for t in inputs((16, 3, 256, 256)))
    first = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, True)
    second = torch.ops.mprnet.charbonnier_loss(x, y, 1e-3, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    small = [t[:2, :, :5, :7].clone().requires_grad_() for t in (x, y)]
    torch.library.opcheck(torch.ops.mprnet.charbonnier_loss, (*small, 1e-3, True))
    with pytest.raises((ValueError, RuntimeError), match="y"):
        charbonnier_loss(x, y.cpu())
