"""The Triton kernels of mprnet::local_ca_tail (mprnet_kernels/ops/local_ca_tail.py) and their
launcher: three kernels, none of which writes the gate.

1. ``_lca_vertical_kernel``: v[n, c, a, j] = sum of x[n, c, a:a+k1, j], for every column, as a
   running sum down the rows from the top (each block of rows adds the prefix sum of
   "entering row minus leaving row" to the carry), one program per tile of (column, channel)
   pairs walking the whole height.
2. ``_lca_horizontal_kernel``: p[n, c, a, b] = mean of v[n, c, a, b:b+k2], the same running
   sum along each row of v from the left, one program per tile of (pooled row, channel) lanes.
   Both start at the map's origin and never restart, so a pooled sum is a flat sum of the terms
   the reference's integral image combines (same NaN/Inf pattern), with partial sums the size
   of a window rather than of the image.
3. ``_lca_apply_kernel``: per output pixel, the gate from the pooled position it maps to
   (clamp(i - top), clamp(j - left)), as two tl.dot products over a tile of pixels (W1 P, then
   W2 H per channel chunk), then out = x * s + r. Recomputing the MLP for the pixels that share
   a pooled position costs tensor-core time, not memory traffic, and keeps every program the same
   size (the rows above and below the pooled map map to its border row).

v and p are float32 (float64 for float64 x), laid out like x (NCHW or channels_last). The float32
products use 3xTF32 (float32 accuracy on tensor cores), the half-precision ones TF32.
"""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._dtypes import accumulation_dtype
from .._layout import empty_output, output_memory_format
from .utils import cdiv, next_pow2

_NUM_WARPS = 4


def _strides4(t, channels_last):
    """(s_n, s_c, s_h, s_w) of a dense 4-D tensor in the given layout."""
    n, c, h, w = t.shape
    return (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)


