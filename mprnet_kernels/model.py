"""The fast drop-in MPRNet: the reference's modules and state_dict, a faster forward.

`MPRNet` subclasses the reference, so its constructor, `from_preset`, attribute names,
state_dict keys and shared PReLU are the reference's by construction; only `forward` differs.
It applies exact rewrites of the computation (docs/OPS.md, "Other exact rewrites"), each of which can
be switched off on its own through `Rewrites` so that its effect and exactness can be measured:

- ``batch_patches``: the four stage-1 patches run as one batch of 4N and the two stage-2 halves
  as one batch of 2N. Channel attention pools per sample, so this changes no number; it turns
  six passes through the stage-1/2 networks into two, with bigger, faster convolutions. The
  batches are ordered sample by sample, so that in channels_last the split into halves and the
  joins back are views rather than copies, and the joins that must copy (the stage-1 width joins)
  write once into a buffer in the features' own layout (see `_regrouped`). Eager only: under
  torch.compile the patches run one by one as in the reference (joined by torch.cat), because
  Inductor (torch 2.14) fails on those views once shapes are dynamic (any compiled call after a
  second input size): saved for backward, they are graph outputs with symbolic strides that it
  orders without its shape environment ("cannot determine truth value of Relational").
- ``conv_before_upsample``: a bias-free 1x1 conv commutes with the bilinear x2 resize (both are
  linear, the resize per channel), so UpSample/SkipUpSample convolve at the low resolution (4x
  fewer FLOPs and bytes). In stage 3 the chains 1x1 -> resize -> 1x1 -> resize -> 1x1 collapse
  into one merged 1x1 conv at 1/4 resolution followed by the two resizes; a bias commutes too,
  because bilinear weights sum to one.
- ``avgpool_downsample``: bilinear x0.5 with align_corners=False on even sizes is exactly 2x2
  average pooling, a cheaper kernel than the general resize.
- ``fused_blocks``: CAB and SAM from mprnet_kernels.nn (fused channel-attention tail and SAM
  gate ops) instead of the reference's eager modules.
- ``fused_upsample_add``: every bilinear x2 resize followed by an add runs as one op,
  mprnet_kernels.ops.upsample2x_add (the resize computed on the fly and added to y, one pass
  over y and the output instead of a full-resolution resize written and read back; its backward
  is a deterministic gather where eager's is a scatter, with atomics on CUDA): SkipUpSample's
  ``up(conv(x)) + y`` and ORSNet's ``orb(x) + up(low)`` at levels 2 and 3 (of the double resize
  of level 3 the last one). Those resize-then-add forms come from ``conv_before_upsample``;
  without it every resize is followed by a 1x1 conv and this flag changes nothing.
- ``channels_last``: features flow in channels_last memory order (weights converted once at
  construction, the input on entry, the three output images back to the input's layout), the
  layout fast CPU (oneDNN) and GPU (cuDNN) convolutions work in; the fused ops read it in
  memory order. The same numbers, another layout.
- ``prepacked_convs``: on CPU with gradients off (and channels_last features), every convolution runs on a weight prepacked
  once for oneDNN, with the CAB's PReLU, and the residual and cross-stage adds that follow a
  convolution, fused into it as oneDNN post-ops (mprnet_kernels.nn.onednn; rebuilt when a weight
  changes). Autograd, CUDA, tracing and torch.compile see the plain convolutions.
- ``reuse_cpu_buffers``: a CPU forward with gradients off runs inside
  mprnet_kernels.cpu_cache.reuse_cpu_buffers(): feature maps reuse the memory of earlier ones
  instead of faulting in fresh pages, and the cache keeps the last forward's blocks for the next
  (``mprnet_kernels.empty_cpu_cache()`` frees them). The same numbers; not a change of the math.
- ``checkpoint_stages`` (off by default, not a rewrite): activation checkpointing per stage,
  trading recomputation for memory on big patches.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import List, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from . import reference
from .cpu_cache import plain_cpu_inference, reuse_cpu_buffers
from .nn import replace_blocks
from .nn.onednn import conv_add, pack_convs
from .ops import upsample2x_add

__all__ = ["MPRNet", "Rewrites"]


@dataclass(frozen=True)
class Rewrites:
    """Which exact rewrites the fast forward applies (all on by default)."""

    batch_patches: bool = True
    conv_before_upsample: bool = True
    avgpool_downsample: bool = True
    fused_blocks: bool = True
    fused_upsample_add: bool = True
    channels_last: bool = True
    prepacked_convs: bool = True
    reuse_cpu_buffers: bool = True
    checkpoint_stages: bool = False

    @classmethod
    def of(cls, value) -> "Rewrites":
        """A Rewrites from None (all on), a Rewrites, or a mapping of field names to bools
        (the fields not named stay on); TypeError/ValueError naming what is wrong otherwise."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = [f.name for f in fields(cls)]
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(f"rewrites: unknown rewrite(s) {', '.join(map(repr, unknown))}; "
                                 f"valid names: {', '.join(names)}")
            bad = [k for k, v in value.items() if not isinstance(v, bool)]
            if bad:
                raise TypeError(f"rewrites: expected True or False for {', '.join(bad)}")
            return cls(**value)
        raise TypeError(f"rewrites: expected a Rewrites, a dict of its fields or None, got {type(value).__name__}")

    @classmethod
    def none(cls) -> "Rewrites":
        """Every rewrite off: the reference computation, in this class's code."""
        return cls(**{f.name: False for f in fields(cls)})


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def _matrix(conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv's weight as a (out, in) matrix: a view read with the weight's own strides, so
    that its gradient comes back with them. (flatten's backward would return the contiguous
    (in, 1, 1, 1) strides where a channels_last 1x1 weight has (in, 1, in, in), and DDP, whose
    gradient buckets are views with each parameter's strides, warns and copies on every step.)"""
    w = conv.weight
    return w.as_strided((w.shape[0], w.shape[1]), (w.stride(0), w.stride(1)))


def _conv1x1(x: torch.Tensor, matrix: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return F.conv2d(x, matrix[:, :, None, None], bias)


# The batched patches are ordered sample-major: the stage-2 halves of sample n are batch entries
# 2n (top) and 2n + 1 (bottom), and its stage-1 quarters 4n + 2 * row + col. Any order gives the
# same numbers (every layer works per sample); this one makes the height joins free. In
# channels_last memory a sample is (H, W, C) with rows outermost, so the top and bottom halves of
# a sample, stored one after the other, already are the whole sample: splitting the input into
# halves and stacking the stage-2 features and the stage-1 image back are views, not copies.
# (NCHW memory puts channels outside rows, so there they stay one copy each, as before.)


def _regrouped(src: torch.Tensor, src_view: Sequence[int], perm: Sequence[int], shape: Sequence[int],
               out_view: Sequence[int]) -> torch.Tensor:
    """src viewed as src_view and permuted by perm, written once into a new `shape` tensor (seen
    as out_view) in src's memory layout. permute + reshape would copy into NCHW order whatever
    the source's layout, so channels_last features came out NCHW, and every consumer (the convs,
    the fused ops) converted them back: a copy per consumer that this output buffer avoids."""
    fmt = torch.channels_last if (src.is_contiguous(memory_format=torch.channels_last)
                                  and not src.is_contiguous()) else torch.contiguous_format
    if torch.jit.is_tracing():
        # The tracer records the copy_ into a view of a fresh buffer, and the ONNX exporter
        # (dynamo=False) turns that write into a wrong graph that runs: trace a functional copy.
        return src.reshape(src_view).permute(perm).reshape(shape).contiguous(memory_format=fmt)
    out = torch.empty(shape, dtype=src.dtype, device=src.device, memory_format=fmt)
    out.view(out_view).copy_(src.reshape(src_view).permute(perm))  # reshape: a view of dense src
    return out


def _quarters(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> its four (h, w) patches as (4N, C, h, w), sample-major."""
    n, c, hh, ww = x.shape
    h, w = hh // 2, ww // 2
    return _regrouped(x, (n, c, 2, h, 2, w), (0, 2, 4, 1, 3, 5), (4 * n, c, h, w), (n, 2, 2, c, h, w))


def _halves(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> its top and bottom halves as (2N, C, h, W), sample-major: a view in
    channels_last, a copy in NCHW."""
    n, c, hh, ww = x.shape
    return x.reshape(n, c, 2, hh // 2, ww).transpose(1, 2).reshape(2 * n, c, hh // 2, ww)


def _side_by_side(quarters: torch.Tensor, n: int) -> torch.Tensor:
    """(4N, C, h, w) patches (sample-major, [top-left, top-right, bottom-left, bottom-right] per
    sample) -> (2N, C, h, 2w): each sample's top then bottom row, left and right joined along
    width, in the patches' layout (one copy: the width join interleaves the patches' rows)."""
    _, c, h, w = quarters.shape
    return _regrouped(quarters, (n, 2, 2, c, h, w), (0, 1, 3, 4, 2, 5), (2 * n, c, h, 2 * w), (n, 2, c, h, 2, w))


def _stacked(halves: torch.Tensor, n: int) -> torch.Tensor:
    """(2N, C, h, w) (sample-major, [top, bottom] per sample) -> (N, C, 2h, w), top above
    bottom: a view of channels_last halves, a copy of NCHW ones."""
    _, c, h, w = halves.shape
    if halves.is_contiguous(memory_format=torch.channels_last) and not halves.is_contiguous():
        # Through NHWC, so the view has channels_last's own strides also in the batch dimension:
        # a (1, C, H, W) view with another batch stride is channels_last to is_contiguous but
        # NCHW to the convolutions' layout choice, which then wrote NCHW outputs.
        return halves.permute(0, 2, 3, 1).reshape(n, 2 * h, w, c).permute(0, 3, 1, 2)
    return halves.reshape(n, 2, c, h, w).transpose(1, 2).reshape(n, c, 2 * h, w)


class MPRNet(reference.MPRNet):
    """Drop-in fast MPRNet: same constructor (plus `rewrites`), state_dict and outputs.

    ``forward(x)`` returns ``[stage3_img, stage2_img, stage1_img]`` like the reference.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 96, scale_unetfeats: int = 48,
                 scale_orsnetfeats: int = 32, num_cab: int = 8, kernel_size: int = 3,
                 reduction: int = 4, bias: bool = False, rewrites: Union[Rewrites, Mapping[str, bool], None] = None):
        super().__init__(in_c, out_c, n_feat, scale_unetfeats, scale_orsnetfeats, num_cab,
                         kernel_size, reduction, bias)
        self.rewrites = Rewrites.of(rewrites)
        if self.rewrites.fused_blocks:
            # Swaps the reference CALayer/CAB/SAM instances for the fused ones in place, on the
            # same parameter tensors (state_dict and the shared PReLU are unchanged).
            replace_blocks(self)
        if self.rewrites.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.rewrites.prepacked_convs:
            pack_convs(self)  # the class of each Conv2d only: same objects, parameters, state_dict

    # ------------------------------------------------------------------ building blocks
    def _down(self, module: reference.DownSample, x: torch.Tensor) -> torch.Tensor:
        if not self.rewrites.avgpool_downsample:
            return module(x)
        return module.down[1](F.avg_pool2d(x, 2))

    def _up2_add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """_up2(x) + y, in one pass with fused_upsample_add."""
        if self.rewrites.fused_upsample_add:
            return upsample2x_add(x, y)
        return _up2(x) + y

    def _skip_up(self, module: reference.SkipUpSample, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.rewrites.conv_before_upsample:
            return module(x, y)
        return self._up2_add(module.up[1](x), y)

    def _encoder(self, enc: reference.Encoder, x: torch.Tensor,
                 prev_enc: Optional[Sequence[torch.Tensor]] = None,
                 prev_dec: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        fuse = prev_enc is not None
        enc1 = enc.encoder_level1(x)
        if fuse:  # the levels' outputs are new tensors, so the sums may go into them
            enc1 = conv_add(enc.csff_dec1, prev_dec[0], into=conv_add(enc.csff_enc1, prev_enc[0], into=enc1))
        enc2 = enc.encoder_level2(self._down(enc.down12, enc1))
        if fuse:
            enc2 = conv_add(enc.csff_dec2, prev_dec[1], into=conv_add(enc.csff_enc2, prev_enc[1], into=enc2))
        enc3 = enc.encoder_level3(self._down(enc.down23, enc2))
        if fuse:
            enc3 = conv_add(enc.csff_dec3, prev_dec[2], into=conv_add(enc.csff_enc3, prev_enc[2], into=enc3))
        return [enc1, enc2, enc3]

    def _decoder(self, dec: reference.Decoder, enc: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        enc1, enc2, enc3 = enc
        dec3 = dec.decoder_level3(enc3)
        dec2 = dec.decoder_level2(self._skip_up(dec.up32, dec3, dec.skip_attn2(enc2)))
        dec1 = dec.decoder_level1(self._skip_up(dec.up21, dec2, dec.skip_attn1(enc1)))
        return [dec1, dec2, dec3]

    def _orsnet(self, x: torch.Tensor, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor]) -> torch.Tensor:
        o = self.stage3_orsnet
        if not self.rewrites.conv_before_upsample:
            return o(x, enc, dec)
        x = conv_add(o.conv_dec1, dec[0], into=conv_add(o.conv_enc1, enc[0], into=self._orb(o.orb1, x)))

        # Level 2: conv(up(conv_up(e))) == up(conv . conv_up (e)); both branches share one resize.
        m_enc = _matrix(o.conv_enc2) @ _matrix(o.up_enc1.up[1])
        m_dec = _matrix(o.conv_dec2) @ _matrix(o.up_dec1.up[1])
        low = _conv1x1(enc[1], m_enc, o.conv_enc2.bias) + _conv1x1(dec[1], m_dec, o.conv_dec2.bias)
        x = self._up2_add(low, self._orb(o.orb2, x))

        # Level 3: two UpSamples in a row: conv3 . up . conv_b . up . conv_a == up . up . (conv3 conv_b conv_a).
        m_enc = _matrix(o.conv_enc3) @ _matrix(o.up_enc2[1].up[1]) @ _matrix(o.up_enc2[0].up[1])
        m_dec = _matrix(o.conv_dec3) @ _matrix(o.up_dec2[1].up[1]) @ _matrix(o.up_dec2[0].up[1])
        low = _conv1x1(enc[2], m_enc, o.conv_enc3.bias) + _conv1x1(dec[2], m_dec, o.conv_dec3.bias)
        return self._up2_add(_up2(low), self._orb(o.orb3, x))

    @staticmethod
    def _orb(orb: reference.ORB, x: torch.Tensor) -> torch.Tensor:
        """body(x) + x, the add fused into body's last convolution."""
        *cabs, last = orb.body
        y = x
        for cab in cabs:
            y = cab(y)
        return conv_add(last, y, add=x)

    def _stage(self, fn, *args):
        if self.rewrites.checkpoint_stages and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    # ------------------------------------------------------------------ stages
    def _stage1_batched(self, x: torch.Tensor, halves: torch.Tensor):
        n = x.shape[0]
        feat1 = [_side_by_side(f, n) for f in self._encoder(self.stage1_encoder, self.shallow_feat1(_quarters(x)))]
        res1 = self._decoder(self.stage1_decoder, feat1)
        sam_feat, img = self.sam12(res1[0], halves)
        return feat1, res1, sam_feat, _stacked(img, n)

    def _stage2_batched(self, halves, sam_feat, feat1, res1):
        n = halves.shape[0] // 2
        merged = self.concat12(torch.cat([self.shallow_feat2(halves), sam_feat], dim=1))
        feat2 = [_stacked(f, n) for f in self._encoder(self.stage2_encoder, merged, feat1, res1)]
        res2 = self._decoder(self.stage2_decoder, feat2)
        return feat2, res2

    def _stages12_per_patch(self, x: torch.Tensor):
        """Stages 1 and 2 patch by patch, as the reference does (batch_patches off)."""
        h, w = x.shape[2] // 2, x.shape[3] // 2
        halves = [x[:, :, :h, :], x[:, :, h:, :]]
        feats, ress, sams, imgs = [], [], [], []
        for half in halves:
            left = self._encoder(self.stage1_encoder, self.shallow_feat1(half[..., :w]))
            right = self._encoder(self.stage1_encoder, self.shallow_feat1(half[..., w:]))
            feat = [torch.cat([a, b], dim=3) for a, b in zip(left, right)]
            res = self._decoder(self.stage1_decoder, feat)
            sam_feat, img = self.sam12(res[0], half)
            feats.append(feat), ress.append(res), sams.append(sam_feat), imgs.append(img)
        stage1_img = torch.cat(imgs, dim=2)
        parts = [self._encoder(self.stage2_encoder,
                               self.concat12(torch.cat([self.shallow_feat2(half), sam], dim=1)), feat, res)
                 for half, sam, feat, res in zip(halves, sams, feats, ress)]
        feat2 = [torch.cat([t, b], dim=2) for t, b in zip(*parts)]
        return feat2, self._decoder(self.stage2_decoder, feat2), stage1_img

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        self._check_input(x)
        if self.rewrites.reuse_cpu_buffers and plain_cpu_inference(x):
            with reuse_cpu_buffers():
                return self._forward_in_layout(x)
        return self._forward_in_layout(x)

    def _forward_in_layout(self, x: torch.Tensor) -> List[torch.Tensor]:
        if not self.rewrites.channels_last:
            return self._forward(x)
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        outputs = self._forward(x.contiguous(memory_format=torch.channels_last))
        return [o.contiguous(memory_format=layout) for o in outputs]

    def _forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if self.rewrites.batch_patches and not torch.compiler.is_compiling():  # eager only: module docstring
            halves = _halves(x)
            feat1, res1, sam_feat, stage1_img = self._stage(self._stage1_batched, x, halves)
            feat2, res2 = self._stage(self._stage2_batched, halves, sam_feat, feat1, res1)
        else:
            feat2, res2, stage1_img = self._stage(self._stages12_per_patch, x)
        sam_feat, stage2_img = self.sam23(res2[0], x)

        def stage3(x, sam_feat, *features):
            x3 = self.concat23(torch.cat([self.shallow_feat3(x), sam_feat], dim=1))
            return conv_add(self.tail, self._orsnet(x3, features[:3], features[3:]), add=x)

        stage3_img = self._stage(stage3, x, sam_feat, *feat2, *res2)
        return [stage3_img, stage2_img, stage1_img]
