"""mprnet::edge_loss against the reference edge loss in float64: values and gradients, every
small size (the adjoint's border fold), layouts, dtypes, determinism, opcheck, gradcheck,
torch.compile, NaN/Inf, bad input, the module, and the Triton kernels (interpreted on CPU)."""

import itertools
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import helpers
import mprnet_kernels
from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like,
                     assert_raises_mentioning, forward_backward, layouts, opcheck_inputs, rel_err,
                     triton_loss)
from mprnet_kernels.ops import edge_loss
from mprnet_kernels.ops import _backend
from mprnet_kernels.ops._backend import kernel
from mprnet_kernels.reference import losses as ref

HALF_TYPES = [torch.bfloat16, torch.float16]
ALL_TYPES = [torch.float64, torch.float32, *HALF_TYPES]
SMALL_SIZES = list(itertools.product(range(1, 7), range(1, 7)))  # below and around the stencil
# Odd and even sizes, batch 1 and 8, channels 1, 3 and 64, H > 64 (several bands per plane) and
# W > 1024 (several summation chunks per row).
SHAPES = [(1, 3, 5, 7), (8, 3, 16, 17), (1, 64, 9, 8), (2, 1, 33, 30), (1, 3, 150, 67), (1, 1, 6, 1030)]
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mprnet_small_float64.pt"


inputs = partial(helpers.seeded_randn, 2)  # (x, y)
NAMES = ("loss", "grad_x", "grad_y")


def check_against_float64(x, y, tol, fn=edge_loss):
    """Our op in the inputs' dtype vs the reference in float64 on the same (rounded) values."""
    return helpers.check_against_float64(fn, ref.edge_loss, (x, y), tol, NAMES)


triton_edge_loss = partial(triton_loss, "edge_loss")


# ------------------------------------------------------------------------------- the operator


