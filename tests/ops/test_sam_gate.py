"""mprnet::sam_gate against its float64 reference: values, gradients, layouts, dtypes, opcheck,
gradcheck, torch.compile, NaN/Inf and bad input."""

from functools import partial

import pytest
import torch

import helpers
from helpers import (OP_TOLERANCE, assert_nonfinite_like, assert_raises_mentioning, forward_backward, layouts,
                     opcheck_inputs, rel_err)
from mprnet_kernels.ops import _backend, sam_gate
from mprnet_kernels.reference.ops import sam_gate as reference

SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 96, 32, 32), (16, 16, 9, 13), (2, 3, 129, 131)]
HALF_TYPES = [torch.bfloat16, torch.float16]


inputs = partial(helpers.seeded_randn, 3)  # (x1, z, x)


def check_against_float64(x1, z, x, grad, tol):
    """Our op in the inputs' dtype vs the reference in float64 on the same (rounded) values."""
    helpers.check_against_float64(sam_gate, reference, (x1, z, x), tol, ("out", "grad_x1", "grad_z", "grad_x"),
                                  grad=grad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
def test_matches_reference(shape, dtype):
    x1, z, x, grad = inputs(shape, dtype) + inputs(shape, dtype, seed=1)[:1]
    check_against_float64(x1, z, x, grad, OP_TOLERANCE[dtype])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layouts_give_same_values(layout, dtype):
    base = inputs((2, 5, 6, 7), dtype) + inputs((2, 5, 6, 7), dtype, seed=1)[:1]
    x1, z, x, grad = (layouts(t)[layout] for t in base)
    check_against_float64(x1, z, x, grad, OP_TOLERANCE[dtype])
    out = sam_gate(x1, z, x)
    assert torch.equal(out, sam_gate(*base[:3]))
    expect_cl = layout == "channels_last"
    assert out.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


def test_mixed_layouts():
    x1, z, x = inputs((2, 4, 5, 3))
    out = sam_gate(layouts(x1)["channels_last"], layouts(z)["strided"], x)
    assert rel_err(out, reference(x1, z, x)) < 1e-15


def test_gradcheck():
    x1, z, x = (t.requires_grad_() for t in inputs((2, 3, 4, 5)))
    assert torch.autograd.gradcheck(sam_gate, (x1, z, x))


def test_gradient_to_one_input_only():
    x1, z, x = inputs((2, 3, 4, 5))
    z.requires_grad_()
    sam_gate(x1, z, x).sum().backward()
    expected = x1 * torch.sigmoid(z.detach()) * (1 - torch.sigmoid(z.detach()))
    assert rel_err(z.grad, expected) < 1e-13


def test_double_backward_is_rejected():
    x1, z, x = (t.requires_grad_() for t in inputs((2, 3, 4, 5)))
    with pytest.raises(NotImplementedError, match="mprnet::sam_gate: double backward"):
        torch.autograd.grad(sam_gate(x1, z, x).sum(), (x1, z), create_graph=True)
    # Without create_graph the same backward runs.
    grads = torch.autograd.grad(sam_gate(x1, z, x).sum(), (x1, z))
    assert all(g.shape == x1.shape for g in grads)


@pytest.mark.parametrize("make", opcheck_inputs(inputs))
def test_opcheck(make):
    x1, z, x = (t.requires_grad_() for t in make())
    torch.library.opcheck(torch.ops.mprnet.sam_gate, (x1, z, x))
    grad = torch.randn_like(x1)
    torch.library.opcheck(torch.ops.mprnet.sam_gate_backward, (grad, x1.detach(), z.detach()))


def test_torch_compile_fullgraph():
    x1, z, x = (t.float() for t in inputs((2, 8, 6, 6)))
    fn = torch.compile(lambda a, b, c: sam_gate(a, b, c) * 2 + 1, fullgraph=True, backend="aot_eager")
    assert torch.equal(fn(x1, z, x), sam_gate(x1, z, x) * 2 + 1)


def test_empty():
    x1, z, x = inputs((0, 3, 4, 4))
    assert sam_gate(x1, z, x).shape == (0, 3, 4, 4)


def _nonfinite_inputs():
    x1, z, x = inputs((1, 2, 3, 4))
    x1[0, 0, 0, 0] = float("nan")
    z[0, 0, 1, 1] = float("inf")
    z[0, 1, 1, 2] = -float("inf")
    x[0, 1, 2, 3] = float("inf")
    z[0, 1, 0, 0] = float("nan")
    return x1, z, x


def test_nan_and_inf_propagate_like_reference():
    x1, z, x = _nonfinite_inputs()
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        ours = sam_gate(*(t.to(dtype) for t in (x1, z, x)))
        assert_nonfinite_like(ours, reference(x1, z, x), dtype, OP_TOLERANCE[dtype])


@pytest.mark.parametrize(
    "args, error, words",
    [
        (lambda a, b, c: (a, b[:, :2], c), ValueError, ["z", "shape", "like x1"]),
        (lambda a, b, c: (a, b, c.float()), TypeError, ["x must have dtype", "torch.float64", "float"]),
        (lambda a, b, c: (a.int(), b, c), TypeError, ["x1 must be float64, float32, float16 or bfloat16"]),
        (lambda a, b, c: (a, b, c[0]), ValueError, ["x must have shape"]),
    ],
)
def test_bad_input(args, error, words):
    x1, z, x = inputs((2, 3, 4, 4))
    assert_raises_mentioning(error, words, sam_gate, *args(x1, z, x))


def test_bad_input_under_compile():
    x1, z, x = (t.float() for t in inputs((2, 3, 4, 4)))
    fn = torch.compile(sam_gate, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="z must have shape"):
        fn(x1, z[:, :1], x)


# Triton, through its own entry points on CPU tensors (TRITON_INTERPRET=1, set by conftest.py).

needs_triton = pytest.mark.skipif(not _backend.HAS_TRITON, reason="Triton is not installed")


def triton_forward_backward(x1, z, x, grad):
    out = _backend.kernel("sam_gate", "triton")(x1, z, x)
    grad_x1, grad_z = _backend.kernel("sam_gate_backward", "triton")(grad, x1, z)
    return out, grad_x1, grad_z


@needs_triton
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (2, 16, 9, 13), (1, 3, 47, 45)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_triton_matches_reference(shape, dtype, layout):
    base = inputs(shape, dtype) + inputs(shape, dtype, seed=1)[:1]
    x1, z, x, grad = (layouts(t)[layout] for t in base)
    ours = triton_forward_backward(x1, z, x, grad)
    ref = forward_backward(reference, *(t.double() for t in (x1, z, x)), grad=grad.double())
    for name, a, b in zip(("out", "grad_x1", "grad_z"), ours, ref):
        assert a.dtype == dtype and a.stride() == sam_gate(x1, z, x).stride(), name
        assert rel_err(a, b) < OP_TOLERANCE[dtype], (name, rel_err(a, b))


@needs_triton
def test_triton_nan_and_inf_propagate_like_reference():
    x1, z, x = _nonfinite_inputs()
    grad = torch.ones_like(x)
    ours = triton_forward_backward(x1, z, x, grad)
    ref = forward_backward(reference, x1, z, x, grad=grad)
    for name, a, b in zip(("out", "grad_x1", "grad_z"), ours, ref):
        assert_nonfinite_like(a, b, name)


@needs_triton
def test_triton_checks_input_like_the_op():
    x1, z, x = inputs((2, 3, 4, 4))
    with pytest.raises(ValueError, match="z must have shape"):
        _backend.kernel("sam_gate", "triton")(x1, z[:, :2], x)
    with pytest.raises(TypeError, match="grad must have dtype"):
        _backend.kernel("sam_gate_backward", "triton")(x.float(), x1, z)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_cuda_matches_float64(backend, dtype, layout):
    if backend not in _backend.available_backends("sam_gate"):
        pytest.skip(f"no {backend} backend in this install")
    base = inputs((4, 40, 37, 29), dtype, "cuda") + inputs((4, 40, 37, 29), dtype, "cuda", seed=1)[:1]
    x1, z, x, grad = (layouts(t)[layout] for t in base)
    with _backend.using_cuda_backend("sam_gate", backend):
        check_against_float64(x1, z, x, grad, OP_TOLERANCE[dtype])


@pytest.mark.gpu
def test_cuda_backends_agree_in_float64():
    if _backend.available_backends("sam_gate") != ["triton", "cuda"]:
        pytest.skip("needs both CUDA backends")
    x1, z, x, grad = inputs((16, 96, 64, 64), device="cuda") + inputs((16, 96, 64, 64), device="cuda", seed=1)[:1]
    results = {}
    for backend in ("triton", "cuda"):
        fwd = _backend.kernel("sam_gate", backend)(x1, z, x)
        results[backend] = (fwd, *_backend.kernel("sam_gate_backward", backend)(grad, x1, z))
    for a, b in zip(results["triton"], results["cuda"]):
        assert rel_err(a, b) < 1e-14


@pytest.mark.gpu
def test_cuda_opcheck_and_device_mismatch():
    x1, z, x = (t.float().cuda().requires_grad_() for t in inputs((2, 3, 5, 7)))
    torch.library.opcheck(torch.ops.mprnet.sam_gate, (x1, z, x))
    with pytest.raises((ValueError, RuntimeError), match="x"):
        sam_gate(x1.detach(), z.detach(), x.detach().cpu())
