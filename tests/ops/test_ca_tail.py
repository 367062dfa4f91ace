"""mprnet::ca_tail against the reference CALayer in float64: output and every gradient (x, r, w1,
b1, w2, b2), sizes, layouts, dtypes (mixed autocast dtypes included), determinism, opcheck,
gradcheck, torch.compile, NaN/Inf and bad input; the Triton kernels under the interpreter; the
CUDA C++ and Triton kernels against each other on a GPU."""


import pytest
import torch

import helpers
from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like, layouts,
                     rel_err, with_changes)
from mprnet_kernels.ops import _backend, ca_tail
from mprnet_kernels.reference import blocks as reference_blocks

# The op's module (the package attribute of the same name is the function).

HALF_TYPES = [torch.bfloat16, torch.float16]
NAMES = ("out", "grad_x", "grad_r", "grad_w1", "grad_b1", "grad_w2", "grad_b2")

# (N, C, H, W, hidden): C of the presets' widths and 3 (hidden 1: C // 4 would be 0, which the
# reference CALayer rejects, see test_module_rejects_zero_hidden); batch 1 and 16; H*W from
# 1x1 up, odd sizes.
SHAPES = [
    (1, 16, 1, 1, 4),
    (16, 16, 3, 5, 4),
    (1, 40, 13, 11, 10),
    (16, 40, 7, 9, 10),
    (2, 96, 17, 19, 24),
    (16, 96, 1, 1, 24),
    (1, 144, 31, 29, 36),
    (16, 144, 5, 3, 36),
    (1, 3, 9, 7, 1),
    (2, 40, 64, 63, 10),
]


def reference(x, r, w1, b1, w2, b2):
    """The reference CALayer (the oracle) carrying these weights, plus r."""
    hidden, c = w1.shape[0], w1.shape[1]
    layer = reference_blocks.CALayer(c, c // hidden, bias=b1 is not None)
    assert layer.conv_du[0].out_channels == hidden
    params = {"conv_du.0.weight": w1.reshape(hidden, c, 1, 1), "conv_du.2.weight": w2.reshape(c, hidden, 1, 1)}
    if b1 is not None:
        params.update({"conv_du.0.bias": b1, "conv_du.2.bias": b2})
    return torch.func.functional_call(layer, params, (x,)) + r


inputs = helpers.ca_tail_inputs


def forward_backward(fn, args, grad):
    """(out, grad_x, grad_r, grad_w1, grad_b1, grad_w2, grad_b2) of fn(*args) for out's gradient
    `grad` (None for an absent bias)."""
    return helpers.forward_backward(fn, *args, grad=grad)


def check_against_float64(args, grad, tol, fn=ca_tail):
    ours = forward_backward(fn, args, grad)
    ref = forward_backward(reference, [None if t is None else t.double() for t in args], grad.double())
    for name, a, b, arg in zip(NAMES, ours, ref, [args[1]] + list(args)):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == arg.dtype and a.shape == arg.shape, name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    return ours


def in_layout(args, grad, layout):
    x, r, *weights = args
    return [layouts(x)[layout], layouts(r)[layout], *weights], layouts(grad)[layout]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_matches_reference(shape, dtype, layout):
    bias = sum(shape) % 2 == 0  # both with and without biases, across the shapes
    args, grad = inputs(*shape, dtype=dtype, bias=bias)
    args, grad = in_layout(args, grad, layout)
    out = check_against_float64(args, grad, OP_TOLERANCE[dtype])[0]
    channels_last = layout == "channels_last" and shape[1] > 1 and shape[2] * shape[3] > 1
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_full_resolution_float32(layout):
    args, grad = inputs(2, 40, 256, 256, 10, dtype=torch.float32)
    check_against_float64(*in_layout(args, grad, layout), OP_TOLERANCE[torch.float32])


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_layouts_give_same_values(layout):
    args, grad = inputs(2, 24, 10, 7, 6, dtype=torch.float32)
    base = forward_backward(ca_tail, args, grad)
    other = forward_backward(ca_tail, *in_layout(args, grad, layout))
    for name, a, b in zip(NAMES, other, base):
        # Different layouts sum in different orders: equal to rounding, not bit for bit.
        assert rel_err(a, b) < 1e-6, name


def test_mixed_layouts_and_2d_weights():
    args, grad = inputs(2, 16, 5, 6, 4, conv_weights=False)
    x, r, *w = args
    out = ca_tail(layouts(x)["channels_last"], layouts(r)["strided"], *w)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, reference(*args)) < 1e-15
    grads = forward_backward(ca_tail, args, grad)
    assert grads[3].shape == (4, 16) and grads[5].shape == (16, 4)