def separable_blur(z):
    """G as two 1-D passes, each replicate-padding its own axis: what the kernels compute."""
    from mprnet_kernels.ops.triton.edge_loss import GAUSS_TAPS  # the taps the Triton kernels load

    g = torch.tensor(GAUSS_TAPS, dtype=z.dtype)
    c = z.shape[1]
    cols = F.conv2d(F.pad(z, (2, 2, 0, 0), mode="replicate"), g.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(F.pad(cols, (0, 0, 2, 2), mode="replicate"), g.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


@pytest.mark.parametrize("h, w", SMALL_SIZES + [(9, 14), (17, 8)])
def test_separable_passes_equal_2d_conv(h, w):
    # Replicate padding of the plane then the 5x5 outer(g, g) equals padding and filtering the
    # columns, then the rows; the corners too, where 2-D padding copies the corner pixel.
    z = inputs((2, 3, h, w))[0]
    two_d = ref._gauss_blur(z, ref._gauss_kernel(3, z))
    assert rel_err(separable_blur(z), two_d) < 1e-15


def w_of(d, eps=1e-3):
    lap = ref.laplacian(d)
    return lap / torch.sqrt(lap * lap + eps * eps)


@pytest.mark.parametrize("h, w", SMALL_SIZES + [(7, 11), (70, 9)])
def test_backward_is_the_adjoint_of_lap(h, w):
    # The op's gradient is lap^T(w(d)). For any a, <lap(a), w> must equal <a, lap^T(w)>: this
    # tests lap^T as a linear map (border fold included), not only through the loss.
    # eps = 1 keeps w a well-conditioned function of lap (dw/dlap <= 1/eps), so w_of(d) and the
    # kernel's own w agree to rounding; the tolerance is relative to the sum of |terms|.
    a, d = inputs((2, 2, h, w))
    _, grad = torch.ops.mprnet.edge_loss(d, torch.zeros_like(d), 1.0, True)
    w_d = w_of(d, eps=1.0)
    lhs = torch.sum(ref.laplacian(a) * w_d)
    rhs = torch.sum(a * grad)
    scale = float(torch.sum((ref.laplacian(a) * w_d).abs()) + torch.sum((a * grad).abs()))
    assert abs(float(lhs - rhs)) <= 1e-14 * scale, (float(lhs), float(rhs))


# ------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ALL_TYPES)
def test_matches_reference(shape, dtype):
    x, y = inputs(shape, dtype)
    check_against_float64(x, y, OP_TOLERANCE[dtype])


@pytest.mark.parametrize("h, w", SMALL_SIZES)
def test_every_small_size_float64(h, w):
    x, y = inputs((1, 2, h, w))
    check_against_float64(x, y, 1e-12)


@pytest.mark.parametrize("h, w", SMALL_SIZES)
def test_gradcheck_small_sizes(h, w):
    x, y = (t.requires_grad_() for t in inputs((1, 2, h, w)))
    assert torch.autograd.gradcheck(edge_loss, (x, y))


def test_gradcheck_with_several_bands():
    x, y = (t.requires_grad_() for t in inputs((1, 1, 131, 3)))
    assert torch.autograd.gradcheck(edge_loss, (x, y), fast_mode=True)


@pytest.mark.parametrize("which", [(True, False), (False, True), (True, True)])
def test_gradient_to_x_only_y_only_or_both(which):
    x, y = inputs((2, 3, 9, 10))
    _, gx, gy = forward_backward(edge_loss, x, y, which=which)
    _, rx, ry = forward_backward(ref.edge_loss, x, y, which=which)
    for ours, expected in ((gx, rx), (gy, ry)):
        assert (ours is None) == (expected is None)
        if ours is not None:
            assert rel_err(ours, expected) < 1e-12


def test_eps_and_grad_output_scale():
    x, y = (t.requires_grad_() for t in inputs((2, 3, 8, 11)))
    for eps in (1e-3, 0.1, 2.0):
        assert rel_err(edge_loss(x, y, eps), ref.edge_loss(x, y, eps)) < 1e-13
    (3.5 * edge_loss(x, y, 0.1)).backward()
    rx, ry = torch.autograd.grad(3.5 * ref.edge_loss(x, y, 0.1), (x, y))
    assert rel_err(x.grad, rx) < 1e-12 and rel_err(y.grad, ry) < 1e-12


def test_golden_fixture_edge_single():
    data = torch.load(FIXTURE, weights_only=True)
    # outputs[0] is the stage-3 output (upstream returns the stages last to first).
    assert rel_err(edge_loss(data["outputs"][0], data["target"]), data["edge_single"]) < 1e-12


def test_compute_grad_false_still_differentiates():
    # A direct torch.ops call with compute_grad=False: backward recomputes the gradient.
    x, y = (t.requires_grad_() for t in inputs((1, 3, 7, 6)))
    loss, grad = torch.ops.mprnet.edge_loss(x, y, 1e-3, False)
    assert grad.numel() == 0
    loss.backward()
    rx, ry = torch.autograd.grad(ref.edge_loss(x, y), (x, y))
    assert rel_err(x.grad, rx) < 1e-12 and rel_err(y.grad, ry) < 1e-12


def test_no_gradient_work_without_grad():
    x, y = (t.requires_grad_() for t in inputs((1, 3, 7, 6)))
    with torch.no_grad():
        loss = edge_loss(x, y)
    assert not loss.requires_grad
    assert torch.ops.mprnet.edge_loss(x.detach(), y.detach(), 1e-3, False)[1].numel() == 0


def test_double_backward_is_refused():
    x, y = (t.requires_grad_() for t in inputs((1, 1, 5, 5)))
    torch.autograd.grad(edge_loss(x, y), (x,))
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(edge_loss(x, y), (x,), create_graph=True)


# ------------------------------------------------------------------------- layouts and threads


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layouts_give_same_values(layout, dtype):
    base = inputs((2, 5, 6, 7), dtype)
    x, y = (layouts(t)[layout] for t in base)
    check_against_float64(x, y, OP_TOLERANCE[dtype])
    loss, grad = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    loss0, grad0 = torch.ops.mprnet.edge_loss(*base, 1e-3, True)
    assert torch.equal(loss, loss0) and torch.equal(grad, grad0)
    expect_cl = layout == "channels_last"
    assert grad.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


def test_mixed_layouts():
    x, y = inputs((2, 4, 5, 9))
    loss, grad = torch.ops.mprnet.edge_loss(layouts(x)["channels_last"], layouts(y)["strided"], 1e-3, True)
    loss0, grad0 = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    assert torch.equal(loss, loss0) and torch.equal(grad, grad0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_deterministic_across_runs_and_thread_counts(dtype):
    x, y = inputs((2, 3, 150, 41), dtype)
    assert_deterministic_across_thread_counts(lambda: torch.ops.mprnet.edge_loss(x, y, 1e-3, True), (1, 2, 1, 2))


# ------------------------------------------------------------------ dispatcher and compilation


@pytest.mark.parametrize("make", opcheck_inputs(inputs) + [lambda: inputs((1, 1, 1, 2))])
@pytest.mark.parametrize("compute_grad", [True, False])
def test_opcheck(make, compute_grad):
    x, y = (t.requires_grad_() for t in make())
    torch.library.opcheck(torch.ops.mprnet.edge_loss, (x, y, 1e-3, compute_grad))


def test_torch_compile_fullgraph_forward_and_backward():
    x, y = (t.float() for t in inputs((2, 3, 10, 9)))
    module = mprnet_kernels.EdgeLoss()
    fn = torch.compile(lambda a, b: module(a, b) * 2 + 1, fullgraph=True, backend="aot_eager")
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = fn(xc, y)
    out.backward()
    expected = module(xe, y) * 2 + 1
    expected.backward()
    assert torch.equal(out, expected) and torch.equal(xc.grad, xe.grad)
    with torch.no_grad():
        assert torch.equal(fn(x, y), module(x, y) * 2 + 1)


def test_empty_batch_gives_nan_like_reference():
    x, y = inputs((0, 3, 4, 4))
    loss, grad = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    assert torch.isnan(loss) and torch.isnan(ref.edge_loss(x, y))
    assert grad.shape == (0, 3, 4, 4)


@pytest.mark.parametrize(
    "poison",
    [
        {"x": [((0, 0, 0, 0), float("nan"))]},
        {"y": [((0, 1, 3, 4), float("inf"))]},
        {"x": [((0, 2, 5, 6), -float("inf"))], "y": [((0, 0, 1, 1), float("inf"))]},
    ],
)
def test_nan_and_inf_propagate_like_reference(poison):
    x, y = inputs((1, 3, 9, 8))
    for name, points in poison.items():
        for index, value in points:
            (x if name == "x" else y)[index] = value
    expected = forward_backward(ref.edge_loss, x, y)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        ours = forward_backward(edge_loss, x.to(dtype), y.to(dtype))
        for name, a, b in zip(NAMES, ours, expected):
            assert_nonfinite_like(a, b, (dtype, name))


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda a, b: (a, b[:, :2]), ValueError, ["y must have shape", "like x"]),
        (lambda a, b: (a, b.float()), TypeError, ["y must have dtype", "torch.float64"]),
        (lambda a, b: (a.int(), b), TypeError, ["x must be float64, float32, float16 or bfloat16"]),
        (lambda a, b: (a[0], b[0]), ValueError, ["x must be a 4-D (N, C, H, W) tensor", "[3, 4, 5]"]),
        (lambda a, b: (a, b[0]), ValueError, ["y must have shape"]),
        (lambda a, b: (a, b.to("meta")), ValueError, ["y must be on", "like x"]),
    ],
)
def test_bad_input(args, error, words):
    x, y = inputs((2, 3, 4, 5))
    assert_raises_mentioning(error, words, edge_loss, *args(x, y))


