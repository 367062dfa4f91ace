"""mprnet::upsample2x_add against eager `F.interpolate(x, scale_factor=2, mode="bilinear",
align_corners=False) + y` in float64: values, both gradients, sizes down to 1 pixel, layouts,
dtypes (mixed ones as eager promotes them), opcheck, gradcheck, torch.compile, NaN/Inf,
determinism, bad input, and the Triton kernels under the interpreter."""

import pytest
import torch
import torch.nn.functional as F

from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like,
                     assert_raises_mentioning, forward_backward, layouts, rel_err)
from mprnet_kernels.ops import _backend, upsample2x_add
from mprnet_kernels.reference.ops import upsample2x_add as reference

HALF_TYPES = [torch.bfloat16, torch.float16]
ALL_TYPES = [torch.float64, torch.float32, *HALF_TYPES]

# (N, C, h, w) of x: odd and even sizes, 1x1, 1xN and Nx1, batch 1 and 8, channels 1, 3 and 96,
# and rows long enough for the vectorized interiors (w >= 10 for NCHW, C >= 8 for channels_last).
SHAPES = [(1, 1, 1, 1), (1, 1, 1, 9), (1, 3, 7, 1), (2, 3, 5, 7), (2, 3, 4, 6), (8, 3, 3, 2), (1, 96, 6, 5),
          (8, 1, 2, 2), (2, 3, 17, 37), (1, 96, 9, 24)]


def inputs(shape, dtype=torch.float64, seed=0, y_dtype=None, device="cpu"):
    """x of `shape`, and y and an output gradient of twice its H and W, drawn in float64 and rounded."""
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    y = torch.randn(n, c, 2 * h, 2 * w, generator=g, dtype=torch.float64)
    grad = torch.randn(n, c, 2 * h, 2 * w, generator=g, dtype=torch.float64)
    y_dtype = y_dtype or dtype
    out_dtype = torch.promote_types(dtype, y_dtype)
    return x.to(device, dtype), y.to(device, y_dtype), grad.to(device, out_dtype)


def check(fn, x, y, grad, tol):
    """fn(x, y) and its two gradients against the float64 reference on the same values: dtypes
    as eager gives them, each within tol. Returns fn's (out, grad_x, grad_y)."""
    ours = forward_backward(fn, x, y, grad=grad)
    expected = forward_backward(reference, x.double(), y.double(), grad=grad.double())
    dtypes = (torch.promote_types(x.dtype, y.dtype), x.dtype, y.dtype)
    for name, a, b, dtype in zip(("out", "grad_x", "grad_y"), ours, expected, dtypes):
        assert a.dtype == dtype, (name, a.dtype, dtype)
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    return ours


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", ALL_TYPES)
def test_matches_reference(shape, dtype):
    check(upsample2x_add, *inputs(shape, dtype), OP_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("y_layout", ["contiguous", "channels_last", "strided"])
def test_layouts(x_layout, y_layout, dtype):
    x0, y0, grad0 = inputs((2, 12, 5, 11), dtype)
    x, y, grad = layouts(x0)[x_layout], layouts(y0)[y_layout], layouts(grad0)[y_layout]
    out, grad_x, _ = check(upsample2x_add, x, y, grad, OP_TOLERANCE[dtype])
    # out in y's layout, grad_x in grad's (a leaf's .grad then takes the leaf's layout, autograd's
    # layout contract); the values do not depend on either.
    fmt = torch.channels_last if y_layout == "channels_last" else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    assert torch.ops.mprnet.upsample2x_add_backward(grad, dtype).is_contiguous(memory_format=fmt)
    ref_out, ref_gx, _ = forward_backward(upsample2x_add, x0, y0, grad=grad0)
    assert rel_err(out, ref_out) < 1e-6 and rel_err(grad_x, ref_gx) < 1e-6


@pytest.mark.parametrize("x_dtype, y_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32),   # autocast: bf16 conv + f32 y
    (torch.float32, torch.bfloat16), (torch.float16, torch.bfloat16),  # promoted to float32
    (torch.float32, torch.float64), (torch.float64, torch.float32), (torch.bfloat16, torch.float64),
])
def test_mixed_dtypes_promote_like_eager(x_dtype, y_dtype):
    x, y, grad = inputs((2, 9, 6, 13), x_dtype, y_dtype=y_dtype)
    assert reference(x, y).dtype == torch.promote_types(x_dtype, y_dtype)
    tol = max(OP_TOLERANCE[x_dtype], OP_TOLERANCE[y_dtype])  # grad_x, grad_y: x's and y's dtypes
    check(upsample2x_add, x, y, grad, tol)
    cl = [layouts(t)["channels_last"] for t in (x, y, grad)]
    check(upsample2x_add, *cl, tol)


