"""The CUDA C++ loss kernels' tile functions (csrc/ops/loss_tile.h), run on the CPU.

The test-only module of tests/native/ (edge_loss_tiles and mprnet_loss_tiles) executes the very functions the
CUDA kernels of mprnet::edge_loss and mprnet::mprnet_loss run, block after block and thread
after thread, with the host side the CUDA ops use (tests/native/loss_tile_host.cpp). So these
tests check on any machine what the kernels compute: the stencils, halos and ring buffers of
the row pipeline, the border folds of the adjoint, the strips and chunks of the partition, the
stage groups, layouts and dtypes. Small strips (16 columns, 32 threads) and chunks (8 rows) put
many tile borders in small images; the kernels' own geometry (128 columns, 160 threads) is run
too. Shared memory starts as NaN in every emulated block, so reading anything no stage wrote
fails the comparison. What is left to the GPU tests: the launch and the barriers.
"""

import itertools
from functools import partial

import pytest
import torch

import helpers
from helpers import OP_TOLERANCE, assert_nonfinite_like, forward_backward, layouts, rel_err
from mprnet_kernels import build_info, ops
from native_ext import loss_tile_host
from mprnet_kernels.ops import _backend
from mprnet_kernels.reference import losses as ref

HALF_TYPES = [torch.bfloat16, torch.float16]
ALL_TYPES = [torch.float64, torch.float32, *HALF_TYPES]
SMALL_SIZES = list(itertools.product(range(1, 7), range(1, 7)))
# (tile_w, chunk_rows): the kernels' partition, and a small one with many tile borders.
PARTITIONS = [(128, 0), (16, 8)]

inputs = partial(helpers.seeded_randn, 2)


def edge_tiles(x, y, eps=1e-3, compute_grad=True, tile_w=16, chunk_rows=8, reverse=False):
    return loss_tile_host().edge_loss_tiles(x, y, eps, compute_grad, tile_w, chunk_rows, reverse)


def check_edge(x, y, tol, tile_w=16, chunk_rows=8, eps=1e-3):
    """The emulated kernel in x's dtype against the reference in float64 on the same values;
    its gradient is that of the sum, numel times dL/dx."""
    loss, grad = edge_tiles(x, y, eps, True, tile_w, chunk_rows)
    r_loss, r_gx, _ = forward_backward(lambda a, b: ref.edge_loss(a, b, eps), x.double(), y.double())
    assert loss.dtype == x.dtype and grad.dtype == x.dtype and grad.shape == x.shape
    assert rel_err(loss, r_loss) < tol, ("loss", rel_err(loss, r_loss))
    assert rel_err(grad.double() / x.numel(), r_gx) < tol, ("grad", rel_err(grad.double() / x.numel(), r_gx))
    loss_only, empty = edge_tiles(x, y, eps, False, tile_w, chunk_rows)
    assert empty.numel() == 0
    assert rel_err(loss_only, r_loss) < tol, ("loss without gradient", rel_err(loss_only, r_loss))
    return loss, grad


def test_cuda_cpp_backend_registered_triton_stays_default():
    # The CUDA C++ kernels are the "cuda" backend of both ops in CUDA builds; the default stays
    # Triton until a GPU benchmark says otherwise (mprnet_kernels/ops/_backend.py).
    for op in ("edge_loss", "mprnet_loss"):
        expected = (["triton"] if _backend.HAS_TRITON else []) + (["cuda"] if build_info()["cuda_version"] else [])
        assert ops.available_backends(op) == expected, op
        assert _backend._defaults[op] == "triton", op


# ------------------------------------------------------------------------------------ edge loss


@pytest.mark.parametrize("h, w", SMALL_SIZES)
@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
def test_edge_every_small_size_float64(h, w, tile_w, chunk_rows):
    x, y = inputs((1, 2, h, w))
    check_edge(x, y, 1e-12, tile_w, chunk_rows)


@pytest.mark.parametrize("shape", [(1, 1, 9, 40), (1, 2, 37, 45), (2, 3, 17, 16), (1, 1, 70, 33), (8, 3, 11, 19)])
@pytest.mark.parametrize("chunk_rows", [8, 16, 0])
def test_edge_tiles_and_chunks_float64(shape, chunk_rows):
    """Several strips and chunks per plane, odd and even sizes: every tile border inside the
    image, where a block reads its neighbours' rows and columns as halo."""
    x, y = inputs(shape)
    check_edge(x, y, 1e-12, 16, chunk_rows)