# Sizes that only bound loops or clamp indices are not specialised on (one compiled kernel for
# every window and map size); strides and C, W are (16-divisibility gives wide loads).
@triton.jit(do_not_specialize=["PH", "K1", "tiles_j", "tiles_c"])
def _lca_vertical_kernel(x_ptr, v_ptr, C, W, PH, K1, s_n, s_c, s_h, s_w, v_n, v_c, v_a, v_w, tiles_j, tiles_c,
                         C_FAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    """Program (n, column tile, channel tile): v rows 0 .. PH-1 of BLOCK_J x BLOCK_C columns."""
    pid = tl.program_id(0)
    per_n = tiles_j * tiles_c
    n = pid // per_n
    rest = pid % per_n
    f = tl.arange(0, BLOCK_J * BLOCK_C)
    if C_FAST:  # channels_last: channels vary fastest in memory and in the tile
        tj = rest // tiles_c
        tc = rest % tiles_c
        jj = f // BLOCK_C
        cc = f % BLOCK_C
    else:
        tc = rest // tiles_j
        tj = rest % tiles_j
        jj = f % BLOCK_J
        cc = f // BLOCK_J
    j = tj * BLOCK_J + jj
    c = tc * BLOCK_C + cc
    fmask = (j < W) & (c < C)
    acc_ty = v_ptr.dtype.element_ty
    xoff = n.to(tl.int64) * s_n + c.to(tl.int64) * s_c + j.to(tl.int64) * s_w
    voff = n.to(tl.int64) * v_n + c.to(tl.int64) * v_c + j.to(tl.int64) * v_w
    rows = tl.arange(0, BLOCK_R)
    # The first window: rows [0, K1).
    acc = tl.zeros([BLOCK_J * BLOCK_C], dtype=acc_ty)
    for i0 in range(0, K1, BLOCK_R):
        i = i0 + rows
        m = (i < K1)[:, None] & fmask[None, :]
        t = tl.load(x_ptr + xoff[None, :] + i.to(tl.int64)[:, None] * s_h, mask=m, other=0.0)
        acc += tl.sum(t.to(acc_ty), axis=0)
    tl.store(v_ptr + voff, acc, mask=fmask)
    # Rows 1 .. PH-1: the window gains row a + K1 - 1 and loses row a - 1.
    for a0 in range(1, PH, BLOCK_R):
        a = a0 + rows
        m = (a < PH)[:, None] & fmask[None, :]
        a64 = a.to(tl.int64)[:, None]
        enter = tl.load(x_ptr + xoff[None, :] + (a64 + K1 - 1) * s_h, mask=m, other=0.0).to(acc_ty)
        leave = tl.load(x_ptr + xoff[None, :] + (a64 - 1) * s_h, mask=m, other=0.0).to(acc_ty)
        run = acc[None, :] + tl.cumsum(enter - leave, axis=0)
        tl.store(v_ptr + voff[None, :] + a64 * v_a, run, mask=m)
        # The carry is the block's last row (rows past PH added zeros), picked by selection.
        acc = tl.sum(tl.where(rows[:, None] == BLOCK_R - 1, run, 0.0), axis=0)


@triton.jit
def _mean(s, kk, IS_F64: tl.constexpr):
    if IS_F64:
        return s / kk
    else:
        return tl.div_rn(s, kk)


@triton.jit(do_not_specialize=["PH", "PW", "K2", "KK", "tiles_l"])
def _lca_horizontal_kernel(v_ptr, p_ptr, C, PH, PW, K2, KK, v_n, v_c, v_a, v_w, p_n, p_c, p_a, p_w, tiles_l,
                           C_FAST: tl.constexpr, IS_F64: tl.constexpr, BLOCK_B: tl.constexpr,
                           BLOCK_L: tl.constexpr):
    """Program (n, lane tile): lanes are (pooled row, channel) pairs, in memory order of v; p over
    every pooled column of each lane, BLOCK_B columns at a time."""
    pid = tl.program_id(0)
    n = pid // tiles_l
    g = (pid % tiles_l) * BLOCK_L + tl.arange(0, BLOCK_L)
    if C_FAST:
        a = g // C
        c = g % C
    else:
        c = g // PH
        a = g % PH
    lmask = g < C * PH
    acc_ty = p_ptr.dtype.element_ty
    vrow = n.to(tl.int64) * v_n + c.to(tl.int64) * v_c + a.to(tl.int64) * v_a
    prow = n.to(tl.int64) * p_n + c.to(tl.int64) * p_c + a.to(tl.int64) * p_a
    cols = tl.arange(0, BLOCK_B)
    acc = tl.zeros([BLOCK_L], dtype=acc_ty)
    for j0 in range(0, K2, BLOCK_B):
        j = j0 + cols
        m = (j < K2)[:, None] & lmask[None, :]
        acc += tl.sum(tl.load(v_ptr + vrow[None, :] + j.to(tl.int64)[:, None] * v_w, mask=m, other=0.0), axis=0)
    tl.store(p_ptr + prow, _mean(acc, KK, IS_F64), mask=lmask)
    for b0 in range(1, PW, BLOCK_B):
        b = b0 + cols
        m = (b < PW)[:, None] & lmask[None, :]
        b64 = b.to(tl.int64)[:, None]
        enter = tl.load(v_ptr + vrow[None, :] + (b64 + K2 - 1) * v_w, mask=m, other=0.0)
        leave = tl.load(v_ptr + vrow[None, :] + (b64 - 1) * v_w, mask=m, other=0.0)
        run = acc[None, :] + tl.cumsum(enter - leave, axis=0)
        tl.store(p_ptr + prow[None, :] + b64 * p_w, _mean(run, KK, IS_F64), mask=m)
        acc = tl.sum(tl.where(cols[:, None] == BLOCK_B - 1, run, 0.0), axis=0)


@triton.jit(do_not_specialize=["H", "PH", "PW", "TOP", "LEFT"])
def _lca_apply_kernel(x_ptr, r_ptr, o_ptr, p_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, C, H, W, HIDDEN, PH, PW, TOP,
                      LEFT, s_n, s_c, s_h, s_w, p_n, p_c, p_a, p_w, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr,
                      PREC: tl.constexpr, ROW_CHUNK: tl.constexpr, BLOCK_P: tl.constexpr,
                      BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr):
    """Program (n * H + i, column chunk): out[n, :, i, j] for ROW_CHUNK columns j, BLOCK_P at a
    time. Padding lanes of the hidden layer are zeroed by selection, so a NaN in one channel
    never reaches another through a zero weight."""
    row = tl.program_id(0)
    n = row // H
    i = row % H
    acc_ty = p_ptr.dtype.element_ty
    pa = tl.minimum(tl.maximum(i - TOP, 0), PH - 1)
    offs_h = tl.arange(0, BLOCK_H)
    hmask = offs_h < HIDDEN
    kk = tl.arange(0, BLOCK_K)
    if HAS_B1:
        b1 = tl.load(b1_ptr + offs_h, mask=hmask, other=0.0).to(acc_ty)
    pbase = n.to(tl.int64) * p_n + pa.to(tl.int64) * p_a
    xbase = n.to(tl.int64) * s_n + i.to(tl.int64) * s_h
    for t in range(0, ROW_CHUNK, BLOCK_P):
        j = tl.program_id(1) * ROW_CHUNK + t + tl.arange(0, BLOCK_P)
        jmask = j < W
        pb = tl.minimum(tl.maximum(j - LEFT, 0), PW - 1)
        hid = tl.zeros([BLOCK_P, BLOCK_H], dtype=acc_ty)
        for c0 in range(0, C, BLOCK_K):
            c = c0 + kk
            cmask = c < C
            pv = tl.load(p_ptr + pbase + pb.to(tl.int64)[:, None] * p_w + c.to(tl.int64)[None, :] * p_c,
                         mask=jmask[:, None] & cmask[None, :], other=0.0)
            w1t = tl.load(w1_ptr + offs_h[None, :] * C + c[:, None], mask=cmask[:, None] & hmask[None, :],
                          other=0.0).to(acc_ty)
            hid = tl.dot(pv, w1t, hid, input_precision=PREC)
        if HAS_B1:
            hid += b1[None, :]
        # relu keeping NaN (torch.relu does); zero on the padding.
        hid = tl.where(hmask[None, :], tl.where(hid < 0.0, 0.0, hid), 0.0)
        for c0 in range(0, C, BLOCK_K):
            c = c0 + kk
            cmask = c < C
            w2t = tl.load(w2_ptr + c[None, :] * HIDDEN + offs_h[:, None], mask=hmask[:, None] & cmask[None, :],
                          other=0.0).to(acc_ty)
            z = tl.dot(hid, w2t, input_precision=PREC)
            if HAS_B2:
                z += tl.load(b2_ptr + c, mask=cmask, other=0.0).to(acc_ty)[None, :]
            s = 1.0 / (1.0 + tl.exp(-z))
            m = jmask[:, None] & cmask[None, :]
            off = xbase + j.to(tl.int64)[:, None] * s_w + c.to(tl.int64)[None, :] * s_c
            xv = tl.load(x_ptr + off, mask=m, other=0.0).to(acc_ty)
            rv = tl.load(r_ptr + off, mask=m, other=0.0).to(acc_ty)
            tl.store(o_ptr + off, (xv * s + rv).to(o_ptr.dtype.element_ty), mask=m)


class _Plan:
    """Tile sizes of the three kernels for one shape and layout (the shape alone decides them)."""

    def __init__(self, c, w, hidden, channels_last):
        if channels_last:
            self.v_block_c = min(next_pow2(c), 64)
            self.v_block_j = max(1, 256 // self.v_block_c)
            self.h_block_b, self.h_block_l = 8, min(next_pow2(c), 64)
        else:
            self.v_block_c, self.v_block_j = 1, min(next_pow2(w), 256)
            self.h_block_b, self.h_block_l = 64, 8
        self.v_block_r = 8
        # 64 pixels x 32 channels on 8 warps: 3xTF32 float32 products spilled with 32 x 64 tiles
        # on 4 warps (bench/gpu_static.py).
        self.block_p = 64
        self.block_k = min(32, max(16, next_pow2(c)))
        self.block_h = max(16, next_pow2(hidden))
        self.row_chunk = min(256, max(self.block_p, next_pow2(w)))
        self.apply_warps = 8


def _precision(dtype):
    if dtype == torch.float64:
        return "ieee"
    return "tf32x3" if dtype == torch.float32 else "tf32"


def local_ca_tail(x, r, w1, b1, w2, b2, k1, k2):
    xd, rd, m1, b1, m2, b2 = checks.local_ca_tail(x, r, w1, b1, w2, b2, k1, k2)
    channels_last = output_memory_format(x) == torch.channels_last
    n, c, h, w = x.shape
    out = empty_output(x, r.dtype)
    if out.numel() == 0:
        return out
    hidden = m1.shape[0]
    ph, pw = h - k1 + 1, w - k2 + 1
    vdt = accumulation_dtype(x.dtype)
    plan = _Plan(c, w, hidden, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    v = torch.empty((n, c, ph, w), dtype=vdt, device=x.device, memory_format=fmt)
    p = torch.empty((n, c, ph, pw), dtype=vdt, device=x.device, memory_format=fmt)
    s_x, s_v, s_p = _strides4(xd, channels_last), _strides4(v, channels_last), _strides4(p, channels_last)

    tiles_j, tiles_c = cdiv(w, plan.v_block_j), cdiv(c, plan.v_block_c)
    _lca_vertical_kernel[(n * tiles_j * tiles_c,)](
        xd, v, c, w, ph, k1, *s_x, *s_v, tiles_j, tiles_c, C_FAST=channels_last, BLOCK_R=plan.v_block_r,
        BLOCK_J=plan.v_block_j, BLOCK_C=plan.v_block_c, num_warps=_NUM_WARPS)
    tiles_l = cdiv(c * ph, plan.h_block_l)
    _lca_horizontal_kernel[(n * tiles_l,)](
        v, p, c, ph, pw, k2, float(k1 * k2), *s_v, *s_p, tiles_l, C_FAST=channels_last,
        IS_F64=vdt == torch.float64, BLOCK_B=plan.h_block_b, BLOCK_L=plan.h_block_l, num_warps=_NUM_WARPS)
    _lca_apply_kernel[(n * h, cdiv(w, plan.row_chunk))](
        xd, rd, out, p, m1, b1, m2, b2, c, h, w, hidden, ph, pw, (h - ph) // 2, (w - pw) // 2, *s_x, *s_p,
        HAS_B1=b1 is not None, HAS_B2=b2 is not None, PREC=_precision(x.dtype), ROW_CHUNK=plan.row_chunk,
        BLOCK_P=plan.block_p, BLOCK_K=plan.block_k, BLOCK_H=plan.block_h, num_warps=plan.apply_warps)
    return out