def test_bad_input_under_compile():
    x, y = (t.float() for t in inputs((2, 3, 4, 4)))
    fn = torch.compile(edge_loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="y must have shape"):
        fn(x, y[:, :1])
    with pytest.raises(Exception, match="x must be a 4-D"):
        fn(x[0], y[0])


# ------------------------------------------------------------------------------------- module


@pytest.mark.parametrize("channels", [1, 3, 64])
def test_module_matches_reference_module(channels):
    x, y = inputs((2, channels, 12, 7))
    for eps in (1e-3, 0.05):
        ours, expected = mprnet_kernels.EdgeLoss(eps), ref.EdgeLoss(eps)
        assert ours.extra_repr() == expected.extra_repr()
        _, gx, gy = forward_backward(ours, x, y)
        _, rx, ry = forward_backward(expected, x, y)
        assert rel_err(ours(x, y), expected(x, y)) < 1e-12
        assert rel_err(gx, rx) < 1e-12 and rel_err(gy, ry) < 1e-12
    assert mprnet_kernels.EdgeLoss is mprnet_kernels.nn.EdgeLoss


@pytest.mark.parametrize("dtype", HALF_TYPES)
def test_module_under_autocast_with_float32_target(dtype):
    # A half-precision prediction and a float32 target are promoted to float32 (as x - y is);
    # the prediction's gradient comes back in its own dtype.
    x, y = inputs((2, 3, 16, 12))
    pred = x.to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        loss = mprnet_kernels.EdgeLoss()(pred, y.float())
    loss.backward()
    assert loss.dtype == torch.float32 and pred.grad.dtype == dtype
    expected_loss, expected_grad, _ = forward_backward(ref.edge_loss, pred.detach().double(), y)
    assert rel_err(loss, expected_loss) < 1e-5
    assert rel_err(pred.grad, expected_grad) < OP_TOLERANCE[dtype]