@pytest.mark.parametrize("shape", [(1, 3, 67, 300), (2, 1, 130, 129), (1, 64, 9, 8)])
def test_edge_kernel_geometry_float64(shape):
    """The CUDA kernels' own strips (128 columns, 160 threads) and choice of chunks."""
    x, y = inputs(shape)
    check_edge(x, y, 1e-12, 128, 0)
    check_edge(x, y, 1e-12, 128, 24)


def test_edge_matches_cpu_kernel_closely():
    # Two implementations of the same float64 arithmetic (weights from the same definitions).
    x, y = inputs((2, 3, 45, 37))
    loss, grad = edge_tiles(x, y)
    cpu_loss, cpu_grad = torch.ops.mprnet.edge_loss(x, y, 1e-3, True)
    assert rel_err(loss, cpu_loss) < 1e-14 and rel_err(grad, cpu_grad) < 1e-14


@pytest.mark.parametrize("dtype", ALL_TYPES)
@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
def test_edge_dtypes(dtype, tile_w, chunk_rows):
    x, y = inputs((2, 3, 29, 150), dtype)
    check_edge(x, y, OP_TOLERANCE[dtype], tile_w, chunk_rows)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_edge_layouts(layout, dtype):
    base = inputs((2, 5, 19, 23), dtype)
    x, y = (layouts(t)[layout] for t in base)
    loss, grad = check_edge(x, y, OP_TOLERANCE[dtype])
    loss0, grad0 = edge_tiles(*base)
    # Layouts change where values are read, not how they are computed.
    assert torch.equal(loss, loss0) and torch.equal(grad, grad0)
    expect_cl = layout == "channels_last"
    assert grad.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


def test_edge_mixed_layouts():
    x, y = inputs((2, 4, 13, 21))
    loss, grad = edge_tiles(layouts(x)["channels_last"], layouts(y)["strided"])
    loss0, grad0 = edge_tiles(x, y)
    assert torch.equal(loss, loss0) and torch.equal(grad, grad0)


@pytest.mark.parametrize("eps", [1e-3, 0.1, 2.0])
def test_edge_eps(eps):
    x, y = inputs((1, 2, 21, 18))
    check_edge(x, y, 1e-12, eps=eps)


@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_no_race_between_threads_and_deterministic(tile_w, chunk_rows, dtype):
    """Running each stage's threads last to first changes nothing (no thread reads what another
    writes in the same stage), and runs repeat bit for bit."""
    x, y = inputs((2, 3, 41, 150), dtype)
    forward = edge_tiles(x, y, tile_w=tile_w, chunk_rows=chunk_rows)
    again = edge_tiles(x, y, tile_w=tile_w, chunk_rows=chunk_rows)
    backward = edge_tiles(x, y, tile_w=tile_w, chunk_rows=chunk_rows, reverse=True)
    helpers.assert_same_bits(again, forward)
    helpers.assert_same_bits(backward, forward)


def test_edge_empty_gives_nan():
    x, y = inputs((0, 3, 4, 4))
    loss, grad = edge_tiles(x, y)
    assert torch.isnan(loss) and grad.shape == (0, 3, 4, 4)
    x, y = inputs((2, 3, 0, 5))
    assert torch.isnan(edge_tiles(x, y)[0])


@pytest.mark.parametrize(
    "poison",
    [
        {"x": [((0, 0, 0, 0), float("nan"))]},
        {"y": [((0, 1, 3, 4), float("inf"))]},
        {"x": [((0, 2, 8, 17), -float("inf"))], "y": [((0, 0, 1, 1), float("inf"))]},
        {"x": [((0, 1, 16, 15), float("nan"))]},  # on a tile corner of the small partition
    ],
)
def test_edge_nan_and_inf_like_reference(poison):
    x, y = inputs((1, 3, 20, 19))
    for name, points in poison.items():
        for index, value in points:
            (x if name == "x" else y)[index] = value
    r_loss, r_gx, _ = forward_backward(ref.edge_loss, x, y)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        loss, grad = edge_tiles(x.to(dtype), y.to(dtype))
        assert_nonfinite_like(loss, r_loss, (dtype, "loss"))
        assert_nonfinite_like(grad.double() / x.numel(), r_gx, (dtype, "grad"))


def test_edge_bad_input():
    x, y = inputs((2, 3, 4, 5))
    with pytest.raises(ValueError, match="y must have shape"):
        edge_tiles(x, y[:, :2])
    with pytest.raises(ValueError, match="tile_w must be 128 or 16"):
        edge_tiles(x, y, tile_w=64)


# --------------------------------------------------------------------------- the MPRNet loss


