"""The Triton kernels of mprnet::upsample2x_add (mprnet_kernels/ops/upsample2x_add.py, which
gives the taps and the adjoint) and their launchers, forward and backward.

Each program computes a tile of ROWS x COLS elements of its output: for NCHW a row is one image
row of one (n, c) plane and the columns its pixels; for channels_last a row is one pixel and the
columns its channels. So no element pays for an integer division (rows are decomposed once per
row), every input is read through its own strides (no layout copies), and the output is written
in its memory order.
"""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._layout import empty_output, output_memory_format
from .utils import cdiv, next_pow2


@triton.jit
def _forward_taps(o, n):
    """The reference's two source indices and weights along a dimension of size n, for
    output index o of 2n."""
    k = o // 2
    odd = (o % 2) == 1
    first = o == 0
    i0 = tl.where(odd, k, tl.maximum(k - 1, 0))
    i1 = tl.where(odd, tl.minimum(k + 1, n - 1), tl.where(first, tl.minimum(k + 1, n - 1), k))
    w0 = tl.where(odd, 0.75, tl.where(first, 1.0, 0.25))
    return i0, i1, w0, 1.0 - w0


@triton.jit
def _adjoint_tap(i, n, T: tl.constexpr):
    """Tap T (0..4) of x index i of n along one dimension: (grad index, weight, present).
    Taps 0-3 are 2i-1 .. 2i+2 with [0.25, 0.75, 0.75, 0.25], the ones past an end folded
    onto the border tap (weight 1); tap 4 is the forward's weight-0 tap at i = 1."""
    if T == 0:
        idx = 2 * i - 1
        ok = i >= 1
        wt = tl.where(ok, 0.25, 0.0)
    elif T == 1:
        idx = 2 * i
        wt = tl.where(i == 0, 1.0, 0.75)
        ok = i >= 0
    elif T == 2:
        idx = 2 * i + 1
        wt = tl.where(i == n - 1, 1.0, 0.75)
        ok = i >= 0
    elif T == 3:
        idx = 2 * i + 2
        ok = i < n - 1
        wt = tl.where(ok, 0.25, 0.0)
    else:
        idx = 0 * i
        ok = (i == 1) & (n > 1)
        wt = tl.where(ok, 0.0, 0.0)  # weight 0: it only carries a NaN/Inf of g[0] as NaN
    idx = tl.minimum(tl.maximum(idx, 0), 2 * n - 1)
    return idx, wt, ok


@triton.jit
def _tile_coords(pid_r, pid_c, n_rows, n_cols, C, H, W, CL: tl.constexpr, ROWS: tl.constexpr,
                 COLS: tl.constexpr):
    """(n, c, row index, column index, mask) of a ROWS x COLS tile of an (N, C, H, W) tensor
    walked in its memory order (see above); 64-bit throughout."""
    rows = pid_r.to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    cols = pid_c.to(tl.int64) * COLS + tl.arange(0, COLS).to(tl.int64)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    r = rows[:, None]
    if CL:
        col = r % W
        q = r // W
        row = q % H
        n = q // H
        c = cols[None, :]
    else:
        row = r % H
        q = r // H
        c = q % C
        n = q // C
        col = cols[None, :]
    return n, c, row, col, mask