# ------------------------------------------------------------------- Triton (interpreted on CPU)

TRITON_SHAPES = [(1, 1, 1, 1), (1, 1, 1, 6), (1, 2, 2, 3), (1, 1, 4, 5), (1, 1, 5, 4), (1, 1, 3, 9),
                 (1, 1, 7, 2), (1, 2, 6, 6), (2, 1, 35, 66)]


@pytest.mark.parametrize("shape", TRITON_SHAPES)
def test_triton_matches_reference_float64(shape):
    x, y = inputs(shape)
    loss, grad = triton_edge_loss(x, y)
    expected_loss, expected_grad, _ = forward_backward(ref.edge_loss, x, y)
    assert rel_err(loss, expected_loss) < 1e-12
    assert rel_err(grad, expected_grad) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
def test_triton_matches_reference_low_precision(dtype):
    x, y = inputs((1, 2, 9, 70), dtype)
    loss, grad = triton_edge_loss(x, y)
    expected_loss, expected_grad, _ = forward_backward(ref.edge_loss, x.double(), y.double())
    assert loss.dtype == dtype and grad.dtype == dtype
    assert rel_err(loss, expected_loss) < OP_TOLERANCE[dtype]
    assert rel_err(grad, expected_grad) < OP_TOLERANCE[dtype]


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_triton_layouts_and_no_grad(layout):
    base = inputs((1, 3, 5, 6))
    x, y = (layouts(t)[layout] for t in base)
    loss, grad = triton_edge_loss(x, y, eps=0.1)
    expected_loss, expected_grad, _ = forward_backward(lambda a, b: ref.edge_loss(a, b, 0.1), *base)
    assert rel_err(loss, expected_loss) < 1e-12 and rel_err(grad, expected_grad) < 1e-12
    assert grad.is_contiguous(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
    loss_only, empty = kernel("edge_loss", "triton")(x, y, 0.1, False)
    assert torch.equal(loss_only, loss) and empty.numel() == 0


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_float64(dtype, layout):
    base = inputs((4, 3, 67, 45), dtype, "cuda")
    x, y = (layouts(t)[layout] for t in base)
    check_against_float64(x, y, OP_TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (4, 5), (5, 4), (6, 6), (33, 130), (256, 256)])
def test_cuda_sizes_float64(h, w):
    x, y = inputs((2, 3, h, w), torch.float64, "cuda")
    check_against_float64(x, y, 1e-12)


@pytest.mark.gpu
def test_cuda_module_compiles_fullgraph_with_inductor():
    x, y = (t.float().cuda() for t in inputs((2, 3, 40, 33)))
    module = mprnet_kernels.EdgeLoss()
    fn = torch.compile(module, fullgraph=True)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    fn(xc, y).backward()
    module(xe, y).backward()
    assert rel_err(xc.grad, xe.grad) < 1e-6


@pytest.mark.gpu
def test_cuda_deterministic_opcheck_and_device_mismatch():
    x, y = (t.float().cuda() for t in inputs((2, 3, 70, 90)))
    first = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    second = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    torch.library.opcheck(torch.ops.mprnet.edge_loss, (x.requires_grad_(), y, 1e-3, True))
    with pytest.raises((ValueError, RuntimeError), match="y"):
        edge_loss(x.detach(), y.cpu())


# ------------------------------------------------ GPU: each CUDA backend against float64

# Batch 1 and 8, channels 1, 3 and 64, odd and even sizes, widths over the CUDA C++ kernel's
# 128-column strips and heights over several of its row chunks; H and W of 1 to 5 separately.
GPU_SHAPES = [(8, 3, 67, 45), (1, 64, 33, 130), (1, 1, 300, 257)]
GPU_SMALL_SIZES = list(itertools.product(range(1, 6), range(1, 6)))


