"""The Triton kernels of mprnet::edge_loss (mprnet_kernels/ops/edge_loss.py, which gives the
math) and their launcher: four passes, u = U(G(d)), lap = d - G(u) with the loss, then for the
gradient P = U G^T(w) and grad = w - G^T(P). mprnet_loss's Triton path calls the launcher per
stage."""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._dtypes import accumulation_dtype
from .._layout import empty_output
from .utils import cdiv, mean_of_partials, split_f32

# The 1-D taps g_k, k = -2..2, of the 5x5 Gaussian outer(g, g).
GAUSS_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)


@triton.jit
def _div(a, b):
    """a / b correctly rounded (Triton's plain float32 division is approximate)."""
    if a.dtype == tl.float64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def _sqrt(a):
    if a.dtype == tl.float64:
        return tl.sqrt(a)
    else:
        return tl.sqrt_rn(a)


@triton.jit
def _plane_base(pid_plane, C, s_n, s_c):
    """Offset of plane (n, c) = divmod(pid_plane, C) in a 4-D tensor, in 64 bits."""
    p = pid_plane.to(tl.int64)
    return (p // C) * s_n + (p % C) * s_c


@triton.jit
def _adjoint_weight(out, src, n, g_k, g_fold0, g_fold1):
    """A(out, src), the weight of in[src] in G^T(in)[out] along an axis of length n, for
    src = out - k (g_k = g[k], k = -2..2; the caller masks src outside [0, n)).

    A(m, i) = sum_k g_k [clamp(i + k) == m] (G reads i + k and replicate padding moved the
    read to clamp(i + k)), which is g_{m-i} plus the reads that clamping moved onto m:
    m = 0 collects the reads at -1 and -2, from i = 0 (g_-1 + g_-2 = g_fold0) and i = 1
    (g_-2 = g_fold1); m = n - 1 likewise from i = n - 1 and n - 2. For n = 1 both apply and
    A = g_0 + 2 g_fold0 = 1: every tap folds onto the single pixel.
    """
    first = tl.where(src == 0, g_fold0, tl.where(src == 1, g_fold1, 0.0))
    last = tl.where(src == n - 1, g_fold0, tl.where(src == n - 2, g_fold1, 0.0))
    w = g_k + tl.where(out == 0, first, 0.0)
    w = w + tl.where(out == n - 1, last, 0.0)
    return w


@triton.jit
def _coarse_blur_kernel(x_ptr, y_ptr, u_ptr, g_ptr, C, H, W, Hc, Wc,
                        sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w,
                        BP: tl.constexpr, BQ: tl.constexpr):
    """u[p, q] = 4 G(d)[2p, 2q] on a BP x BQ tile of the coarse grid (U keeps only even
    rows and columns): u_ptr is (planes, Hc, Wc) contiguous in the working dtype.
    Replicate padding is the clamp of each read index into the plane."""
    pid_plane = tl.program_id(0)
    p = tl.program_id(1) * BP + tl.arange(0, BP)
    q = tl.program_id(2) * BQ + tl.arange(0, BQ)
    acc_ty = u_ptr.dtype.element_ty
    xb = _plane_base(pid_plane, C, sx_n, sx_c)
    yb = _plane_base(pid_plane, C, sy_n, sy_c)
    acc = tl.zeros((BP, BQ), dtype=acc_ty)
    for a in tl.static_range(5):
        r = tl.minimum(tl.maximum(2 * p + (a - 2), 0), H - 1).to(tl.int64)
        row = tl.zeros((BP, BQ), dtype=acc_ty)
        for b in tl.static_range(5):
            c = tl.minimum(tl.maximum(2 * q + (b - 2), 0), W - 1).to(tl.int64)
            xv = tl.load(x_ptr + xb + r[:, None] * sx_h + c[None, :] * sx_w).to(acc_ty)
            yv = tl.load(y_ptr + yb + r[:, None] * sy_h + c[None, :] * sy_w).to(acc_ty)
            row += tl.load(g_ptr + b) * (xv - yv)
        acc += tl.load(g_ptr + a) * row
    mask = (p[:, None] < Hc) & (q[None, :] < Wc)
    offs = pid_plane.to(tl.int64) * Hc * Wc + p[:, None].to(tl.int64) * Wc + q[None, :]
    tl.store(u_ptr + offs, 4.0 * acc, mask=mask)


@triton.jit
def _lap_kernel(x_ptr, y_ptr, u_ptr, g_ptr, w_ptr, partial_ptr, eps2_hi, eps2_lo,
                C, H, W, Hc, Wc, sx_n, sx_c, sx_h, sx_w, sy_n, sy_c, sy_h, sy_w,
                BH: tl.constexpr, BW: tl.constexpr, WRITE_W: tl.constexpr):
    """lap = d - G(u) on a BH x BW tile, u zero off the even rows and columns (stored on
    the coarse grid). The tile's sum of sqrt(lap^2 + eps^2) goes to partial_ptr[program];
    with WRITE_W, w = lap / sqrt(lap^2 + eps^2) to w_ptr (planes, H, W), working dtype."""
    pid_plane = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_w = tl.program_id(2)
    i = pid_h * BH + tl.arange(0, BH)
    j = pid_w * BW + tl.arange(0, BW)
    acc_ty = u_ptr.dtype.element_ty
    ub = pid_plane.to(tl.int64) * Hc * Wc
    gu = tl.zeros((BH, BW), dtype=acc_ty)
    for a in tl.static_range(5):
        # Replicate padding of u repeats its border row, which is a zero row when it is odd.
        r = tl.minimum(tl.maximum(i + (a - 2), 0), H - 1)
        r_even = (r % 2) == 0
        row = tl.zeros((BH, BW), dtype=acc_ty)
        for b in tl.static_range(5):
            c = tl.minimum(tl.maximum(j + (b - 2), 0), W - 1)
            m = r_even[:, None] & ((c % 2) == 0)[None, :]
            uv = tl.load(u_ptr + ub + (r // 2).to(tl.int64)[:, None] * Wc + (c // 2)[None, :],
                         mask=m, other=0.0)
            row += tl.load(g_ptr + b) * uv
        gu += tl.load(g_ptr + a) * row
    inside = (i[:, None] < H) & (j[None, :] < W)
    ic = tl.minimum(i, H - 1).to(tl.int64)
    jc = tl.minimum(j, W - 1).to(tl.int64)
    xb = _plane_base(pid_plane, C, sx_n, sx_c)
    yb = _plane_base(pid_plane, C, sy_n, sy_c)
    xv = tl.load(x_ptr + xb + ic[:, None] * sx_h + jc[None, :] * sx_w).to(acc_ty)
    yv = tl.load(y_ptr + yb + ic[:, None] * sy_h + jc[None, :] * sy_w).to(acc_ty)
    lap = (xv - yv) - gu
    eps2 = tl.cast(eps2_hi, acc_ty) + tl.cast(eps2_lo, acc_ty)
    s = _sqrt(lap * lap + eps2)
    pid = (pid_plane * tl.num_programs(1) + pid_h) * tl.num_programs(2) + pid_w
    tl.store(partial_ptr + pid, tl.sum(tl.sum(tl.where(inside, s, 0.0), axis=1), axis=0))
    if WRITE_W:
        offs = pid_plane.to(tl.int64) * H * W + i[:, None].to(tl.int64) * W + j[None, :]
        tl.store(w_ptr + offs, _div(lap, s), mask=inside)


@triton.jit
def _adjoint_coarse_kernel(w_ptr, p_ptr, g_ptr, H, W, Hc, Wc,
                           BP: tl.constexpr, BQ: tl.constexpr):
    """P[p, q] = 4 G^T(w)[2p, 2q]: the adjoint of the second G, then U^T = U (a diagonal
    mask times 4), on a BP x BQ tile of the coarse grid."""
    pid_plane = tl.program_id(0)
    p = tl.program_id(1) * BP + tl.arange(0, BP)
    q = tl.program_id(2) * BQ + tl.arange(0, BQ)
    acc_ty = p_ptr.dtype.element_ty
    g_fold0 = tl.load(g_ptr + 0) + tl.load(g_ptr + 1)
    g_fold1 = tl.load(g_ptr + 0)
    wb = pid_plane.to(tl.int64) * H * W
    m_r = 2 * p
    m_c = 2 * q
    acc = tl.zeros((BP, BQ), dtype=acc_ty)
    for a in tl.static_range(5):
        src_r = m_r - (a - 2)
        ok_r = (src_r >= 0) & (src_r < H)
        wr = _adjoint_weight(m_r, src_r, H, tl.load(g_ptr + a), g_fold0, g_fold1)
        row = tl.zeros((BP, BQ), dtype=acc_ty)
        for b in tl.static_range(5):
            src_c = m_c - (b - 2)
            ok_c = (src_c >= 0) & (src_c < W)
            wc = _adjoint_weight(m_c, src_c, W, tl.load(g_ptr + b), g_fold0, g_fold1)
            wv = tl.load(w_ptr + wb + src_r.to(tl.int64)[:, None] * W + src_c[None, :],
                         mask=ok_r[:, None] & ok_c[None, :], other=0.0)
            row += wc[None, :] * wv
        acc += wr[:, None] * row
    mask = (p[:, None] < Hc) & (q[None, :] < Wc)
    offs = pid_plane.to(tl.int64) * Hc * Wc + p[:, None].to(tl.int64) * Wc + q[None, :]
    tl.store(p_ptr + offs, 4.0 * acc, mask=mask)


@triton.jit
def _adjoint_fine_kernel(w_ptr, p_ptr, g_ptr, grad_ptr, C, H, W, Hc, Wc,
                         sg_n, sg_c, sg_h, sg_w, BH: tl.constexpr, BW: tl.constexpr):
    """grad = w - G^T(P), P zero off the even rows and columns (stored on the coarse grid),
    on a BH x BW tile, written in grad's dtype and layout."""
    pid_plane = tl.program_id(0)
    i = tl.program_id(1) * BH + tl.arange(0, BH)
    j = tl.program_id(2) * BW + tl.arange(0, BW)
    acc_ty = p_ptr.dtype.element_ty
    g_fold0 = tl.load(g_ptr + 0) + tl.load(g_ptr + 1)
    g_fold1 = tl.load(g_ptr + 0)
    pb = pid_plane.to(tl.int64) * Hc * Wc
    acc = tl.zeros((BH, BW), dtype=acc_ty)
    for a in tl.static_range(5):
        src_r = i - (a - 2)
        ok_r = (src_r >= 0) & (src_r < H) & ((src_r % 2) == 0)
        wr = _adjoint_weight(i, src_r, H, tl.load(g_ptr + a), g_fold0, g_fold1)
        row = tl.zeros((BH, BW), dtype=acc_ty)
        for b in tl.static_range(5):
            src_c = j - (b - 2)
            ok_c = (src_c >= 0) & (src_c < W) & ((src_c % 2) == 0)
            wc = _adjoint_weight(j, src_c, W, tl.load(g_ptr + b), g_fold0, g_fold1)
            p_offs = (src_r // 2).to(tl.int64)[:, None] * Wc + (src_c // 2)[None, :]
            pv = tl.load(p_ptr + pb + p_offs, mask=ok_r[:, None] & ok_c[None, :], other=0.0)
            row += wc[None, :] * pv
        acc += wr[:, None] * row
    inside = (i[:, None] < H) & (j[None, :] < W)
    i64 = i.to(tl.int64)
    j64 = j.to(tl.int64)
    wv = tl.load(w_ptr + pid_plane.to(tl.int64) * H * W + i64[:, None] * W + j64[None, :],
                 mask=inside, other=0.0)
    gb = _plane_base(pid_plane, C, sg_n, sg_c)
    tl.store(grad_ptr + gb + i64[:, None] * sg_h + j64[None, :] * sg_w,
             (wv - acc).to(grad_ptr.dtype.element_ty), mask=inside)


# Fine tiles of 16 x 64 (the 64-wide rows of a tile are coalesced) and coarse tiles 16 x 32,
# 8 warps: 4 elements a thread, each gathering 25 taps. At 32 x 64 / 32 x 32 on 4 warps the
# compiled kernels spilled 0.6-7 KB a thread (bench/gpu_static.py); now none do.
_BH, _BW, _BP, _BQ = 16, 64, 16, 32
_WARPS = 8


_taps = {}


def _gauss_taps(dtype, device):
    """g as a tensor the kernels load, made once per dtype and device: a copy from host
    memory on every call would make the host wait for the GPU each time."""
    key = (dtype, device)
    if key not in _taps:
        _taps[key] = torch.tensor(GAUSS_TAPS, dtype=dtype, device=device)
    return _taps[key]


def edge_loss(x, y, eps, compute_grad):
    """Passes: (1) u = U(G(d)) onto the coarse grid, a quarter of the plane; (2) lap = d - G(u),
    the per-tile sums and, with compute_grad, w onto a full-size scratch in the working
    dtype; then for the gradient (3) P = U G^T(w) on the coarse grid and (4) grad = w - G^T(P).
    x and y are read in place through their strides (any layout); the tile sums are added
    in a fixed order by mean_of_partials. Traffic: x and y are read twice (passes 1 and 2,
    the second mostly from L2), w written once and read twice, the coarse grids are small.
    """
    checks.edge_loss(x, y)
    N, C, H, W = x.shape
    planes = N * C
    grad = empty_output(x) if compute_grad else x.new_empty((0,))
    n = x.numel()
    acc_ty = accumulation_dtype(x.dtype)
    if n == 0:
        return mean_of_partials(x.new_empty((0,), dtype=acc_ty), 0, x.dtype), grad
    Hc, Wc = (H + 1) // 2, (W + 1) // 2
    dev = x.device
    g = _gauss_taps(acc_ty, dev)
    u = torch.empty((planes, Hc, Wc), dtype=acc_ty, device=dev)
    coarse_grid = (planes, cdiv(Hc, _BP), cdiv(Wc, _BQ))
    fine_grid = (planes, cdiv(H, _BH), cdiv(W, _BW))
    sx, sy = x.stride(), y.stride()
    _coarse_blur_kernel[coarse_grid](x, y, u, g, C, H, W, Hc, Wc, *sx, *sy, BP=_BP, BQ=_BQ, num_warps=_WARPS)
    partials = torch.empty(fine_grid[0] * fine_grid[1] * fine_grid[2], dtype=acc_ty, device=dev)
    w = torch.empty((planes, H, W), dtype=acc_ty, device=dev) if compute_grad else partials
    eps2_hi, eps2_lo = split_f32(float(eps) * float(eps))
    _lap_kernel[fine_grid](x, y, u, g, w, partials, eps2_hi, eps2_lo, C, H, W, Hc, Wc, *sx, *sy,
                           BH=_BH, BW=_BW, WRITE_W=compute_grad, num_warps=_WARPS)
    if compute_grad:
        p = u  # u is dead: P reuses its buffer (same coarse shape)
        _adjoint_coarse_kernel[coarse_grid](w, p, g, H, W, Hc, Wc, BP=_BP, BQ=_BQ, num_warps=_WARPS)
        _adjoint_fine_kernel[fine_grid](w, p, g, grad, C, H, W, Hc, Wc, *grad.stride(),
                                        BH=_BH, BW=_BW, num_warps=_WARPS)
    return mean_of_partials(partials, n, x.dtype), grad