def stage_inputs(shape, dtype=torch.float64, seed=0, stages=3):
    """Stage outputs spilling past [0, 1] (so clamp cuts some) and a target in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    outs = [torch.rand(shape, generator=g, dtype=torch.float64) * 1.4 - 0.2 for _ in range(stages)]
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    return [o.to(dtype) for o in outs], y.to(dtype)


def mprnet_tiles(outs, y, edge_weight=0.05, clamp=False, grad_outputs=True, grad_y=True, tile_w=16,
                 chunk_rows=8, max_group=3, reverse=False, eps=1e-3):
    return loss_tile_host().mprnet_loss_tiles(outs, y, eps, edge_weight, clamp, grad_outputs, grad_y, tile_w,
                                         chunk_rows, max_group, reverse)


def reference_mprnet(outs, y, edge_weight, clamp):
    """Loss and gradients of the reference in float64."""
    outs = [o.detach().double().requires_grad_() for o in outs]
    y = y.detach().double().requires_grad_()
    loss = ref.MPRNetLoss(edge_weight=edge_weight, clamp=clamp)(outs, y)
    loss.backward()
    return loss, [o.grad for o in outs], y.grad


def check_mprnet(outs, y, tol, edge_weight=0.05, clamp=False, **kw):
    loss, grads, gy = mprnet_tiles(outs, y, edge_weight, clamp, **kw)
    r_loss, r_grads, r_gy = reference_mprnet(outs, y, edge_weight, clamp)
    n = y.numel()
    assert loss.dtype == y.dtype and gy.dtype == y.dtype
    assert rel_err(loss, r_loss) < tol, ("loss", rel_err(loss, r_loss))
    for s, (a, b) in enumerate(zip(grads, r_grads)):
        assert a.dtype == y.dtype
        assert rel_err(a.double() / n, b) < tol, (f"grad outputs[{s}]", rel_err(a.double() / n, b))
    assert rel_err(gy.double() / n, r_gy) < tol, ("grad y", rel_err(gy.double() / n, r_gy))
    no_grad = mprnet_tiles(outs, y, edge_weight, clamp, False, False, **kw)
    assert all(g.numel() == 0 for g in no_grad[1]) and no_grad[2].numel() == 0
    assert rel_err(no_grad[0], r_loss) < tol, ("loss without gradients", rel_err(no_grad[0], r_loss))
    return loss, grads, gy


RECIPES = [(0.05, False), (0.0, True), (0.05, True), (0.0, False)]


@pytest.mark.parametrize("h, w", [(1, 1), (1, 5), (2, 3), (3, 1), (4, 4), (5, 2), (5, 6), (6, 5)])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
def test_mprnet_small_sizes_float64(h, w, edge_weight, clamp):
    check_mprnet(*stage_inputs((1, 2, h, w)), 1e-12, edge_weight, clamp)


@pytest.mark.parametrize("shape", [(2, 3, 37, 45), (8, 3, 7, 6), (1, 64, 5, 4), (1, 1, 70, 33)])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
def test_mprnet_float64(shape, edge_weight, clamp, tile_w, chunk_rows):
    check_mprnet(*stage_inputs(shape), 1e-12, edge_weight, clamp, tile_w=tile_w, chunk_rows=chunk_rows)


@pytest.mark.parametrize("stages", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("max_group", [1, 2, 3])
@pytest.mark.parametrize("edge_weight", [0.05, 0.0])
def test_mprnet_stage_groups(stages, max_group, edge_weight):
    """Stage outputs in groups per launch: the target's gradient carried between launches."""
    outs, y = stage_inputs((1, 2, 13, 20), stages=stages)
    check_mprnet(outs, y, 1e-12, edge_weight, True, max_group=max_group)
    grouped = mprnet_tiles(outs, y, edge_weight, True, max_group=max_group)
    whole = mprnet_tiles(outs, y, edge_weight, True, max_group=3)
    # Per element the same sums in the same order: the gradients do not depend on the groups.
    helpers.assert_same_bits(grouped[1:], whole[1:])


@pytest.mark.parametrize("which", [(True, False), (False, True)], ids=["outputs", "y"])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES[:2])
def test_mprnet_gradient_to_outputs_or_y_only(which, edge_weight, clamp):
    outs, y = stage_inputs((2, 3, 11, 18))
    loss, grads, gy = mprnet_tiles(outs, y, edge_weight, clamp, *which)
    both = mprnet_tiles(outs, y, edge_weight, clamp, True, True)
    assert torch.equal(loss, both[0])
    if which[0]:
        assert gy.numel() == 0 and all(torch.equal(a, b) for a, b in zip(grads, both[1]))
    else:
        assert all(g.numel() == 0 for g in grads) and torch.equal(gy, both[2])