@pytest.mark.parametrize("y_dtype", [torch.float32, torch.bfloat16])
def test_under_bf16_autocast_like_eager(y_dtype):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 8, 5, 6, generator=g)
    weight = torch.randn(4, 8, 1, 1, generator=g)
    y = torch.randn(2, 4, 10, 12, generator=g).to(y_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = F.conv2d(feat, weight)
        eager = reference(low, y)
        ours = upsample2x_add(low, y)
    assert low.dtype == torch.bfloat16 and ours.dtype == eager.dtype
    assert rel_err(ours, reference(low.double(), y.double())) < 1e-2


def test_gradcheck():
    for shape in [(1, 1, 1, 1), (1, 2, 1, 4), (2, 1, 3, 1), (1, 2, 3, 4), (2, 3, 5, 2)]:
        x, y, _ = inputs(shape)
        assert torch.autograd.gradcheck(upsample2x_add, (x.requires_grad_(), y.requires_grad_()))
    x, y, _ = inputs((1, 8, 3, 4))
    cl = [layouts(t)["channels_last"].requires_grad_() for t in (x, y)]
    assert torch.autograd.gradcheck(upsample2x_add, tuple(cl))


def test_backward_is_the_adjoint_of_the_resize():
    """<up(x), g> == <x, up^T(g)> for the reference resize, to rounding."""
    x, _, g = inputs((2, 3, 7, 6))
    lhs = (reference(x, torch.zeros_like(g)) * g).sum()  # the resize alone
    rhs = (x * torch.ops.mprnet.upsample2x_add_backward(g, torch.float64)).sum()
    assert abs(float(lhs - rhs)) < 1e-12 * float(x.abs().sum() * g.abs().max())


def test_double_backward_is_rejected():
    x, y, grad = (t.requires_grad_() for t in inputs((2, 3, 4, 5)))
    with pytest.raises(NotImplementedError, match="mprnet::upsample2x_add: double backward"):
        torch.autograd.grad(upsample2x_add(x, y), (x, y), grad, create_graph=True)
    grad_x, grad_y = torch.autograd.grad(upsample2x_add(x, y), (x, y), grad)
    assert grad_x.shape == x.shape and torch.equal(grad_y, grad)


def test_gradient_to_one_input_only():
    x, y, grad = inputs((2, 3, 4, 5))
    out, grad_x, grad_y = forward_backward(upsample2x_add, x, y, which=[True, False], grad=grad)
    assert grad_y is None
    _, expected, _ = forward_backward(reference, x, y, grad=grad)
    assert rel_err(grad_x, expected) < 1e-13
    _, grad_x, grad_y = forward_backward(upsample2x_add, x, y, which=[False, True], grad=grad)
    assert grad_x is None and torch.equal(grad_y, grad)


def _opcheck_inputs():
    x, y, _ = inputs((2, 3, 5, 7))
    return [
        (x, y),
        (x.float(), y.float()),
        tuple(layouts(t.float())["channels_last"] for t in inputs((2, 6, 3, 5))[:2]),
        tuple(layouts(t)["strided"] for t in inputs((1, 3, 2, 5))[:2]),
        tuple(t.bfloat16() for t in inputs((3, 2, 4, 4))[:2]),
        (x.bfloat16(), y.float()),
        tuple(inputs((1, 1, 1, 1))[:2]),
    ]


@pytest.mark.parametrize("case", range(len(_opcheck_inputs())))
def test_opcheck(case):
    x, y = (t.clone().requires_grad_() for t in _opcheck_inputs()[case])
    torch.library.opcheck(torch.ops.mprnet.upsample2x_add, (x, y))
    grad = torch.randn(y.shape, dtype=torch.promote_types(x.dtype, y.dtype))
    torch.library.opcheck(torch.ops.mprnet.upsample2x_add_backward, (grad, x.dtype))


def test_torch_compile_fullgraph():
    x, y, _ = (t.float() for t in inputs((2, 8, 6, 5)))
    fn = torch.compile(lambda a, b: upsample2x_add(a * 2, b) - 1, fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x, y), upsample2x_add(x * 2, y) - 1)
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    fn(xg, yg).square().sum().backward()
    xe, ye = x.clone().requires_grad_(), y.clone().requires_grad_()
    (upsample2x_add(xe * 2, ye) - 1).square().sum().backward()
    assert torch.equal(xg.grad, xe.grad) and torch.equal(yg.grad, ye.grad)


