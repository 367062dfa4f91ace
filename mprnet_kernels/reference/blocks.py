"""Building blocks of the reference MPRNet, written from ``docs/MPRNET.md``.

Every attribute name here appears in state_dict keys, so the names (and the order in which
sub-modules are registered, which fixes the order of ``state_dict()`` and
``named_parameters()``) follow the upstream layout exactly.  The point of this package is to be
an obviously-correct oracle, so every block is plain eager PyTorch with no fusion or shortcuts:
later fast versions of ``CALayer``, ``CAB`` and ``SAM`` are checked against these classes.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .ops import effective_window, local_mean, replicate_to

__all__ = [
    "conv",
    "CALayer",
    "CAB",
    "SAM",
    "DownSample",
    "UpSample",
    "SkipUpSample",
    "Encoder",
    "Decoder",
    "ORB",
    "ORSNet",
]


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = False,
         stride: int = 1) -> nn.Conv2d:
    """A "same"-size convolution (padding ``kernel_size // 2``) as every MPRNet conv uses."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=kernel_size // 2, bias=bias)


def _bilinear(scale: float) -> nn.Upsample:
    """Bilinear resize by ``scale`` with ``align_corners=False``.

    ``nn.Upsample`` is a thin wrapper over ``F.interpolate(scale_factor=..., mode="bilinear",
    align_corners=False)``; it is a module (not a function) because upstream keeps the resize
    as element ``0`` of a Sequential, which shifts the 1x1 conv to index ``1`` in the keys.
    """
    return nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)


