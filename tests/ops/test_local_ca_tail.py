"""mprnet::local_ca_tail against the reference local channel attention (reference.local_ca_tail,
itself tested against explicit loops in tests/test_local_attention.py) in float64: output and
every gradient, windows from 1x1 to the whole map (== ca_tail), odd sizes, layouts, dtypes (the
autocast mix included), determinism, opcheck, gradcheck, torch.compile, NaN/Inf, bad input; the
Triton kernels under the interpreter; on a GPU, the Triton backend against float64."""

import pytest
import torch

import helpers
from helpers import (OP_TOLERANCE, assert_deterministic_across_thread_counts, assert_nonfinite_like, layouts,
                     rel_err, with_changes)
from mprnet_kernels import nn as fused
from mprnet_kernels.ops import _backend, ca_tail, local_ca_tail
from mprnet_kernels.reference import blocks as reference_blocks
from mprnet_kernels.reference import local_ca_tail as reference

HALF_TYPES = [torch.bfloat16, torch.float16]
NAMES = ("out", "grad_x", "grad_r", "grad_w1", "grad_b1", "grad_w2", "grad_b2")

# (N, C, H, W, hidden, window): batch 1 to 16, odd sizes, windows of 1, of the whole map (the
# global tail), of one full dimension, and in between with uneven replicated borders.
CASES = [
    (1, 16, 1, 1, 4, (1, 1)),
    (2, 16, 7, 9, 4, (3, 4)),
    (1, 40, 13, 17, 10, (9, 12)),
    (3, 40, 8, 5, 10, (8, 5)),
    (2, 24, 9, 11, 6, (1, 1)),
    (1, 3, 9, 7, 1, (2, 6)),
    (16, 8, 5, 6, 2, (4, 3)),
    (2, 96, 17, 19, 24, (6, 10)),
    (1, 20, 6, 33, 5, (6, 1)),
    (2, 12, 20, 3, 3, (1, 3)),
]


def _id(case):
    return "x".join(map(str, case[:5])) + "-w" + "x".join(map(str, case[5]))


inputs = helpers.ca_tail_inputs


def forward_backward(fn, args, grad, window):
    return helpers.forward_backward(lambda *a: fn(*a, window), *args, grad=grad)


def float64_reference(args, grad, window):
    return forward_backward(reference, [None if t is None else t.double() for t in args], grad.double(), window)