def test_torch_compile_dynamic_shapes():
    fn = torch.compile(upsample2x_add, fullgraph=True, backend="aot_eager", dynamic=True)
    for shape in [(1, 3, 4, 5), (2, 3, 7, 3)]:
        x, y, _ = inputs(shape)
        assert torch.equal(fn(x, y), upsample2x_add(x, y))


def test_empty():
    x, y, grad = inputs((0, 3, 4, 4))
    out, grad_x, grad_y = forward_backward(upsample2x_add, x, y, grad=grad)
    assert out.shape == (0, 3, 8, 8) and grad_x.shape == (0, 3, 4, 4)


def _nonfinite_inputs():
    """NaN and Inf in x (one at index 1 of both H and W, which the reference's weight-0 tap turns
    into a NaN at output index 0), in y, and in the output gradient (one at [0, 0])."""
    x, y, grad = inputs((1, 3, 5, 6))
    x[0, 0, 1, 3] = float("inf")
    x[0, 0, 2, 1] = -float("inf")
    x[0, 1, 3, 4] = float("nan")
    x[0, 2, 0, 5] = float("inf")
    x[0, 2, 4, 0] = -float("inf")
    y[0, 1, 0, 0] = float("nan")
    y[0, 2, 9, 11] = -float("inf")
    grad[0, 0, 0, 0] = float("inf")
    grad[0, 1, 5, 11] = float("nan")
    grad[0, 2, 3, 0] = -float("inf")
    grad[0, 2, 9, 7] = float("inf")
    return x, y, grad


def test_nan_and_inf_propagate_like_reference():
    x, y, grad = _nonfinite_inputs()
    expected = forward_backward(reference, x, y, grad=grad)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        ours = forward_backward(upsample2x_add, x.to(dtype), y.to(dtype), grad=grad.to(dtype))
        for name, a, b in zip(("out", "grad_x", "grad_y"), ours, expected):
            assert_nonfinite_like(a, b, (name, dtype), OP_TOLERANCE[dtype])
        cl = [layouts(t.to(dtype))["channels_last"] for t in (x, y, grad)]
        ours = forward_backward(upsample2x_add, *cl[:2], grad=cl[2])
        for name, a, b in zip(("out", "grad_x", "grad_y"), ours, expected):
            assert_nonfinite_like(a, b, (name, dtype, "channels_last"), OP_TOLERANCE[dtype])