class CALayer(nn.Module):
    """Channel attention: scale each channel by a gate computed from its global mean (or, once
    ``window`` is set, from the mean over a window around each position: local attention, see
    ``MPRNet.set_local_attention``).

    gate = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2), output = x * gate.  The pooling is per
    sample, which is why MPRNet's patches can later be batched along N without changing numbers.
    """

    def __init__(self, channel: int, reduction: int = 4, bias: bool = False):
        super().__init__()
        if channel // reduction < 1:
            raise ValueError(
                f"CALayer: channel // reduction must be at least 1, got channel={channel}, "
                f"reduction={reduction}")
        hidden = channel // reduction
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, hidden, 1, padding=0, bias=bias),
            nn.ReLU(),
            nn.Conv2d(hidden, channel, 1, padding=0, bias=bias),
            nn.Sigmoid(),
        )

        # Local attention (TLC): the (K1, K2) window its mean is taken over, None = global.
        # Not state: set by MPRNet.set_local_attention, not saved in the state_dict.
        self.window: Optional[Tuple[int, int]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.window is None:
            return x * self.conv_du(self.avg_pool(x))
        window = effective_window(self.window, x.shape[-2:])
        return x * replicate_to(self.conv_du(local_mean(x, window)), x.shape[-2:])

    def extra_repr(self) -> str:
        return "" if self.window is None else f"window={self.window}"


class CAB(nn.Module):
    """Channel attention block: ``CA(conv(act(conv(x)))) + x``.

    ``act`` is passed in rather than created here because MPRNet shares ONE ``nn.PReLU``
    between all of its CABs (every ``...body.1.weight`` key is the same scalar).  When ``act``
    is omitted a private ``nn.PReLU()`` is made, which is convenient for testing a lone block.
    ``CA`` is registered before ``body`` so that state_dict order matches upstream checkpoints.
    """

    def __init__(self, n_feat: int, kernel_size: int = 3, reduction: int = 4,
                 bias: bool = False, act: Optional[nn.Module] = None):
        super().__init__()
        if act is None:
            act = nn.PReLU()
        self.CA = CALayer(n_feat, reduction, bias=bias)
        self.body = nn.Sequential(
            conv(n_feat, n_feat, kernel_size, bias=bias),
            act,
            conv(n_feat, n_feat, kernel_size, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


class SAM(nn.Module):
    """Supervised attention module between stages.

    From stage features ``x`` and the degraded image ``x_img`` it predicts a restored image
    ``img = conv2(x) + x_img`` (this is the intermediate output that gets supervised), then uses
    that image to gate the features passed on: ``conv1(x) * sigmoid(conv3(img)) + x``.

    Returns ``(features, img)``.  ``img_channels`` is 3 upstream (hard-wired there); it is a
    parameter here only so that a model with ``in_c == out_c != 3`` stays consistent.
    """

    def __init__(self, n_feat: int, kernel_size: int = 1, bias: bool = False,
                 img_channels: int = 3):
        super().__init__()
        self.conv1 = conv(n_feat, n_feat, kernel_size, bias=bias)
        self.conv2 = conv(n_feat, img_channels, kernel_size, bias=bias)
        self.conv3 = conv(img_channels, n_feat, kernel_size, bias=bias)

    def forward(self, x: torch.Tensor, x_img: torch.Tensor):
        img = self.conv2(x) + x_img
        gate = torch.sigmoid(self.conv3(img))
        features = self.conv1(x) * gate + x
        return features, img


class DownSample(nn.Module):
    """Halve H and W (bilinear x0.5) then widen channels ``C -> C + s`` with a 1x1 conv."""

    def __init__(self, in_channels: int, s_factor: int):
        super().__init__()
        self.down = nn.Sequential(
            _bilinear(0.5),
            nn.Conv2d(in_channels, in_channels + s_factor, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(x)


class UpSample(nn.Module):
    """Double H and W (bilinear x2) then narrow channels ``C + s -> C`` with a 1x1 conv."""

    def __init__(self, in_channels: int, s_factor: int):
        super().__init__()
        self.up = nn.Sequential(
            _bilinear(2.0),
            nn.Conv2d(in_channels + s_factor, in_channels, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class SkipUpSample(nn.Module):
    """``UpSample`` of the coarse map ``x`` followed by adding the skip connection ``y``."""

    def __init__(self, in_channels: int, s_factor: int):
        super().__init__()
        self.up = nn.Sequential(
            _bilinear(2.0),
            nn.Conv2d(in_channels + s_factor, in_channels, 1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.up(x) + y


def _cab_stack(count: int, n_feat: int, kernel_size: int, reduction: int, bias: bool,
               act: nn.Module) -> nn.Sequential:
    return nn.Sequential(*[CAB(n_feat, kernel_size, reduction, bias=bias, act=act)
                           for _ in range(count)])


class Encoder(nn.Module):
    """Three-level U-Net encoder at widths ``n, n+s, n+2s`` (two CABs per level).

    With ``csff=True`` (stage 2) it also owns the cross-stage feature fusion 1x1 convs, which add
    the previous stage's encoder and decoder features level by level.
    """

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module,
                 bias: bool, scale_unetfeats: int, csff: bool):
        super().__init__()
        widths = [n_feat + i * scale_unetfeats for i in range(3)]
        self.csff = csff
        self.encoder_level1 = _cab_stack(2, widths[0], kernel_size, reduction, bias, act)
        self.encoder_level2 = _cab_stack(2, widths[1], kernel_size, reduction, bias, act)
        self.encoder_level3 = _cab_stack(2, widths[2], kernel_size, reduction, bias, act)
        self.down12 = DownSample(widths[0], scale_unetfeats)
        self.down23 = DownSample(widths[1], scale_unetfeats)
        if csff:
            # Registered enc1..3 then dec1..3: that is the upstream key order.
            self.csff_enc1 = nn.Conv2d(widths[0], widths[0], 1, bias=bias)
            self.csff_enc2 = nn.Conv2d(widths[1], widths[1], 1, bias=bias)
            self.csff_enc3 = nn.Conv2d(widths[2], widths[2], 1, bias=bias)
            self.csff_dec1 = nn.Conv2d(widths[0], widths[0], 1, bias=bias)
            self.csff_dec2 = nn.Conv2d(widths[1], widths[1], 1, bias=bias)
            self.csff_dec3 = nn.Conv2d(widths[2], widths[2], 1, bias=bias)

    def forward(self, x: torch.Tensor,
                encoder_outs: Optional[Sequence[torch.Tensor]] = None,
                decoder_outs: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        fuse = encoder_outs is not None and decoder_outs is not None
        if fuse and not self.csff:
            raise ValueError("Encoder: previous-stage features were given but this encoder was "
                             "built with csff=False")

        enc1 = self.encoder_level1(x)
        if fuse:
            enc1 = enc1 + self.csff_enc1(encoder_outs[0]) + self.csff_dec1(decoder_outs[0])

        enc2 = self.encoder_level2(self.down12(enc1))
        if fuse:
            enc2 = enc2 + self.csff_enc2(encoder_outs[1]) + self.csff_dec2(decoder_outs[1])

        enc3 = self.encoder_level3(self.down23(enc2))
        if fuse:
            enc3 = enc3 + self.csff_enc3(encoder_outs[2]) + self.csff_dec3(decoder_outs[2])

        return [enc1, enc2, enc3]


class Decoder(nn.Module):
    """Three-level U-Net decoder; each skip connection first passes through its own CAB."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module,
                 bias: bool, scale_unetfeats: int):
        super().__init__()
        widths = [n_feat + i * scale_unetfeats for i in range(3)]
        self.decoder_level1 = _cab_stack(2, widths[0], kernel_size, reduction, bias, act)
        self.decoder_level2 = _cab_stack(2, widths[1], kernel_size, reduction, bias, act)
        self.decoder_level3 = _cab_stack(2, widths[2], kernel_size, reduction, bias, act)
        self.skip_attn1 = CAB(widths[0], kernel_size, reduction, bias=bias, act=act)
        self.skip_attn2 = CAB(widths[1], kernel_size, reduction, bias=bias, act=act)
        self.up21 = SkipUpSample(widths[0], scale_unetfeats)
        self.up32 = SkipUpSample(widths[1], scale_unetfeats)

    def forward(self, encoder_outs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        enc1, enc2, enc3 = encoder_outs
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up32(dec3, self.skip_attn2(enc2)))
        dec1 = self.decoder_level1(self.up21(dec2, self.skip_attn1(enc1)))
        return [dec1, dec2, dec3]


class ORB(nn.Module):
    """Original-resolution block: ``num_cab`` CABs and a conv, wrapped in a residual."""

    def __init__(self, n_feat: int, kernel_size: int, reduction: int, act: nn.Module,
                 bias: bool, num_cab: int):
        super().__init__()
        layers = [CAB(n_feat, kernel_size, reduction, bias=bias, act=act) for _ in range(num_cab)]
        # Upstream builds this trailing conv without a bias whatever ``bias`` says.
        layers.append(conv(n_feat, n_feat, kernel_size, bias=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class ORSNet(nn.Module):
    """Stage 3: three ORBs at full resolution, width ``n + o``, fed by stage-2 features.

    After each ORB it adds 1x1-projected encoder and decoder features of the matching U-Net
    level, bilinearly upsampled back to full resolution (once for level 2, twice for level 3).
    """

    def __init__(self, n_feat: int, scale_orsnetfeats: int, kernel_size: int, reduction: int,
                 act: nn.Module, bias: bool, scale_unetfeats: int, num_cab: int):
        super().__init__()
        width = n_feat + scale_orsnetfeats
        s = scale_unetfeats
        self.orb1 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb2 = ORB(width, kernel_size, reduction, act, bias, num_cab)
        self.orb3 = ORB(width, kernel_size, reduction, act, bias, num_cab)

        self.up_enc1 = UpSample(n_feat, s)
        self.up_dec1 = UpSample(n_feat, s)
        self.up_enc2 = nn.Sequential(UpSample(n_feat + s, s), UpSample(n_feat, s))
        self.up_dec2 = nn.Sequential(UpSample(n_feat + s, s), UpSample(n_feat, s))

        self.conv_enc1 = nn.Conv2d(n_feat, width, 1, bias=bias)
        self.conv_enc2 = nn.Conv2d(n_feat, width, 1, bias=bias)
        self.conv_enc3 = nn.Conv2d(n_feat, width, 1, bias=bias)
        self.conv_dec1 = nn.Conv2d(n_feat, width, 1, bias=bias)
        self.conv_dec2 = nn.Conv2d(n_feat, width, 1, bias=bias)
        self.conv_dec3 = nn.Conv2d(n_feat, width, 1, bias=bias)

    def forward(self, x: torch.Tensor, encoder_outs: Sequence[torch.Tensor],
                decoder_outs: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.orb1(x)
        x = x + self.conv_enc1(encoder_outs[0]) + self.conv_dec1(decoder_outs[0])

        x = self.orb2(x)
        x = (x + self.conv_enc2(self.up_enc1(encoder_outs[1]))
             + self.conv_dec2(self.up_dec1(decoder_outs[1])))

        x = self.orb3(x)
        x = (x + self.conv_enc3(self.up_enc2(encoder_outs[2]))
             + self.conv_dec3(self.up_dec2(decoder_outs[2])))
        return x
