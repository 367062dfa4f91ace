"""The reference MPRNet (three-stage progressive restoration), written from ``docs/MPRNET.md``.

This is the oracle for the whole library: a faithful, unoptimised eager implementation whose
state_dict keys, shapes and numbers match checkpoints trained with the upstream code.  It runs
the four stage-1 patches and the two stage-2 halves one at a time, exactly as described, rather
than batching them; the fast model is the place for such rewrites.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from .blocks import CAB, SAM, CALayer, Decoder, Encoder, ORSNet, conv

__all__ = ["MPRNet", "PRESETS", "EXTRA_PRESETS", "preset_config", "SIZE_MULTIPLE"]

#: Constructor arguments of the three published models (spec table "Presets").
PRESETS: Dict[str, Dict[str, Any]] = {
    "deblur": dict(in_c=3, out_c=3, n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32,
                   num_cab=8, kernel_size=3, reduction=4, bias=False),
    "derain": dict(in_c=3, out_c=3, n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16,
                   num_cab=8, kernel_size=3, reduction=4, bias=False),
    "denoise": dict(in_c=3, out_c=3, n_feat=80, scale_unetfeats=48, scale_orsnetfeats=32,
                    num_cab=8, kernel_size=3, reduction=4, bias=False),
}

#: Smaller configurations with the deblur preset's other arguments: `small` for demos on a CPU
#: (minutes of training, not days), `tiny` for smoke tests (seconds). Not published models.
EXTRA_PRESETS: Dict[str, Dict[str, Any]] = {
    "small": dict(PRESETS["deblur"], n_feat=16, scale_unetfeats=8, scale_orsnetfeats=8, num_cab=2),
    "tiny": dict(PRESETS["deblur"], n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1),
}


def preset_config(name: str) -> Dict[str, Any]:
    """The constructor arguments of a preset (published or extra), a new dict; ValueError naming
    the valid presets for any other name."""
    presets = {**PRESETS, **EXTRA_PRESETS}
    if name not in presets:
        valid = ", ".join(repr(k) for k in presets)
        raise ValueError(f"MPRNet.from_preset: unknown preset {name!r}; valid names: {valid}")
    return dict(presets[name])


# Stage 1 halves H and W into patches, then the U-Net downsamples twice: 2 * 2 * 2.
SIZE_MULTIPLE = 8


def _size_pair(name: str, value, multiple: int = 1) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (tuple, list)) else None
    if (pair is None or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair)
            or min(pair) < 1 or any(v % multiple for v in pair)):
        what = "a positive int or (height, width)" + (f", multiples of {multiple}" if multiple > 1 else "")
        raise ValueError(f"set_local_attention: {name} must be {what}, got {value!r}")
    return pair


def _train_feature_sizes(model: nn.Module, train: Tuple[int, int]) -> Dict[str, Tuple[int, int]]:
    """(h, w) of the map each CALayer of `model` sees on a 1 x in_c x train image, by name."""
    return dict(_feature_sizes(model.in_c, model.out_c, len(model.stage3_orsnet.orb1.body) - 1, train))


@functools.lru_cache(maxsize=32)
def _feature_sizes(in_c: int, out_c: int, num_cab: int, train: Tuple[int, int]) -> Tuple[tuple, ...]:
    """One forward of a narrow twin on the meta device (the sizes depend on the wiring, not the
    widths), cached: restore(local_attention=...) sets and unsets the windows on every call."""
    with torch.device("meta"):
        twin = MPRNet(in_c=in_c, out_c=out_c, n_feat=2, scale_unetfeats=1, scale_orsnetfeats=1,
                      num_cab=num_cab, reduction=1)
    sizes: Dict[str, Tuple[int, int]] = {}

    def record(name):
        def hook(_module, args):
            size = tuple(args[0].shape[-2:])
            if sizes.setdefault(name, size) != size:
                raise RuntimeError(f"{name} sees maps of {sizes[name]} and {size} in one forward")
        return hook

    handles = [m.register_forward_pre_hook(record(n)) for n, m in twin.named_modules() if isinstance(m, CALayer)]
    try:
        twin(torch.empty(1, in_c, *train, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return tuple(sizes.items())


def _autocast_casts(x: torch.Tensor) -> bool:
    """Whether autocast will cast x for the convs: float32/16 under autocast, never float64."""
    if x.dtype == torch.float64 or x.device.type == "meta":  # meta has no autocast state
        return False
    return torch.is_autocast_enabled(x.device.type)


class MPRNet(nn.Module):
    """Multi-stage progressive image restoration network (Zamir et al., CVPR 2021).

    ``forward(x)`` takes an (N, in_c, H, W) image with H and W multiples of 8 and returns
    ``[stage3_img, stage2_img, stage1_img]`` (finest first); each is the degraded input plus a
    predicted residual.  All CABs share one ``nn.PReLU`` (``act``), so the state_dict lists that
    scalar under every ``...body.1.weight`` key while ``named_parameters()`` lists it once.

    ``in_c`` and ``out_c`` must be equal: every stage adds its prediction to the input image.
    """

    def __init__(self, in_c: int = 3, out_c: int = 3, n_feat: int = 96,
                 scale_unetfeats: int = 48, scale_orsnetfeats: int = 32, num_cab: int = 8,
                 kernel_size: int = 3, reduction: int = 4, bias: bool = False):
        super().__init__()
        if in_c != out_c:
            raise ValueError(
                f"MPRNet: in_c and out_c must be equal because each stage predicts a residual "
                f"added to the input image; got in_c={in_c}, out_c={out_c}")
        self.in_c = in_c
        self.out_c = out_c

        # One activation object for the whole network: this is what makes the PReLU shared.
        # It is deliberately a local, not an attribute, so no extra state_dict key appears.
        act = nn.PReLU()

        def shallow() -> nn.Sequential:
            return nn.Sequential(conv(in_c, n_feat, kernel_size, bias=bias),
                                 CAB(n_feat, kernel_size, reduction, bias=bias, act=act))

        self.shallow_feat1 = shallow()
        self.shallow_feat2 = shallow()
        self.shallow_feat3 = shallow()

        self.stage1_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats,
                                      csff=False)
        self.stage1_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage2_encoder = Encoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats,
                                      csff=True)
        self.stage2_decoder = Decoder(n_feat, kernel_size, reduction, act, bias, scale_unetfeats)
        self.stage3_orsnet = ORSNet(n_feat, scale_orsnetfeats, kernel_size, reduction, act, bias,
                                    scale_unetfeats, num_cab)

        self.sam12 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)
        self.sam23 = SAM(n_feat, kernel_size=1, bias=bias, img_channels=in_c)

        self.concat12 = conv(n_feat * 2, n_feat, kernel_size, bias=bias)
        self.concat23 = conv(n_feat * 2, n_feat + scale_orsnetfeats, kernel_size, bias=bias)
        self.tail = conv(n_feat + scale_orsnetfeats, out_c, kernel_size, bias=bias)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "MPRNet":
        """Build one of the published configurations ("deblur", "derain", "denoise") or of the
        smaller EXTRA_PRESETS ("small", "tiny").

        ``overrides`` replace individual constructor arguments (keyword arguments of the class,
        e.g. ``num_cab=1`` for a cheap model with the preset's widths, or the fast model's
        ``rewrites``).
        """
        kwargs = preset_config(name)
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def local_attention(self) -> Optional[Dict[str, Tuple[int, int]]]:
        """{"train_size": (h, w), "base_size": (h, w)} after set_local_attention, else None."""
        return getattr(self, "_local_attention", None)

    def set_local_attention(self, train_size: Union[int, Sequence[int], None] = 256,
                            base_size: Union[int, Sequence[int], None] = None) -> "MPRNet":
        """Switches every channel attention to local statistics, in place (TLC, the Test-time
        Local Converter of Chu et al., ECCV 2022): each CALayer then pools over a K1 x K2 window
        around each position instead of the whole map, where K = (the layer's feature size when
        the model sees a `train_size` input) * base_size // train_size, so that at test time
        each layer sees statistics of a region like the one it was trained on. base_size None
        is 1.5 x train_size. No parameter changes and the state_dict is unchanged.
        `set_local_attention(None)` goes back to global attention. Returns the model.

        TLC's code divides by 256 whatever its train_size; here the given train_size is used."""
        # the reference's CALayers and their fused twins (mprnet_kernels.nn), by name
        layers = {name: m for name, m in self.named_modules()
                  if isinstance(m, CALayer) or getattr(m, "_reference", None) is CALayer}
        if train_size is None:
            if base_size is not None:
                raise ValueError("set_local_attention: base_size needs a train_size (None switches "
                                 "local attention off)")
            for layer in layers.values():
                layer.window = None
            self._local_attention = None
            return self
        train = _size_pair("train_size", train_size, multiple=SIZE_MULTIPLE)
        base = (train[0] * 3 // 2, train[1] * 3 // 2) if base_size is None else _size_pair("base_size", base_size)
        windows = {}
        for name, (h, w) in _train_feature_sizes(self, train).items():
            windows[name] = (h * base[0] // train[0], w * base[1] // train[1])
            if min(windows[name]) < 1:
                raise ValueError(f"set_local_attention: base_size {base} gives {name} a window of "
                                 f"{windows[name]} (its features are {h}x{w} at train_size {train}); "
                                 f"choose a larger base_size")
        for name, window in windows.items():
            layers[name].window = window
        self._local_attention = {"train_size": train, "base_size": base}
        return self

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"MPRNet: expected a torch.Tensor, got {type(x).__name__}")
        self._check_dtype_device(x)
        shape = tuple(x.shape)
        if x.dim() != 4 or shape[1] != self.in_c:
            raise ValueError(
                f"MPRNet: expected an input of shape (N, {self.in_c}, H, W), got {shape}")
        h, w = shape[2], shape[3]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
            raise ValueError(
                f"MPRNet: input height and width must be non-zero multiples of {SIZE_MULTIPLE}, "
                f"got {shape}; pad the image first")

    def _check_dtype_device(self, x: torch.Tensor) -> None:
        # torch's conv would say only "expected scalar type Double but found Float".
        param = next(self.parameters())
        if not x.is_floating_point():
            raise TypeError(f"MPRNet: expected a floating-point image with values in [0, 1], got {x.dtype}; "
                            f"convert it first, e.g. x.to({param.dtype}) / 255 for 8-bit images")
        if x.device != param.device:
            raise ValueError(f"MPRNet: the input is on {x.device} but the model's parameters are on "
                             f"{param.device}; move one to the other (model.to(x.device) or x.to('{param.device}'))")
        if x.dtype != param.dtype and not (param.dtype != torch.float64 and _autocast_casts(x)):
            raise TypeError(f"MPRNet: the input is {x.dtype} but the model's parameters are {param.dtype}; "
                            f"convert one to the other (model.to({x.dtype}), e.g. model.double(), or "
                            f"x.to({param.dtype})), or run under torch.autocast for mixed precision")

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        self._check_input(x)
        height, width = x.shape[-2], x.shape[-1]
        half_h, half_w = height // 2, width // 2

        # ---- patches: 2 halves for stage 2, 4 quarters for stage 1 ----
        top = x[:, :, :half_h, :]
        bottom = x[:, :, half_h:, :]
        top_left, top_right = top[..., :half_w], top[..., half_w:]
        bottom_left, bottom_right = bottom[..., :half_w], bottom[..., half_w:]

        # ---- stage 1: each quarter on its own, then stitch left|right per level ----
        def encode1(patch: torch.Tensor) -> List[torch.Tensor]:
            return self.stage1_encoder(self.shallow_feat1(patch))

        def side_by_side(left: List[torch.Tensor], right: List[torch.Tensor]):
            return [torch.cat([a, b], dim=3) for a, b in zip(left, right)]

        feat1_top = side_by_side(encode1(top_left), encode1(top_right))
        feat1_bottom = side_by_side(encode1(bottom_left), encode1(bottom_right))
        res1_top = self.stage1_decoder(feat1_top)
        res1_bottom = self.stage1_decoder(feat1_bottom)

        sam1_top, img1_top = self.sam12(res1_top[0], top)
        sam1_bottom, img1_bottom = self.sam12(res1_bottom[0], bottom)
        stage1_img = torch.cat([img1_top, img1_bottom], dim=2)

        # ---- stage 2: each half on its own, fused with stage-1 features, then stacked ----
        def encode2(half: torch.Tensor, sam_feat: torch.Tensor, enc_prev, dec_prev):
            merged = self.concat12(torch.cat([self.shallow_feat2(half), sam_feat], dim=1))
            return self.stage2_encoder(merged, enc_prev, dec_prev)

        feat2_top = encode2(top, sam1_top, feat1_top, res1_top)
        feat2_bottom = encode2(bottom, sam1_bottom, feat1_bottom, res1_bottom)
        feat2 = [torch.cat([t, b], dim=2) for t, b in zip(feat2_top, feat2_bottom)]
        res2 = self.stage2_decoder(feat2)
        sam2_feat, stage2_img = self.sam23(res2[0], x)

        # ---- stage 3: full resolution ----
        x3 = self.concat23(torch.cat([self.shallow_feat3(x), sam2_feat], dim=1))
        x3 = self.stage3_orsnet(x3, feat2, res2)
        stage3_img = self.tail(x3) + x

        return [stage3_img, stage2_img, stage1_img]