@pytest.mark.parametrize("bias", ["b1", "b2"])
def test_one_bias_only(bias):
    args, grad = inputs(2, 16, 5, 6, 4)
    args[3 if bias == "b2" else 5] = None  # drop the other one

    def explicit(x, r, w1, b1, w2, b2):
        p = x.mean((2, 3))
        h = torch.relu(torch.nn.functional.linear(p, w1.flatten(1), b1))
        return x * torch.sigmoid(torch.nn.functional.linear(h, w2.flatten(1), b2))[:, :, None, None] + r

    ours = forward_backward(ca_tail, args, grad)
    ref = forward_backward(explicit, args, grad)
    for name, a, b in zip(NAMES, ours, ref):
        assert (a is None) == (b is None), name
        if b is not None:
            assert rel_err(a, b) < 1e-12, name


@pytest.mark.parametrize("x_dtype", HALF_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_autocast_mix_half_x_float32_residual_and_weights(x_dtype, layout):
    """A half-precision body output, a float32 block input and float32 weights, as under
    autocast: out is float32 like the reference's promoted sum, each gradient in its input's
    dtype, all without casting anything first."""
    args, grad = inputs(3, 40, 9, 11, 10, dtype=torch.float32)
    args[0] = args[0].to(x_dtype)
    args, grad = in_layout(args, grad, layout)
    ours = check_against_float64(args, grad, OP_TOLERANCE[x_dtype])
    assert ours[0].dtype == torch.float32 and ours[1].dtype == x_dtype and ours[2].dtype == torch.float32


def test_weights_in_another_dtype_than_x():
    args, grad = inputs(2, 16, 6, 5, 4)
    ours = check_against_float64([args[0].float(), args[1].float(), *args[2:]], grad.float(),
                                 OP_TOLERANCE[torch.float32])
    assert ours[3].dtype == torch.float64


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_deterministic_across_runs_and_thread_counts(layout):
    """Same bits whatever the thread count: the partition depends only on the shape."""
    args, grad = in_layout(*inputs(2, 96, 67, 65, 24, dtype=torch.float32), layout)
    many = max(2, torch.get_num_threads())
    assert_deterministic_across_thread_counts(lambda: forward_backward(ca_tail, args, grad), (1, many, many))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(layout, bias):
    args, _ = inputs(2, 8, 4, 3, 2, bias=bias)
    args = [None if t is None else t.requires_grad_() for t in in_layout(args, args[0], layout)[0]]
    assert torch.autograd.gradcheck(ca_tail, tuple(args))


def test_gradient_to_weights_only():
    args, grad = inputs(2, 16, 4, 5, 4)
    w1 = args[2].requires_grad_()
    ca_tail(*args).backward(grad)
    expected = forward_backward(reference, args, grad)[3]
    assert rel_err(w1.grad, expected) < 1e-12


@pytest.mark.parametrize(
    "make",
    [
        lambda: inputs(2, 8, 5, 7, 2)[0],
        lambda: inputs(1, 16, 4, 4, 4, dtype=torch.float32, bias=False)[0],
        lambda: in_layout(*inputs(2, 16, 3, 5, 4, dtype=torch.float32), "channels_last")[0],
        lambda: in_layout(*inputs(2, 3, 2, 5, 1), "strided")[0],
        lambda: inputs(3, 8, 4, 4, 2, dtype=torch.bfloat16)[0],
    ],
)
def test_opcheck(make):
    args = [None if t is None else t.requires_grad_() for t in make()]
    torch.library.opcheck(torch.ops.mprnet.ca_tail, args)
    torch.library.opcheck(torch.ops.mprnet.ca_tail_forward, args)
    _, p, h, s = torch.ops.mprnet.ca_tail_forward(*args)
    x, _, w1, _, w2, _ = (None if t is None else t.detach() for t in args)
    torch.library.opcheck(torch.ops.mprnet.ca_tail_backward, (torch.randn_like(x), x, w1, w2, p, h, s))


def test_torch_compile_fullgraph_with_backward():
    args, grad = inputs(2, 16, 6, 6, 4, dtype=torch.float32)
    fn = torch.compile(lambda *a: ca_tail(*a) * 2 + 1, fullgraph=True, backend="aot_eager")
    eager = forward_backward(lambda *a: ca_tail(*a) * 2 + 1, args, grad)
    compiled = forward_backward(fn, args, grad)
    for name, a, b in zip(NAMES, compiled, eager):
        assert torch.equal(a, b), name


def test_double_backward_is_rejected():
    args, grad = inputs(1, 8, 3, 3, 2)
    x = args[0].requires_grad_()
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(ca_tail(*args), x, grad, create_graph=True)


def test_empty_batch_and_empty_image():
    args, grad = inputs(0, 16, 4, 4, 4)
    out, gx, gr, gw1, gb1, gw2, gb2 = forward_backward(ca_tail, args, grad)
    assert out.shape == (0, 16, 4, 4) and gx.shape == out.shape
    assert gw1.abs().sum() == 0 and gb2.abs().sum() == 0  # sums over no samples
    args, grad = inputs(2, 16, 0, 5, 4)
    assert ca_tail(*args).shape == (2, 16, 0, 5)


def _nonfinite_inputs():
    args, grad = inputs(3, 16, 4, 5, 4)
    x, r = args[0], args[1]
    x[0, 2, 1, 1] = float("nan")  # poisons sample 0 through its mean
    x[1, 5, 0, 3] = float("inf")  # an infinite mean in sample 1
    r[2, 7, 2, 2] = -float("inf")  # only that element of sample 2
    return args, grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_propagate_like_reference(dtype, layout):
    args, grad = _nonfinite_inputs()
    args = [t.to(dtype) for t in args]
    args, grad = in_layout(args, grad.to(dtype), layout)
    ours = forward_backward(ca_tail, args, grad)
    ref = forward_backward(reference, [t.double() for t in args], grad.double())
    for name, a, b in zip(NAMES, ours, ref):
        assert_nonfinite_like(a, b, name, OP_TOLERANCE[dtype])


BAD_INPUTS = helpers.ca_tail_bad_inputs(2, 16, 4, 4)


@pytest.mark.parametrize("changes, error, words", BAD_INPUTS)
def test_bad_input(changes, error, words):
    args, _ = inputs(2, 16, 4, 4, 4)
    with pytest.raises(error) as info:
        ca_tail(*with_changes(args, **changes))
    for word in words:
        assert word in str(info.value), str(info.value)


@pytest.mark.parametrize("changes, error, words", BAD_INPUTS[2:6])
def test_bad_input_under_compile(changes, error, words):
    args, _ = inputs(2, 16, 4, 4, 4)
    fn = torch.compile(ca_tail, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=words[0].replace("[", r"\[")):
        fn(*with_changes(args, **changes))


def test_backward_rejects_vectors_of_the_wrong_shape():
    args, grad = inputs(2, 16, 4, 4, 4)
    _, p, h, s = torch.ops.mprnet.ca_tail_forward(*args)
    x, _, w1, _, w2, _ = args
    with pytest.raises(ValueError, match="h must have shape"):
        torch.ops.mprnet.ca_tail_backward(grad, x, w1, w2, p, h[:, :2], s)
    with pytest.raises(TypeError, match="s must have dtype"):
        torch.ops.mprnet.ca_tail_backward(grad, x, w1, w2, p, h, s.float())


# ---------------------------------------------------------------------------------------------
# Triton, through its own entry points on CPU tensors (TRITON_INTERPRET=1, set by conftest.py).

needs_triton = pytest.mark.skipif(not _backend.HAS_TRITON, reason="Triton is not installed")


def run_triton(args, grad):
    """Forward and backward through the Triton kernels themselves."""
    out, p, h, s = _backend.kernel("ca_tail_forward", "triton")(*args)
    x, _, w1, _, w2, _ = args
    grads = _backend.kernel("ca_tail_backward", "triton")(grad, x, w1, w2, p, h, s)
    return out, (p, h, s), grads


def check_triton_against_reference(args, grad, tol):
    out, vectors, (gx, gw1, gb1, gw2, gb2) = run_triton(args, grad)
    ref = forward_backward(reference, [None if t is None else t.double() for t in args], grad.double())
    got = [out, gx, gw1, gb1 if args[3] is not None else None, gw2, gb2 if args[5] is not None else None]
    for name, a, b, arg in zip(NAMES[:2] + NAMES[3:], got, ref[:2] + ref[3:], [args[1], args[0], *args[2:]]):
        if b is None:
            continue
        assert a.dtype == arg.dtype and a.shape == arg.shape, name
        assert rel_err(a, b) < tol, (name, rel_err(a, b))
    return out, vectors


TRITON_SHAPES = [(2, 16, 5, 7, 4), (1, 40, 9, 8, 10), (3, 3, 1, 1, 1), (2, 144, 3, 5, 36), (17, 8, 3, 2, 2)]


@needs_triton
@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_triton_matches_reference(shape, layout):
    args, grad = inputs(*shape, bias=shape[0] % 2 == 1)
    args, grad = in_layout(args, grad, layout)
    out, vectors = check_triton_against_reference(args, grad, OP_TOLERANCE[torch.float64])
    cpu = torch.ops.mprnet.ca_tail_forward(*args)
    for a, b in zip(vectors, cpu[1:]):
        assert rel_err(a, b) < 1e-14
    assert out.stride() == cpu[0].stride()


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
def test_triton_dtypes(dtype):
    args, grad = inputs(2, 24, 6, 5, 6, dtype=dtype)
    check_triton_against_reference(args, grad, OP_TOLERANCE[dtype])


@needs_triton
def test_triton_autocast_mix():
    args, grad = inputs(2, 16, 5, 4, 4, dtype=torch.float32)
    args[0] = args[0].bfloat16()
    args, grad = in_layout(args, grad, "channels_last")
    out, _ = check_triton_against_reference(args, grad, OP_TOLERANCE[torch.bfloat16])
    assert out.dtype == torch.float32


@needs_triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_triton_tiny_tiles_cover_every_loop(layout, monkeypatch):
    """Tiles far smaller than the data, so every loop of the kernels runs several trips: rows
    within a program, parts per sample, channel chunks, sample blocks and partial blocks."""

    from mprnet_kernels.ops.triton import ca_tail as triton_ca_tail
    from mprnet_kernels.ops.triton.utils import cdiv, next_pow2

    class TinyPlan(triton_ca_tail._Plan):
        def __init__(self, n, c, hw, channels_last):
            super().__init__(n, c, hw, channels_last)
            self.block_c, self.block_hw = 2, 4
            self.ctiles = cdiv(c, 2)
            if self.parts:
                self.rows, self.parts = 8, cdiv(hw, 8)

    monkeypatch.setattr(triton_ca_tail, "_Plan", TinyPlan)
    monkeypatch.setattr(triton_ca_tail, "_mlp_blocks", lambda n, c, hidden, parts, tile: (2, 2, 4, next_pow2(hidden)))
    args, grad = in_layout(*inputs(5, 11, 6, 7, 3), layout)
    check_triton_against_reference(args, grad, OP_TOLERANCE[torch.float64])


@needs_triton
# The interpreter runs the kernel in numpy, which warns on the NaN products the test feeds it.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_triton_nan_and_inf_like_reference():
    args, grad = _nonfinite_inputs()
    out, _, (gx, gw1, gb1, gw2, gb2) = run_triton(args, grad)
    ref = forward_backward(reference, args, grad)
    for name, a, b in zip(["out", "grad_x", "grad_w1", "grad_b1", "grad_w2", "grad_b2"],
                          [out, gx, gw1, gb1, gw2, gb2], ref[:2] + ref[3:]):
        assert_nonfinite_like(a, b, name)


@needs_triton
def test_triton_checks_input_like_the_op():
    args, _ = inputs(2, 16, 4, 4, 4)
    with pytest.raises(ValueError, match=r"w2 must have shape \[16, 4\]"):
        _backend.kernel("ca_tail_forward", "triton")(*with_changes(args, w2=lambda t: t[:, :3]))


@needs_triton
def test_triton_empty_batch():
    args, grad = inputs(0, 16, 4, 4, 4)
    out, (p, h, s), (gx, gw1, *_) = run_triton(args, grad)
    assert out.shape == (0, 16, 4, 4) and p.shape == (0, 16) and gw1.abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# GPU: both CUDA backends against the reference and against each other.

def _on_backend(backend, fn, *a):
    with _backend.using_cuda_backend("ca_tail", backend):
        return fn(*a)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("shape", [(16, 96, 37, 29, 24), (1, 40, 64, 64, 10), (4, 3, 7, 5, 1), (2, 144, 1, 1, 36)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cuda_matches_float64(backend, dtype, layout, shape):
    if backend not in _backend.available_backends("ca_tail"):
        pytest.skip(f"no {backend} backend in this install")
    args, grad = in_layout(*inputs(*shape, dtype=dtype, device="cuda"), layout)
    _on_backend(backend, check_against_float64, args, grad, OP_TOLERANCE[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_cuda_backends_agree_in_float64_and_are_deterministic(layout):
    if _backend.available_backends("ca_tail") != ["triton", "cuda"]:
        pytest.skip("needs both CUDA backends")
    args, grad = in_layout(*inputs(16, 96, 64, 64, 24, device="cuda"), layout)
    runs = {b: [_on_backend(b, forward_backward, ca_tail, args, grad) for _ in range(2)] for b in ("triton", "cuda")}
    for b in runs:
        for name, a, c in zip(NAMES, *runs[b]):
            assert torch.equal(a, c), (b, name)  # same bits run after run
    for name, a, c in zip(NAMES, runs["triton"][0], runs["cuda"][0]):
        assert rel_err(a, c) < 1e-13, name


@pytest.mark.gpu
def test_cuda_autocast_mix_and_opcheck():
    args, grad = inputs(4, 40, 33, 31, 10, dtype=torch.float32, device="cuda")
    args[0] = args[0].bfloat16()
    for backend in _backend.available_backends("ca_tail"):
        ours = _on_backend(backend, check_against_float64, args, grad, OP_TOLERANCE[torch.bfloat16])
        assert ours[0].dtype == torch.float32
    leaves = [t.requires_grad_() for t in inputs(2, 16, 5, 7, 4, dtype=torch.float32, device="cuda")[0]]
    torch.library.opcheck(torch.ops.mprnet.ca_tail_forward, leaves)
    with pytest.raises(ValueError, match="r must be on"):
        ca_tail(leaves[0].detach(), leaves[1].detach().cpu(), *[t.detach() for t in leaves[2:]])