@triton.jit
def _forward_kernel(x_ptr, y_ptr, out_ptr, n_rows, n_cols, C, h, w,
                    sxn, sxc, sxh, sxw, syn, syc, syh, syw, son, soc, soh, sow,
                    CL: tl.constexpr, F64: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    n, c, oh, ow, mask = _tile_coords(tl.program_id(0), tl.program_id(1), n_rows, n_cols, C, 2 * h,
                                      2 * w, CL, ROWS, COLS)
    acc_ty = tl.float64 if F64 else tl.float32
    ih0, ih1, wh0, wh1 = _forward_taps(oh, h)
    iw0, iw1, ww0, ww1 = _forward_taps(ow, w)
    base = x_ptr + n * sxn + c * sxc
    a = tl.load(base + ih0 * sxh + iw0 * sxw, mask=mask, other=0.0).to(acc_ty)
    b = tl.load(base + ih0 * sxh + iw1 * sxw, mask=mask, other=0.0).to(acc_ty)
    d = tl.load(base + ih1 * sxh + iw0 * sxw, mask=mask, other=0.0).to(acc_ty)
    e = tl.load(base + ih1 * sxh + iw1 * sxw, mask=mask, other=0.0).to(acc_ty)
    yv = tl.load(y_ptr + n * syn + c * syc + oh * syh + ow * syw, mask=mask, other=0.0).to(acc_ty)
    up = wh0 * (ww0 * a + ww1 * b) + wh1 * (ww0 * d + ww1 * e)
    tl.store(out_ptr + n * son + c * soc + oh * soh + ow * sow, (up + yv).to(out_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _backward_kernel(g_ptr, gx_ptr, n_rows, n_cols, C, h, w,
                     sgn, sgc, sgh, sgw, son, soc, soh, sow,
                     CL: tl.constexpr, F64: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    n, c, i, j, mask = _tile_coords(tl.program_id(0), tl.program_id(1), n_rows, n_cols, C, h, w, CL,
                                    ROWS, COLS)
    acc_ty = tl.float64 if F64 else tl.float32
    base = g_ptr + n * sgn + c * sgc
    acc = tl.zeros((ROWS, COLS), dtype=acc_ty)
    for tv in tl.static_range(5):
        rv, wv, okv = _adjoint_tap(i, h, tv)
        for th in tl.static_range(5):
            rh, wh, okh = _adjoint_tap(j, w, th)
            g = tl.load(base + rv * sgh + rh * sgw, mask=mask & okv & okh, other=0.0).to(acc_ty)
            acc += (wv * wh) * g
    tl.store(gx_ptr + n * son + c * soc + i * soh + j * sow, acc.to(gx_ptr.dtype.element_ty), mask=mask)


# 1024 elements a program on 8 warps: 4 a thread. On 4 warps the backward's 16-tap gathers
# needed 255 registers and spilled up to 264 bytes a thread (bench/gpu_static.py).
_TILE = 1024
_NUM_WARPS = 8


def _tiling(out):
    """(grid, n_rows, n_cols, layout/tile meta-parameters) for walking `out` in its memory
    order in tiles of _TILE elements."""
    n, c, hh, ww = out.shape
    cl = output_memory_format(out) == torch.channels_last
    n_rows, n_cols = (n * hh * ww, c) if cl else (n * c * hh, ww)
    cols = min(next_pow2(n_cols), _TILE)
    rows = max(1, _TILE // cols)
    grid = (cdiv(n_rows, rows), cdiv(n_cols, cols))
    return grid, n_rows, n_cols, {"CL": cl, "ROWS": rows, "COLS": cols}


def upsample2x_add(x, y):
    checks.upsample2x_add(x, y)
    out = empty_output(y, torch.promote_types(x.dtype, y.dtype))
    if out.numel():
        grid, n_rows, n_cols, meta = _tiling(out)
        _forward_kernel[grid](x, y, out, n_rows, n_cols, x.shape[1], x.shape[2], x.shape[3], *x.stride(),
                              *y.stride(), *out.stride(), F64=out.dtype == torch.float64, num_warps=_NUM_WARPS, **meta)
    return out


def upsample2x_add_backward(grad, x_dtype):
    checks.upsample2x_add_backward(grad, x_dtype)
    n, c, hh, ww = grad.shape
    gx = empty_output(grad, x_dtype, (n, c, hh // 2, ww // 2))
    if gx.numel():
        grid, n_rows, n_cols, meta = _tiling(gx)
        f64 = torch.float64 in (grad.dtype, x_dtype)
        _backward_kernel[grid](grad, gx, n_rows, n_cols, gx.shape[1], gx.shape[2], gx.shape[3], *grad.stride(),
                               *gx.stride(), F64=f64, num_warps=_NUM_WARPS, **meta)
    return gx