def check_against_float64(args, grad, window, tol, fn=local_ca_tail):
    ours = forward_backward(fn, args, grad, window)
    ref = float64_reference(args, grad, window)
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


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_matches_reference(case, dtype, layout):
    *shape, window = case
    args, grad = in_layout(*inputs(*shape, dtype=dtype, bias=sum(shape) % 2 == 0), layout)
    out = check_against_float64(args, grad, window, OP_TOLERANCE[dtype])[0]
    channels_last = layout == "channels_last" and shape[1] > 1 and shape[2] * shape[3] > 1
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_larger_map_float32(layout):
    """A map large enough that the running sums take hundreds of steps each way."""
    args, grad = in_layout(*inputs(1, 40, 150, 260, 10, dtype=torch.float32), layout)
    check_against_float64(args, grad, (81, 97), OP_TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_whole_map_window_is_ca_tail(dtype, layout):
    args, grad = in_layout(*inputs(2, 24, 9, 13, 6, dtype=dtype), layout)
    ours = forward_backward(local_ca_tail, args, grad, (9, 13))
    glob = helpers.forward_backward(ca_tail, *args, grad=grad)
    for name, a, b in zip(NAMES, ours, glob):
        assert rel_err(a, b) < OP_TOLERANCE[dtype], name


def test_window_of_one_gates_each_pixel_by_its_own_channels():
    args, _ = inputs(2, 8, 5, 6, 2)
    x, r, w1, b1, w2, b2 = args
    h = torch.relu(torch.einsum("jc,nchw->njhw", w1.flatten(1), x) + b1[:, None, None])
    s = torch.sigmoid(torch.einsum("cj,njhw->nchw", w2.flatten(1), h) + b2[:, None, None])
    assert rel_err(local_ca_tail(*args, (1, 1)), x * s + r) < 1e-14


def test_mixed_layouts_and_2d_weights():
    args, grad = inputs(2, 16, 7, 6, 4, conv_weights=False)
    x, r, *w = args
    out = local_ca_tail(layouts(x)["channels_last"], layouts(r)["strided"], *w, (3, 2))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_err(out, reference(*args, (3, 2))) < 1e-14
    grads = forward_backward(local_ca_tail, args, grad, (3, 2))
    assert grads[3].shape == (4, 16) and grads[5].shape == (16, 4)


@pytest.mark.parametrize("x_dtype", HALF_TYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_autocast_mix_half_x_float32_residual_and_weights(x_dtype, layout):
    """A half-precision body output beside a float32 block input and float32 weights, as under
    autocast: out is float32, each gradient in its input's dtype, nothing cast first."""
    args, grad = inputs(3, 40, 9, 11, 10, dtype=torch.float32)
    args[0] = args[0].to(x_dtype)
    args, grad = in_layout(args, grad, layout)
    ours = check_against_float64(args, grad, (5, 4), OP_TOLERANCE[x_dtype])
    assert ours[0].dtype == torch.float32 and ours[1].dtype == x_dtype and ours[2].dtype == torch.float32


def test_weights_in_another_dtype_than_x():
    args, grad = inputs(2, 16, 6, 5, 4)
    ours = check_against_float64([args[0].float(), args[1].float(), *args[2:]], grad.float(), (4, 2),
                                 OP_TOLERANCE[torch.float32])
    assert ours[3].dtype == torch.float64


def test_fused_calayer_with_a_window_matches_the_reference_layer():
    ref = reference_blocks.CALayer(16, 4).double()
    ref.window = (4, 5)
    layer = fused.CALayer.from_reference(ref)
    x, r = inputs(2, 16, 9, 8, 4)[0][:2]
    expected = ref(x) + r  # window (4, 5) on a 9 x 8 map
    assert rel_err(layer(x, residual=r), expected) < 1e-13
    layer.window = (100, 100)  # larger than the map: the whole map, the global layer
    down, up = ref.conv_du[0], ref.conv_du[2]
    assert rel_err(layer(x, residual=r), ca_tail(x, r, down.weight, down.bias, up.weight, up.bias)) < 1e-13


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_deterministic_across_runs_and_thread_counts(layout):
    args, grad = in_layout(*inputs(2, 40, 37, 45, 10, dtype=torch.float32), layout)
    many = max(2, torch.get_num_threads())
    assert_deterministic_across_thread_counts(
        lambda: torch.ops.mprnet.local_ca_tail(*args, 20, 31), (1, many, many))


# The full Jacobian once; fast mode (a random projection of it) for the other layout.
@pytest.mark.parametrize("layout, bias, fast", [("contiguous", True, False), ("channels_last", False, True)])
def test_gradcheck(layout, bias, fast):
    args, _ = inputs(2, 4, 4, 5, 2, bias=bias)
    args = [None if t is None else t.requires_grad_() for t in in_layout(args, args[0], layout)[0]]
    assert torch.autograd.gradcheck(lambda *a: local_ca_tail(*a, (3, 4)), tuple(args), fast_mode=fast)


def test_gradient_to_weights_only():
    args, grad = inputs(2, 16, 4, 5, 4)
    w1 = args[2].requires_grad_()
    local_ca_tail(*args, (2, 3)).backward(grad)
    assert rel_err(w1.grad, float64_reference(args, grad, (2, 3))[3]) < 1e-12


@pytest.mark.parametrize(
    "make, window",
    [
        (lambda: inputs(2, 8, 5, 7, 2)[0], (3, 4)),
        (lambda: in_layout(*inputs(2, 16, 3, 5, 4, dtype=torch.float32, bias=False), "channels_last")[0], (1, 2)),
        (lambda: inputs(3, 8, 4, 4, 2, dtype=torch.bfloat16)[0], (4, 1)),
    ],
)
def test_opcheck(make, window):
    args = [None if t is None else t.requires_grad_() for t in make()]
    torch.library.opcheck(torch.ops.mprnet.local_ca_tail, (*args, *window))


def test_torch_compile_fullgraph_with_backward():
    args, grad = inputs(2, 16, 6, 7, 4, dtype=torch.float32)

    def fn(*a):
        return local_ca_tail(*a, (3, 5)) * 2 + 1

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager = helpers.forward_backward(fn, *args, grad=grad)
    for name, a, b in zip(NAMES, helpers.forward_backward(compiled, *args, grad=grad), eager):
        assert torch.equal(a, b), name


def test_double_backward_is_rejected():
    args, grad = inputs(1, 8, 3, 3, 2)
    x = args[0].requires_grad_()
    with pytest.raises(NotImplementedError, match="double backward"):
        torch.autograd.grad(local_ca_tail(*args, (2, 2)), x, grad, create_graph=True)


def test_empty_batch():
    args, grad = inputs(0, 16, 4, 4, 4)
    out, gx, gr, gw1, gb1, gw2, gb2 = forward_backward(local_ca_tail, args, grad, (2, 3))
    assert out.shape == (0, 16, 4, 4) and gx.shape == out.shape
    assert gw1.abs().sum() == 0 and gb2.abs().sum() == 0  # sums over no samples


def _nonfinite_inputs():
    args, grad = inputs(3, 16, 9, 10, 4)
    x, r = args[0], args[1]
    x[0, 2, 4, 5] = float("nan")  # poisons the means of sample 0 from its windows onwards
    x[1, 5, 2, 3] = float("inf")  # inf where the windows hold it, NaN where it has left them
    r[2, 7, 2, 2] = -float("inf")  # only that element of sample 2
    return args, grad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_nan_and_inf_propagate_like_reference(dtype, layout):
    """The reference's means come from an integral image, so a NaN or Inf reaches every window
    to the right of and below it, not only the windows holding it; ours reach exactly the same
    positions, in the output and in every gradient."""
    args, grad = _nonfinite_inputs()
    args, grad = in_layout([t.to(dtype) for t in args], grad.to(dtype), layout)
    ours = forward_backward(local_ca_tail, args, grad, (3, 4))
    ref = float64_reference(args, grad, (3, 4))
    assert torch.isnan(ours[0][0]).sum() > 16  # more than the windows holding the NaN
    for name, a, b in zip(NAMES, ours, ref):
        assert_nonfinite_like(a, b, name, OP_TOLERANCE[dtype])


# The argument errors ca_tail has (window (2, 2)), then the window's own.
BAD_INPUTS = [(changes, (2, 2), error, words) for changes, error, words in helpers.ca_tail_bad_inputs(2, 16, 4, 5)] + [
    (dict(), (5, 2), ValueError, ["k1 (the window's height) must satisfy 1 <= k1 <= H = 4", "got 5"]),
    (dict(), (0, 2), ValueError, ["k1 (the window's height) must satisfy 1 <= k1 <= H = 4", "got 0"]),
    (dict(), (2, 6), ValueError, ["k2 (the window's width) must satisfy 1 <= k2 <= W = 5", "got 6"]),
    (dict(), (2, -1), ValueError, ["k2 (the window's width) must satisfy 1 <= k2 <= W = 5", "got -1"]),
    (dict(), (2.0, 2), TypeError, ["window must be a pair of ints (k1, k2), got (2.0, 2)"]),
    (dict(), (True, 2), TypeError, ["window must be a pair of ints"]),
    (dict(), (2, 2, 2), TypeError, ["window must be a pair of ints"]),
    (dict(), 3, TypeError, ["window must be a pair of ints (k1, k2), got 3"]),
]
# Under compile: a shape error of r and of w2 (found by the fake function) and a window error.
UNDER_COMPILE = [c for c in BAD_INPUTS if c[3][0].startswith(("r must have shape", "w2 must have shape", "k1 "))][:3]


@pytest.mark.parametrize("changes, window, error, words", BAD_INPUTS)
def test_bad_input(changes, window, error, words):
    args, _ = inputs(2, 16, 4, 5, 4)
    with pytest.raises(error) as info:
        local_ca_tail(*with_changes(args, **changes), window)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert "mprnet::local_ca_tail" in str(info.value)


@pytest.mark.parametrize("changes, window, error, words", UNDER_COMPILE)
def test_bad_input_under_compile(changes, window, error, words):
    args, _ = inputs(2, 16, 4, 5, 4)
    fn = torch.compile(lambda *a: local_ca_tail(*a, window), fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match=words[0].replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        fn(*with_changes(args, **changes))


def test_bad_input_on_meta_tensors():
    args, _ = inputs(2, 16, 4, 5, 4, device="meta")
    assert torch.ops.mprnet.local_ca_tail(*args, 4, 5).shape == (2, 16, 4, 5)
    with pytest.raises(ValueError, match="k2 .* must satisfy 1 <= k2 <= W = 5"):
        torch.ops.mprnet.local_ca_tail(*args, 4, 6)


# ---------------------------------------------------------------------------------------------
# Triton, through its own entry point on CPU tensors (TRITON_INTERPRET=1, set by conftest.py).

needs_triton = pytest.mark.skipif(not _backend.HAS_TRITON, reason="Triton is not installed")


def run_triton(args, window):
    return _backend.kernel("local_ca_tail", "triton")(*args, *window)


def check_triton(args, window, tol):
    out = run_triton(args, window)
    expected = reference(*[None if t is None else t.double() for t in args], window)
    assert out.dtype == args[1].dtype and out.shape == args[0].shape
    assert rel_err(out, expected) < tol, rel_err(out, expected)
    cpu = torch.ops.mprnet.local_ca_tail(*args, *window)
    assert out.stride() == cpu.stride()
    return out


TRITON_CASES = [CASES[1], CASES[3], CASES[5], (3, 8, 6, 7, 2, (1, 1))]


@needs_triton
@pytest.mark.parametrize("case", TRITON_CASES, ids=_id)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_triton_matches_reference(case, layout):
    *shape, window = case
    args, _ = in_layout(*inputs(*shape, bias=shape[0] % 2 == 1), layout)
    check_triton(args, window, OP_TOLERANCE[torch.float64])


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_triton_dtypes(dtype, layout):
    args, _ = in_layout(*inputs(2, 24, 7, 9, 6, dtype=dtype), layout)
    check_triton(args, (3, 4), OP_TOLERANCE[dtype])


@needs_triton
def test_triton_autocast_mix():
    args, _ = inputs(2, 16, 5, 7, 4, dtype=torch.float32)
    args[0] = args[0].bfloat16()
    args, _ = in_layout(args, args[0], "channels_last")
    assert check_triton(args, (2, 3), OP_TOLERANCE[torch.bfloat16]).dtype == torch.float32


@needs_triton
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_triton_tiny_tiles_cover_every_loop(layout, monkeypatch):
    """Tiles far smaller than the data, so every loop runs several trips with a partial last
    one: rows and columns of the running sums, channel chunks of both products, pixel tiles."""
    from mprnet_kernels.ops.triton import local_ca_tail as triton_local

    class TinyPlan(triton_local._Plan):
        def __init__(self, c, w, hidden, channels_last):
            super().__init__(c, w, hidden, channels_last)
            self.v_block_r, self.h_block_b = 2, 2
            self.v_block_j, self.v_block_c = (4, 8) if channels_last else (8, 1)
            self.h_block_l = 8
            self.block_p, self.block_k, self.row_chunk = 16, 16, 32

    monkeypatch.setattr(triton_local, "_Plan", TinyPlan)
    args, _ = in_layout(*inputs(2, 20, 7, 37, 5), layout)
    check_triton(args, (3, 6), OP_TOLERANCE[torch.float64])


@needs_triton
# The interpreter runs the kernels in numpy, which warns on the NaN arithmetic the test feeds it.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_triton_nan_and_inf_like_reference(layout):
    args, _ = _nonfinite_inputs()
    args, _ = in_layout(args, args[0], layout)
    assert_nonfinite_like(run_triton(args, (3, 4)), reference(*args, (3, 4)), "out", OP_TOLERANCE[torch.float64])


@needs_triton
def test_triton_checks_input_like_the_op():
    args, _ = inputs(2, 16, 4, 5, 4)
    with pytest.raises(ValueError, match=r"w2 must have shape \[16, 4\]"):
        run_triton(with_changes(args, w2=lambda t: t[:, :3]), (2, 2))
    with pytest.raises(ValueError, match="k1 .* must satisfy 1 <= k1 <= H = 4"):
        run_triton(args, (5, 2))


@needs_triton
def test_triton_empty_batch():
    args, _ = inputs(0, 16, 4, 4, 4)
    assert run_triton(args, (2, 2)).shape == (0, 16, 4, 4)


# ---------------------------------------------------------------------------------------------
# GPU: the Triton backend (the only CUDA one) against float64.

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("case", [(4, 96, 37, 29, 24, (19, 15)), (1, 40, 64, 64, 10, (48, 48)),
                                  (2, 3, 7, 5, 1, (1, 1)), (2, 144, 9, 11, 36, (9, 11))], ids=_id)
def test_cuda_matches_float64(dtype, layout, case):
    *shape, window = case
    args, grad = in_layout(*inputs(*shape, dtype=dtype, device="cuda"), layout)
    check_against_float64(args, grad, window, OP_TOLERANCE[dtype])


@pytest.mark.gpu
def test_cuda_deterministic_and_autocast_mix():
    args, grad = inputs(2, 96, 45, 61, 24, dtype=torch.float32, device="cuda")
    runs = [torch.ops.mprnet.local_ca_tail(*args, 30, 40) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    args[0] = args[0].bfloat16()
    assert check_against_float64(args, grad, (30, 40), OP_TOLERANCE[torch.bfloat16])[0].dtype == torch.float32