def on_backend(backend, fn, *args):
    """fn(*args) with the CUDA dispatch of edge_loss on `backend`; skips when it is missing."""
    if backend not in _backend.available_backends("edge_loss"):
        pytest.skip(f"no {backend} backend for edge_loss in this install")
    with _backend.using_cuda_backend("edge_loss", backend):
        return fn(*args)


def check_backend(backend, x, y, tol):
    """Loss and gradient (compute_grad true, through autograd) and the loss alone (compute_grad
    false, no gradient written) against the float64 reference on the GPU."""
    on_backend(backend, check_against_float64, x, y, tol)
    loss, grad = on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, False)
    assert grad.numel() == 0 and loss.dtype == x.dtype and loss.device == x.device
    expected = ref.edge_loss(x.double(), y.double())
    assert rel_err(loss, expected) < tol, ("loss without gradient", rel_err(loss, expected))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_backends_match_float64(backend, dtype, layout, shape):
    base = inputs(shape, dtype, "cuda")
    x, y = (layouts(t)[layout] for t in base)
    check_backend(backend, x, y, OP_TOLERANCE[dtype])
    _, grad = on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, True)
    expect_cl = layout == "channels_last" and shape[1] > 1
    assert grad.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("h, w", GPU_SMALL_SIZES)
def test_cuda_backends_small_sizes_float64(backend, h, w):
    # Below the stencil: every output is on a border, the adjoint's fold everywhere.
    x, y = inputs((2, 3, h, w), torch.float64, "cuda")
    check_backend(backend, x, y, 1e-12)


@pytest.mark.gpu
def test_cuda_cpp_mixed_layouts_eps_and_nonfinite():
    x, y = inputs((2, 4, 37, 140), torch.float64, "cuda")
    plain = on_backend("cuda", torch.ops.mprnet.edge_loss, x, y, 0.1, True)
    mixed = on_backend("cuda", torch.ops.mprnet.edge_loss, layouts(x)["channels_last"], layouts(y)["strided"], 0.1, True)
    assert torch.equal(mixed[0], plain[0]) and torch.equal(mixed[1], plain[1])
    expected = forward_backward(lambda a, b: ref.edge_loss(a, b, 0.1), x, y)
    assert rel_err(plain[0], expected[0]) < 1e-12 and rel_err(plain[1] / x.numel(), expected[1]) < 1e-12
    x[0, 1, 20, 130] = float("nan")
    y[1, 3, 0, 0] = float("inf")
    expected = forward_backward(ref.edge_loss, x, y)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        ours = on_backend("cuda", forward_backward, edge_loss, x.to(dtype), y.to(dtype))
        for name, a, b in zip(NAMES, ours, expected):
            assert_nonfinite_like(a, b, (dtype, name))
    empty = on_backend("cuda", torch.ops.mprnet.edge_loss, x[:0], y[:0], 1e-3, True)
    assert torch.isnan(empty[0]) and empty[1].shape == (0, 4, 37, 140)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_backends_deterministic(dtype):
    x, y = inputs((16, 3, 256, 256), dtype, "cuda")
    for backend in ("cuda", "triton"):
        first = on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, True)
        second = on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, True)
        assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1]), backend
        loss_only = on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, False)
        assert torch.equal(loss_only[0], on_backend(backend, torch.ops.mprnet.edge_loss, x, y, 1e-3, False)[0])


@pytest.mark.gpu
def test_cuda_cpp_agrees_with_triton_and_emulation_float64():
    # The CUDA C++ kernel against Triton, and against its own tile functions run on the host
    # (tests/ops/test_loss_tiles.py): the same arithmetic, so they agree to rounding.
    from native_ext import loss_tile_host

    x, y = inputs((2, 3, 70, 150), torch.float64, "cuda")
    ours = on_backend("cuda", torch.ops.mprnet.edge_loss, x, y, 1e-3, True)
    triton = on_backend("triton", torch.ops.mprnet.edge_loss, x, y, 1e-3, True)
    host = loss_tile_host().edge_loss_tiles(x.cpu(), y.cpu(), 1e-3, True, 128, 0, False)
    for other in (triton, host):
        assert rel_err(ours[0], other[0].to(x.device)) < 1e-13
        assert rel_err(ours[1], other[1].to(x.device)) < 1e-13