def test_weight_zero_taps_make_nan_as_in_the_reference():
    x, y, grad = inputs((1, 1, 4, 4))
    x[0, 0, 1, 2] = float("inf")
    out = upsample2x_add(x, y)
    assert torch.isnan(out[0, 0, 0, 4]) and torch.equal(torch.isnan(out), torch.isnan(reference(x, y)))
    grad[0, 0, 0, 3] = float("inf")
    gx = torch.ops.mprnet.upsample2x_add_backward(grad, x.dtype)
    _, expected, _ = forward_backward(reference, x, y, grad=grad)
    assert torch.isnan(gx[0, 0, 1, 1]) and torch.equal(torch.isnan(gx), torch.isnan(expected))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_across_thread_counts(layout, dtype):
    x, y, grad = (layouts(t)[layout] for t in inputs((4, 16, 40, 36), dtype))

    def run():
        return forward_backward(upsample2x_add, x, y, grad=grad)

    assert_deterministic_across_thread_counts(run, [1, 2, 1])


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda x, y: (x, y[..., :-1]), ValueError, ["y must have shape [2, 3, 8, 10]", "twice", "[2, 3, 8, 9]"]),
        (lambda x, y: (x, y[:, :2]), ValueError, ["y must have shape", "x's N and C"]),
        (lambda x, y: (x[:1], y), ValueError, ["y must have shape [1, 3, 8, 10]"]),
        (lambda x, y: (x, y[:, :, :8, :8]), ValueError, ["y must have shape [2, 3, 8, 10]"]),
        (lambda x, y: (x[0], y), ValueError, ["x must be a 4-D (N, C, H, W) tensor"]),
        (lambda x, y: (x, y[0]), ValueError, ["y must be a 4-D (N, C, H, W) tensor"]),
        (lambda x, y: (x.int(), y), TypeError, ["x must be float64, float32, float16 or bfloat16"]),
        (lambda x, y: (x, y.long()), TypeError, ["y must be float64, float32, float16 or bfloat16"]),
    ],
)
def test_bad_input(args, error, words):
    x, y, _ = inputs((2, 3, 4, 5))
    assert_raises_mentioning(error, words, upsample2x_add, *args(x, y))


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda g: (g[..., :-1], torch.float64), ValueError, ["grad must have even H and W", "[2, 3, 8, 9]"]),
        (lambda g: (g[0], torch.float64), ValueError, ["grad must be a 4-D"]),
        (lambda g: (g.int(), torch.float64), TypeError, ["grad must be float64"]),
        (lambda g: (g, torch.int32), TypeError, ["x_dtype must be float64, float32, float16 or bfloat16"]),
    ],
)
def test_bad_backward_input(args, error, words):
    _, _, grad = inputs((2, 3, 4, 5))
    assert_raises_mentioning(error, words, torch.ops.mprnet.upsample2x_add_backward, *args(grad))


def test_device_mismatch_is_named():
    x, y, _ = inputs((2, 3, 4, 5))
    with pytest.raises((ValueError, RuntimeError), match="y must be on"):
        upsample2x_add(x, y.to("meta"))


def test_bad_input_under_compile():
    x, y, _ = (t.float() for t in inputs((2, 3, 4, 4)))
    fn = torch.compile(upsample2x_add, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="y must have shape"):
        fn(x, y[:, :, 1:])


# Triton, through its own entry points on CPU tensors (TRITON_INTERPRET=1, set by conftest.py).

needs_triton = pytest.mark.skipif(not _backend.HAS_TRITON, reason="Triton is not installed")


def triton_upsample2x_add(x, y):
    """The op with the Triton kernels in both directions (autograd as the op's own)."""
    return _TritonOp.apply(x, y)