@pytest.mark.parametrize("dtype", [torch.float32, *HALF_TYPES])
@pytest.mark.parametrize("edge_weight, clamp", RECIPES[:2])
@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
def test_mprnet_lower_precision(dtype, edge_weight, clamp, tile_w, chunk_rows):
    check_mprnet(*stage_inputs((2, 3, 21, 140), dtype), OP_TOLERANCE[dtype], edge_weight, clamp,
                 tile_w=tile_w, chunk_rows=chunk_rows)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mprnet_layouts_mixed_across_stages(dtype):
    outs, y = stage_inputs((2, 5, 9, 20), dtype)
    mixed = [layouts(outs[0])["channels_last"], layouts(outs[1])["strided"], outs[2]]
    plain = mprnet_tiles(outs, y)
    for y_layout in ("contiguous", "channels_last", "strided"):
        loss, grads, gy = check_mprnet(mixed, layouts(y)[y_layout], OP_TOLERANCE[dtype])
        helpers.assert_same_bits((loss, grads, gy), plain)
        assert grads[0].is_contiguous(memory_format=torch.channels_last)
        assert grads[1].is_contiguous() and grads[2].is_contiguous()
        expect_cl = y_layout == "channels_last"
        assert gy.is_contiguous(memory_format=torch.channels_last if expect_cl else torch.contiguous_format)


def test_mprnet_clamp_gradient_at_bounds():
    """torch.clamp's mask: no gradient at exactly 0 or 1, outside, or at NaN-free edges; the
    target's gradient is never masked."""
    outs, y = stage_inputs((1, 2, 4, 5))
    values = torch.tensor([0.0, 1.0, -0.5, 1.5, 0.25, 1e-300, 1 - 2**-53], dtype=torch.float64)
    outs[0].view(-1)[: values.numel()] = values
    outs[1].view(-1)[:2] = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for edge_weight in (0.05, 0.0):
        check_mprnet(outs, y, 1e-12, edge_weight, True)
        _, grads, _ = mprnet_tiles(outs, y, edge_weight, True)
        assert (grads[0].view(-1)[:4] == 0).all() and (grads[0].view(-1)[4:7] != 0).all()


def test_mprnet_matches_cpu_kernel_closely():
    outs, y = stage_inputs((2, 3, 45, 37))
    ours = mprnet_tiles(outs, y, 0.05, True)
    cpu = torch.ops.mprnet.mprnet_loss(outs, y, 1e-3, 0.05, True, True, True)
    assert rel_err(ours[0], cpu[0]) < 1e-14 and rel_err(ours[2], cpu[2]) < 1e-14
    assert all(rel_err(a, b) < 1e-14 for a, b in zip(ours[1], cpu[1]))


@pytest.mark.parametrize("tile_w, chunk_rows", PARTITIONS)
@pytest.mark.parametrize("edge_weight", [0.05, 0.0])
def test_mprnet_no_race_and_deterministic(tile_w, chunk_rows, edge_weight):
    outs, y = stage_inputs((2, 3, 41, 150), torch.float32)
    outs[1].view(-1)[5] = 2.0**62  # an order-sensitive sum
    kw = dict(edge_weight=edge_weight, clamp=True, tile_w=tile_w, chunk_rows=chunk_rows)
    first = mprnet_tiles(outs, y, **kw)
    helpers.assert_same_bits(mprnet_tiles(outs, y, **kw), first)
    helpers.assert_same_bits(mprnet_tiles(outs, y, reverse=True, **kw), first)


@pytest.mark.parametrize("edge_weight, clamp", RECIPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_mprnet_nan_and_inf_like_reference(edge_weight, clamp, bad):
    outs, y = stage_inputs((1, 2, 17, 19))
    outs[1][0, 1, 8, 15] = bad
    a_loss, a_grads, a_gy = mprnet_tiles(outs, y, edge_weight, clamp)
    b_loss, b_grads, b_gy = reference_mprnet(outs, y, edge_weight, clamp)
    n = y.numel()
    assert_nonfinite_like(a_loss, b_loss, "loss")
    assert_nonfinite_like(a_gy / n, b_gy, "grad_y", 1e-12)
    for s, (a, b) in enumerate(zip(a_grads, b_grads)):
        assert_nonfinite_like(a / n, b, f"outputs[{s}]", 1e-12)


def test_mprnet_empty():
    outs, y = stage_inputs((0, 3, 4, 4))
    loss, grads, gy = mprnet_tiles(outs, y)
    assert torch.isnan(loss) and grads[0].shape == gy.shape == y.shape
