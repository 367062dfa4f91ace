"""The Triton kernels of mprnet::ca_tail (mprnet_kernels/ops/ca_tail.py) and their launchers,
forward and backward: 4 passes over the feature map each.

x is addressed as (N, HW, C) with strides (C*HW, 1, HW) for NCHW or (HW*C, C, 1) for
channels_last; Triton specializes the stride equal to 1, so the same kernels read either layout
in memory order. Partial sums are laid out [n][part][c] for both layouts.
"""

import torch
import triton
import triton.language as tl

from .._checks import checks
from .._dtypes import accumulation_dtype
from .._layout import empty_output, output_memory_format
from .utils import cdiv, next_pow2, prev_pow2


# About this many reduction programs are wanted (before the H*W limit), as in the CUDA C++
# kernels: enough to fill the device, few enough to combine quickly in the MLP kernels.
_TARGET_PROGRAMS = 512
_NUM_WARPS = 8


class _Plan:
    """The partition of one (N, HW, C) pass: tile, rows per program, parts per sample."""

    def __init__(self, n, c, hw, channels_last):
        if channels_last:
            # Whole rows of channels per tile: a tile is a contiguous run of memory.
            self.block_c = min(next_pow2(c), 256)
            self.block_hw = max(1, 4096 // self.block_c)
        else:
            # Long runs along each plane, a few planes per tile.
            self.block_c = min(next_pow2(c), 4)
            self.block_hw = 1024
        self.ctiles = cdiv(c, self.block_c)
        if n * c * hw == 0:
            self.rows, self.parts = 1, 0  # nothing to read
            return
        # Split each sample's rows into `parts` ranges, a whole number of tiles each, so that
        # about _TARGET_PROGRAMS programs run; the split depends on the shape only.
        want = max(1, min(cdiv(_TARGET_PROGRAMS, n * self.ctiles), cdiv(hw, self.block_hw)))
        self.rows = cdiv(cdiv(hw, want), self.block_hw) * self.block_hw
        self.parts = cdiv(hw, self.rows)


def _strides(x, channels_last):
    n, c, h, w = x.shape
    return (c * h * w, c, 1) if channels_last else (c * h * w, 1, h * w)  # (s_n, s_hw, s_c)


@triton.jit
def _ca_reduce_kernel(a_ptr, b_ptr, partial_ptr, HW, C, s_n, s_hw, s_c, rows, parts,
                      PROD: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """partial[(n * parts + part) * C + c] = sum over rows [part * rows, ...) of a (or a * b).
    Program (n * parts + part, channel tile); one tl.sum tree per program, no atomics."""
    pid = tl.program_id(0)
    n = pid // parts
    part = pid % parts
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    acc_ty = partial_ptr.dtype.element_ty
    base = n.to(tl.int64) * s_n
    c_off = offs_c.to(tl.int64)[None, :] * s_c
    row0 = part.to(tl.int64) * rows
    acc = tl.zeros([BLOCK_HW, BLOCK_C], dtype=acc_ty)
    for start in range(0, rows, BLOCK_HW):
        offs_hw = row0 + start + tl.arange(0, BLOCK_HW)
        mask = (offs_hw < HW)[:, None] & cmask[None, :]
        off = base + offs_hw[:, None] * s_hw + c_off
        v = tl.load(a_ptr + off, mask=mask, other=0.0).to(acc_ty)
        if PROD:
            v = v * tl.load(b_ptr + off, mask=mask, other=0.0).to(acc_ty)
        acc += v
    tl.store(partial_ptr + pid.to(tl.int64) * C + offs_c, tl.sum(acc, axis=0), mask=cmask)


@triton.jit
def _ca_affine_kernel(a_ptr, scale_ptr, r_ptr, shift_ptr, o_ptr, HW, C, s_n, s_hw, s_c, rows,
                      parts, HAS_R: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """o = a * scale[n, c] + (r if HAS_R else shift[n, c]); same partition as the reduction."""
    pid = tl.program_id(0)
    n = pid // parts
    part = pid % parts
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    acc_ty = scale_ptr.dtype.element_ty
    vec = n.to(tl.int64) * C + offs_c
    sc = tl.load(scale_ptr + vec, mask=cmask, other=0.0)
    if not HAS_R:
        sh = tl.load(shift_ptr + vec, mask=cmask, other=0.0)
    base = n.to(tl.int64) * s_n
    c_off = offs_c.to(tl.int64)[None, :] * s_c
    row0 = part.to(tl.int64) * rows
    for start in range(0, rows, BLOCK_HW):
        offs_hw = row0 + start + tl.arange(0, BLOCK_HW)
        mask = (offs_hw < HW)[:, None] & cmask[None, :]
        off = base + offs_hw[:, None] * s_hw + c_off
        v = tl.load(a_ptr + off, mask=mask, other=0.0).to(acc_ty) * sc[None, :]
        if HAS_R:
            v = v + tl.load(r_ptr + off, mask=mask, other=0.0).to(acc_ty)
        else:
            v = v + sh[None, :]
        tl.store(o_ptr + off, v.to(o_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _combine(partial_ptr, n, parts, C, offs_c, cmask, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """t[c] = sum_k partial[(n * parts + k) * C + c] for one sample, in a fixed order."""
    acc_ty = partial_ptr.dtype.element_ty
    t = tl.zeros([BLOCK_C], dtype=acc_ty)
    for k0 in range(0, parts, BLOCK_P):
        offs_k = k0 + tl.arange(0, BLOCK_P)
        rows = n.to(tl.int64) * parts + offs_k
        mask = (offs_k < parts)[:, None] & cmask[None, :]
        t += tl.sum(tl.load(partial_ptr + rows[:, None] * C + offs_c[None, :], mask=mask, other=0.0), axis=0)
    return t


@triton.jit
def _ca_mlp_forward_kernel(partial_ptr, parts, HW, w1_ptr, b1_ptr, w2_ptr, b2_ptr, p_ptr, h_ptr,
                           s_ptr, C, HIDDEN, HAS_B1: tl.constexpr, HAS_B2: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr):
    """One program per sample: p = combined partials / HW, h = relu(W1 p + b1),
    s = sigmoid(W2 h + b2). Masked lanes are zeroed with tl.where, never by multiplying by
    a zero weight, so that a NaN in one channel cannot leak into the padding and back."""
    n = tl.program_id(0)
    acc_ty = p_ptr.dtype.element_ty
    offs_j = tl.arange(0, BLOCK_H)
    jmask = offs_j < HIDDEN
    hacc = tl.zeros([BLOCK_H], dtype=acc_ty)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        p = _combine(partial_ptr, n, parts, C, offs_c, cmask, BLOCK_P, BLOCK_C) / HW
        tl.store(p_ptr + n.to(tl.int64) * C + offs_c, p, mask=cmask)
        m = jmask[:, None] & cmask[None, :]
        w1 = tl.load(w1_ptr + offs_j[:, None] * C + offs_c[None, :], mask=m, other=0.0).to(acc_ty)
        hacc += tl.sum(tl.where(m, w1 * p[None, :], 0.0), axis=1)
    if HAS_B1:
        hacc += tl.load(b1_ptr + offs_j, mask=jmask, other=0.0).to(acc_ty)
    # relu keeping NaN (torch.relu does); zero on the padding.
    h = tl.where(jmask, tl.where(hacc < 0.0, 0.0, hacc), 0.0)
    tl.store(h_ptr + n.to(tl.int64) * HIDDEN + offs_j, h, mask=jmask)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        m = cmask[:, None] & jmask[None, :]
        w2 = tl.load(w2_ptr + offs_c[:, None] * HIDDEN + offs_j[None, :], mask=m, other=0.0).to(acc_ty)
        v = tl.sum(tl.where(m, w2 * h[None, :], 0.0), axis=1)
        if HAS_B2:
            v += tl.load(b2_ptr + offs_c, mask=cmask, other=0.0).to(acc_ty)
        tl.store(s_ptr + n.to(tl.int64) * C + offs_c, 1.0 / (1.0 + tl.exp(-v)), mask=cmask)


@triton.jit
def _ca_mlp_backward_samples_kernel(partial_ptr, parts, HW, h_ptr, s_ptr, w1_ptr, w2_ptr, N, C, HIDDEN,
                                    ds_ptr, dh_ptr, shift_ptr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
                                    BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr):
    """MLP backward, per sample: BLOCK_N samples a program through 3-D tiles (sample,
    channel, hidden) write ds_pre, dh_pre and dx's shift dp / HW."""
    acc_ty = s_ptr.dtype.element_ty
    offs_j = tl.arange(0, BLOCK_H)
    jmask = offs_j < HIDDEN
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    rows_n = offs_n.to(tl.int64)
    dh = tl.zeros([BLOCK_N, BLOCK_H], dtype=acc_ty)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        nc = nmask[:, None] & cmask[None, :]
        # t[n, c] = sum over parts, a [BLOCK_N, BLOCK_P, BLOCK_C] tile at a time.
        t = tl.zeros([BLOCK_N, BLOCK_C], dtype=acc_ty)
        for k0 in range(0, parts, BLOCK_P):
            offs_k = k0 + tl.arange(0, BLOCK_P)
            rows = rows_n[:, None, None] * parts + offs_k[None, :, None]
            m3 = nc[:, None, :] & (offs_k < parts)[None, :, None]
            t += tl.sum(tl.load(partial_ptr + rows * C + offs_c[None, None, :], mask=m3, other=0.0), axis=1)
        nc_off = rows_n[:, None] * C + offs_c[None, :]
        sv = tl.load(s_ptr + nc_off, mask=nc, other=0.0)
        ds = tl.where(nc, t * (1.0 - sv) * sv, 0.0)
        tl.store(ds_ptr + nc_off, ds, mask=nc)
        cj = cmask[:, None] & jmask[None, :]
        w2 = tl.load(w2_ptr + offs_c[:, None] * HIDDEN + offs_j[None, :], mask=cj, other=0.0).to(acc_ty)
        dh += tl.sum(tl.where(cj[None, :, :], ds[:, :, None] * w2[None, :, :], 0.0), axis=1)
    nj = nmask[:, None] & jmask[None, :]
    nj_off = rows_n[:, None] * HIDDEN + offs_j[None, :]
    hv = tl.load(h_ptr + nj_off, mask=nj, other=0.0)
    # ReLU's backward as torch's threshold_backward: zero where the output is <= 0 (a NaN
    # output passes its gradient on).
    dh = tl.where(nj, tl.where(hv <= 0.0, 0.0, dh), 0.0)
    tl.store(dh_ptr + nj_off, dh, mask=nj)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        nc = nmask[:, None] & cmask[None, :]
        cj = cmask[:, None] & jmask[None, :]
        w1t = tl.load(w1_ptr + offs_j[None, :] * C + offs_c[:, None], mask=cj, other=0.0).to(acc_ty)
        dp = tl.sum(tl.where(cj[None, :, :], dh[:, None, :] * w1t[None, :, :], 0.0), axis=2)
        tl.store(shift_ptr + rows_n[:, None] * C + offs_c[None, :], dp / HW, mask=nc)


@triton.jit
def _ca_mlp_backward_weights_kernel(p_ptr, h_ptr, ds_ptr, dh_ptr, N, C, HIDDEN, gw1_ptr, gb1_ptr, gw2_ptr,
                                    gb2_ptr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                                    BLOCK_H: tl.constexpr):
    """MLP backward, the weight gradients: BLOCK_C channels a program, each summing the
    samples in order (no atomics, the same bits every run); program 0 also sums gb1."""
    acc_ty = p_ptr.dtype.element_ty
    w_ty = gw1_ptr.dtype.element_ty
    offs_j = tl.arange(0, BLOCK_H)
    jmask = offs_j < HIDDEN
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = offs_c < C
    cj = cmask[:, None] & jmask[None, :]
    gw2 = tl.zeros([BLOCK_C, BLOCK_H], dtype=acc_ty)
    gw1t = tl.zeros([BLOCK_C, BLOCK_H], dtype=acc_ty)
    gb2 = tl.zeros([BLOCK_C], dtype=acc_ty)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        rows_n = offs_n.to(tl.int64)
        nc = nmask[:, None] & cmask[None, :]
        nj = nmask[:, None] & jmask[None, :]
        ds = tl.load(ds_ptr + rows_n[:, None] * C + offs_c[None, :], mask=nc, other=0.0)
        pv = tl.load(p_ptr + rows_n[:, None] * C + offs_c[None, :], mask=nc, other=0.0)
        hv = tl.load(h_ptr + rows_n[:, None] * HIDDEN + offs_j[None, :], mask=nj, other=0.0)
        dh = tl.load(dh_ptr + rows_n[:, None] * HIDDEN + offs_j[None, :], mask=nj, other=0.0)
        m3 = nc[:, :, None] & nj[:, None, :]
        gw2 += tl.sum(tl.where(m3, ds[:, :, None] * hv[:, None, :], 0.0), axis=0)
        gw1t += tl.sum(tl.where(m3, pv[:, :, None] * dh[:, None, :], 0.0), axis=0)
        gb2 += tl.sum(ds, axis=0)
    tl.store(gw2_ptr + offs_c[:, None] * HIDDEN + offs_j[None, :], gw2.to(w_ty), mask=cj)
    tl.store(gw1_ptr + offs_j[None, :] * C + offs_c[:, None], gw1t.to(w_ty), mask=cj)
    tl.store(gb2_ptr + offs_c, gb2.to(w_ty), mask=cmask)
    if tl.program_id(0) == 0:
        gb1 = tl.zeros([BLOCK_H], dtype=acc_ty)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            nj = (offs_n < N)[:, None] & jmask[None, :]
            gb1 += tl.sum(tl.load(dh_ptr + offs_n.to(tl.int64)[:, None] * HIDDEN + offs_j[None, :], mask=nj,
                                  other=0.0), axis=0)
        tl.store(gb1_ptr + offs_j, gb1.to(w_ty), mask=jmask)


# Elements of the largest tile of an MLP program, 16 a thread on _NUM_WARPS warps: at 8K some
# configurations spilled 8-32 bytes (bench/gpu_static.py).
_MLP_TILE = {"forward": 4096, "backward": 4096}


def _mlp_blocks(n, c, hidden, parts, tile):
    """Tile sizes of the MLP kernels: all of hidden at once, the rest bounded so that a 3-D
    tile stays within `tile` elements (registers of one program)."""
    block_h = next_pow2(hidden)
    block_n = min(next_pow2(n), 16)
    block_c = min(next_pow2(c), prev_pow2(max(1, tile // (block_n * block_h))))
    block_p = min(next_pow2(parts), prev_pow2(max(1, tile // (block_n * block_c))))
    return block_n, block_p, block_c, block_h


def _reduce(a, b, plan, channels_last, partial):
    n, c, h, w = a.shape
    if plan.parts:
        _ca_reduce_kernel[(n * plan.parts, plan.ctiles)](
            a, a if b is None else b, partial, h * w, c, *_strides(a, channels_last), plan.rows,
            plan.parts, PROD=b is not None, BLOCK_HW=plan.block_hw, BLOCK_C=plan.block_c,
            num_warps=_NUM_WARPS)


def _affine(a, scale, r, shift, out, plan, channels_last):
    n, c, h, w = a.shape
    if plan.parts:
        _ca_affine_kernel[(n * plan.parts, plan.ctiles)](
            a, scale, a if r is None else r, scale if shift is None else shift, out, h * w, c,
            *_strides(a, channels_last), plan.rows, plan.parts, HAS_R=r is not None,
            BLOCK_HW=plan.block_hw, BLOCK_C=plan.block_c, num_warps=_NUM_WARPS)


def ca_tail_forward(x, r, w1, b1, w2, b2):
    xd, rd, m1, b1, m2, b2 = checks.ca_tail_forward(x, r, w1, b1, w2, b2)
    channels_last = output_memory_format(x) == torch.channels_last
    n, c, h, w = x.shape
    hidden = m1.shape[0]
    vdt = accumulation_dtype(x.dtype)
    out = empty_output(x, r.dtype)
    p, hv, s = (x.new_empty((n, k), dtype=vdt) for k in (c, hidden, c))
    if n == 0:
        return out, p, hv, s
    plan = _Plan(n, c, h * w, channels_last)
    partial = torch.empty(max(1, n * plan.parts * c), dtype=vdt, device=x.device)
    _reduce(xd, None, plan, channels_last, partial)
    _, block_p, block_c, block_h = _mlp_blocks(1, c, hidden, plan.parts, _MLP_TILE["forward"])
    _ca_mlp_forward_kernel[(n,)](
        partial, plan.parts, h * w, m1, b1, m2, b2, p, hv, s, c, hidden, HAS_B1=b1 is not None,
        HAS_B2=b2 is not None, BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_H=block_h, num_warps=_NUM_WARPS)
    _affine(xd, s, rd, None, out, plan, channels_last)
    return out, p, hv, s


def ca_tail_backward(grad, x, w1, w2, p, h, s):
    gd, xd, m1, m2, p, h, s = checks.ca_tail_backward(grad, x, w1, w2, p, h, s)
    channels_last = output_memory_format(x) == torch.channels_last
    n, c, hh, ww = x.shape
    hidden = m1.shape[0]
    vdt = accumulation_dtype(x.dtype)
    grad_x = empty_output(x)
    gw1, gw2 = w1.new_empty(m1.shape), w1.new_empty(m2.shape)
    gb1, gb2 = w1.new_empty((hidden,)), w1.new_empty((c,))
    if n == 0:
        # No samples: the weight gradients are sums over nothing.
        return grad_x, gw1.zero_().view(w1.shape), gb1.zero_(), gw2.zero_().view(w2.shape), gb2.zero_()
    plan = _Plan(n, c, hh * ww, channels_last)
    partial = torch.empty(max(1, n * plan.parts * c), dtype=vdt, device=x.device)
    _reduce(gd, xd, plan, channels_last, partial)
    shift, ds = (torch.empty((n, c), dtype=vdt, device=x.device) for _ in range(2))
    dh = torch.empty((n, hidden), dtype=vdt, device=x.device)
    block_n, block_p, block_c, block_h = _mlp_blocks(n, c, hidden, plan.parts, _MLP_TILE["backward"])
    _ca_mlp_backward_samples_kernel[(cdiv(n, block_n),)](
        partial, plan.parts, hh * ww, h, s, m1, m2, n, c, hidden, ds, dh, shift, BLOCK_N=block_n,
        BLOCK_P=block_p, BLOCK_C=block_c, BLOCK_H=block_h, num_warps=_NUM_WARPS)
    _ca_mlp_backward_weights_kernel[(cdiv(c, block_c),)](
        p, h, ds, dh, n, c, hidden, gw1, gb1, gw2, gb2, BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_H=block_h,
        num_warps=_NUM_WARPS)
    _affine(gd, s, None, shift, grad_x, plan, channels_last)
    return grad_x, gw1.view(w1.shape), gb1, gw2.view(w2.shape), gb2