class _TritonOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y):
        ctx.dtypes = x.dtype, y.dtype
        return _backend.kernel("upsample2x_add", "triton")(x, y)

    @staticmethod
    def backward(ctx, grad):
        x_dtype, y_dtype = ctx.dtypes
        return _backend.kernel("upsample2x_add_backward", "triton")(grad, x_dtype), grad.to(y_dtype)


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 2, 1, 6), (1, 3, 5, 1), (2, 3, 5, 7), (8, 3, 4, 6),
                                   (1, 96, 3, 4), (1, 1, 9, 40)])
@pytest.mark.parametrize("dtype", ALL_TYPES)
def test_triton_matches_reference(shape, dtype):
    x, y, grad = inputs(shape, dtype)
    out, grad_x, _ = check(triton_upsample2x_add, x, y, grad, OP_TOLERANCE[dtype])
    assert out.stride() == upsample2x_add(x, y).stride()


@needs_triton
@pytest.mark.parametrize("x_layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("y_layout", ["contiguous", "channels_last", "strided"])
def test_triton_layouts(x_layout, y_layout):
    x0, y0, grad0 = inputs((2, 12, 5, 7), torch.float32)
    x, y, grad = layouts(x0)[x_layout], layouts(y0)[y_layout], layouts(grad0)[y_layout]
    out, grad_x, _ = check(triton_upsample2x_add, x, y, grad, OP_TOLERANCE[torch.float32])
    cpu_out, cpu_gx, _ = forward_backward(upsample2x_add, x, y, grad=grad)
    assert out.stride() == cpu_out.stride() and grad_x.stride() == cpu_gx.stride()


@needs_triton
@pytest.mark.parametrize("x_dtype, y_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.float16),
                                              (torch.float32, torch.float64)])
def test_triton_mixed_dtypes(x_dtype, y_dtype):
    x, y, grad = inputs((2, 9, 3, 5), x_dtype, y_dtype=y_dtype)
    check(triton_upsample2x_add, x, y, grad, OP_TOLERANCE[torch.bfloat16])


@needs_triton
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's 0 * Inf
def test_triton_nan_and_inf_propagate_like_reference():
    x, y, grad = _nonfinite_inputs()
    expected = forward_backward(reference, x, y, grad=grad)
    for layout in ("contiguous", "channels_last"):
        args = [layouts(t)[layout] for t in (x, y, grad)]
        ours = forward_backward(triton_upsample2x_add, *args[:2], grad=args[2])
        for name, a, b in zip(("out", "grad_x", "grad_y"), ours, expected):
            assert_nonfinite_like(a, b, (name, layout), OP_TOLERANCE[torch.float64])


@needs_triton
def test_triton_checks_input_like_the_op():
    x, y, grad = inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match="y must have shape"):
        _backend.kernel("upsample2x_add", "triton")(x, y[:, :2])
    with pytest.raises(ValueError, match="grad must have even H and W"):
        _backend.kernel("upsample2x_add_backward", "triton")(grad[..., 1:], x.dtype)


def test_cuda_backend_is_triton():
    if _backend.HAS_TRITON:
        assert _backend.available_backends("upsample2x_add") == ["triton"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_float64(dtype, layout):
    x, y, grad = (layouts(t)[layout] for t in inputs((4, 40, 37, 29), dtype, device="cuda"))
    check(upsample2x_add, x, y, grad, OP_TOLERANCE[dtype])


@pytest.mark.gpu
def test_cuda_deterministic_and_opcheck():
    x, y, grad = inputs((8, 64, 64, 64), torch.float32, device="cuda")
    first = forward_backward(upsample2x_add, x, y, grad=grad)
    for _ in range(3):
        for a, b in zip(forward_backward(upsample2x_add, x, y, grad=grad), first):
            assert torch.equal(a, b)
    xs, ys, _ = inputs((1, 3, 5, 6), torch.float32, device="cuda")
    torch.library.opcheck(torch.ops.mprnet.upsample2x_add, (xs.requires_grad_(), ys.requires_grad_()))
    with pytest.raises((ValueError, RuntimeError), match="y must be on"):
        upsample2x_add(x, y.cpu())
