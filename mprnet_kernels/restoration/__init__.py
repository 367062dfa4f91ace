"""restore(): an image tensor of any size through MPRNet, whole or in blended tiles.

Python: ``restore(model, image, tile=None, overlap=32, progress=None)`` takes a (3, H, W) or
(N, 3, H, W) float tensor in [0, 1] of any size and returns the model's final (stage-3) output of
the same shape, clamped to [0, 1]:

- MPRNet needs H and W to be multiples of 8, so the image is padded at the bottom and right by
  reflection (mirroring without repeating the edge row, as F.pad's "reflect") and the output
  cropped back. Reflection needs the side to be longer than the pad; a side shorter than that
  (under 8 px) is padded by replicating its last row/column instead.
- It runs under torch.inference_mode on the model's device and dtype and returns a tensor on the
  image's device in the image's dtype (an ordinary tensor, not an inference tensor).
- With ``tile=T`` (a multiple of 8) the padded image is cut into T x T tiles overlapping by at
  least ``overlap`` pixels, the last tile of each row/column aligned to the image edge; each tile
  runs on its own (only a tile's features are in memory at once) and the outputs are averaged
  with weights that ramp linearly from 1/(O+1) to 1 across the O pixels next to an inner tile
  border (1 at the image's own borders), accumulated in float64. Where two ramps meet they add
  up to 1: a cross-fade. The weights are positive everywhere, so every pixel is covered, and a
  purely local model gives exactly its whole-image result. A side that fits in one tile is not
  cut; an image that fits in one tile takes the whole-image path.
- ``local_attention`` switches the model's channel attention for the call (and back after it):
  None leaves the model as it is, False runs global attention, True local attention (TLC,
  ``MPRNet.set_local_attention``) with train_size 256, an int that train_size, a dict
  ``{"train_size": ..., "base_size": ...}`` both.
- ``progress(done, total)``, when given, is called after each model call: once per tile
  (``tile_count`` of them), or once for a whole image, so a caller can show progress inside one
  large image.

Tiles are an approximation for MPRNet: every channel-attention block pools its features over
the whole input, so a tile sees other statistics than the whole image. With the small config
trained to restore, tiles of 256 cost about 0.01 dB against the target and tiles of 128 about
0.1 dB (bench/results/tiling.md, measured by bench/tiling.py).

The `mprnet-kernels restore` command is restoration/cli.py; ``evaluate`` (PSNR and SSIM over
paired folders) is restoration/evaluate.py and the `evaluate` command restoration/evaluate_cli.py.
"""

from __future__ import annotations

import contextlib

import torch

from ..images import pad_to_multiple
from ..metrics import psnr as _batch_psnr
from ..reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it
from ..tasks import TASKS

# pad_to_multiple and TASKS stay importable from here, as before the split.
__all__ = ["restore", "attention", "check_tiling", "local_attention_arguments", "pad_to_multiple", "tile_starts", "tile_count", "tiling_difference", "psnr",
           "TASKS"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_tiling(tile, overlap, prefix: str = "") -> None:
    """ValueError naming the argument (prefixed: "--" words it for the command line) unless tile
    is None or a positive multiple of 8 and 0 <= overlap < tile."""
    if tile is not None and (not _is_int(tile) or tile < SIZE_MULTIPLE or tile % SIZE_MULTIPLE):
        whole = "leave --tile out" if prefix == "--" else "None"  # the CLI has no None to give
        raise ValueError(f"{prefix}tile: expected a positive multiple of {SIZE_MULTIPLE} ({whole} for whole "
                         f"images), got {tile!r}")
    if not _is_int(overlap) or overlap < 0:
        raise ValueError(f"{prefix}overlap: expected an integer >= 0, got {overlap!r}")
    if tile is not None and overlap >= tile:
        raise ValueError(f"{prefix}overlap: expected less than {prefix}tile ({tile}), got {overlap}")


def _as_batch(image, model) -> tuple[torch.Tensor, bool]:
    """(N, C, H, W) view of image and whether it came without the batch dimension."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a torch.Tensor, got {type(image).__name__}")
    channels = getattr(model, "in_c", 3)
    if image.dim() not in (3, 4) or image.shape[-3] != channels:
        raise ValueError(f"image: expected a ({channels}, H, W) or (N, {channels}, H, W) tensor, "
                         f"got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image: expected a floating-point tensor with values in [0, 1], got {image.dtype}")
    if image.numel() == 0:
        raise ValueError(f"image: expected a non-empty image, got shape {tuple(image.shape)}")
    return (image[None], True) if image.dim() == 3 else (image, False)


def _device_dtype(model, image: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Where and in what the model computes: its first floating parameter's (the image's for a
    model without parameters)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.device, p.dtype
    return image.device, image.dtype


def _run(model, x: torch.Tensor, device, dtype) -> torch.Tensor:
    """The model's final output on x, back on x's device in x's dtype."""
    return model(x.to(device=device, dtype=dtype))[0].to(device=x.device, dtype=x.dtype)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Offsets of the tiles along a side of `size`: every tile - overlap pixels, the last one
    aligned to the end (so it may overlap its neighbour by more). One tile when size <= tile."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def tile_count(height: int, width: int, tile: int | None, overlap: int = 32) -> int:
    """How many model calls restore() makes for one (N, 3, height, width) image: the tiles of
    the image padded to multiples of 8, or 1 (whole image, or one that fits a tile)."""
    check_tiling(tile, overlap)
    h, w = -(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE
    if tile is None or max(h, w) <= tile:
        return 1
    return len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))


def _ramp(length: int, overlap: int, rise: bool, fall: bool, dtype, device) -> torch.Tensor:
    """1-D blending weights of a tile side: 1, ramping down to 1/(overlap+1) over the overlap
    pixels at an end that borders another tile (rise: the start, fall: the end)."""
    w = torch.ones(length, dtype=dtype, device=device)
    if overlap:
        r = torch.arange(1, overlap + 1, dtype=dtype, device=device) / (overlap + 1)
        if rise:
            w[:overlap] = torch.minimum(w[:overlap], r)
        if fall:
            w[-overlap:] = torch.minimum(w[-overlap:], r.flip(0))
    return w


def _run_tiled(model, x: torch.Tensor, tile: int, overlap: int, device, dtype, progress) -> torch.Tensor:
    """The model on overlapping tiles of x (N, C, H, W, multiples of 8), blended (module docstring)."""
    n, c, h, w = x.shape
    acc_dtype = torch.float32 if x.device.type == "mps" else torch.float64  # mps has no float64
    total = torch.zeros((n, c, h, w), dtype=acc_dtype, device=x.device)
    weight = torch.zeros((h, w), dtype=acc_dtype, device=x.device)
    th, tw = min(tile, h), min(tile, w)
    tops, lefts = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    done = 0
    for top in tops:
        wy = _ramp(th, overlap, top > 0, top + th < h, acc_dtype, x.device)
        for left in lefts:
            wx = _ramp(tw, overlap, left > 0, left + tw < w, acc_dtype, x.device)
            window = wy[:, None] * wx[None, :]
            out = _run(model, x[..., top:top + th, left:left + tw], device, dtype)
            total[..., top:top + th, left:left + tw] += out.to(acc_dtype) * window
            weight[top:top + th, left:left + tw] += window
            done += 1
            if progress is not None:
                progress(done, len(tops) * len(lefts))
    return (total / weight).to(x.dtype)


def local_attention_arguments(value) -> dict | None:
    """set_local_attention's keyword arguments for restore's `local_attention` (None: leave the
    model as it is; module docstring); ValueError/TypeError naming it otherwise."""
    if value is None:
        return None
    if value is False:
        return {"train_size": None}
    if value is True:
        return {"train_size": 256}
    if _is_int(value):
        return {"train_size": value}
    if isinstance(value, dict):
        unknown = set(value) - {"train_size", "base_size"}
        if unknown:
            raise ValueError(f"local_attention: unknown key(s) {sorted(unknown)}; expected train_size, base_size")
        return {"train_size": value.get("train_size", 256), "base_size": value.get("base_size")}
    raise TypeError(f"local_attention: expected None, True, False, a train_size or a dict with train_size and "
                    f"base_size, got {value!r}")


@contextlib.contextmanager
def attention(model, local_attention):
    """The model with `local_attention` applied (restore's argument) inside the block, and its
    own attention back after it."""
    arguments = local_attention_arguments(local_attention)
    if arguments is None:
        yield model
        return
    if not hasattr(model, "set_local_attention"):
        raise TypeError(f"local_attention: {type(model).__name__} has no set_local_attention (an MPRNet has)")
    before = model.local_attention
    try:
        model.set_local_attention(**arguments)
    except ValueError as e:
        raise ValueError(f"local_attention: {str(e).replace('set_local_attention: ', '')}") from None
    try:
        yield model
    finally:
        model.set_local_attention(**(before or {"train_size": None}))


def restore(model, image: torch.Tensor, tile: int | None = None, overlap: int = 32, progress=None,
            local_attention=None) -> torch.Tensor:
    """The restored image: model's stage-3 output on image ((3, H, W) or (N, 3, H, W), floats in
    [0, 1], any H and W), same shape, clamped to [0, 1]. With tile, in overlapping tile x tile
    pieces blended together (close to, not equal to, the whole-image result: see the module
    docstring). progress(done, total), if given, is called after every model call.
    local_attention: None (the model as it is), False, True, a train_size or a dict (module
    docstring). Raises ValueError (TypeError for progress) naming a bad argument."""
    check_tiling(tile, overlap)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress: expected a callable(done, total) or None, got {type(progress).__name__}")
    x, unbatched = _as_batch(image, model)
    device, dtype = _device_dtype(model, x)
    h, w = x.shape[-2:]
    with torch.inference_mode(), attention(model, local_attention):
        padded = pad_to_multiple(x)
        if tile is None or max(padded.shape[-2:]) <= tile:
            out = _run(model, padded, device, dtype)
            if progress is not None:
                progress(1, 1)
        else:
            out = _run_tiled(model, padded, tile, overlap, device, dtype, progress)
        out = out[..., :h, :w].clamp(0, 1)
    out = out.clone()  # outside inference mode: an ordinary tensor the caller may modify in place
    return out[0] if unbatched else out


def tiling_difference(model, image: torch.Tensor, tile: int, overlap: int = 32, target=None) -> dict:
    """How far the tiled result is from the whole-image one on image: {"psnr" (dB, tiled vs
    whole), "max_abs", "mean_abs", and with a target "psnr_whole" and "psnr_tiled" against it}."""
    whole = restore(model, image)
    tiled = restore(model, image, tile=tile, overlap=overlap)
    result = {"psnr": psnr(tiled, whole), "max_abs": (tiled - whole).abs().max().item(),
              "mean_abs": (tiled - whole).abs().mean().item()}
    if target is not None:
        result.update(psnr_whole=psnr(whole, target), psnr_tiled=psnr(tiled, target))
    return result


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of one image against another, both in [0, 1] (metrics.psnr, as training logs it)."""
    return float(_batch_psnr(a.reshape(1, -1).double(), b.reshape(1, -1).double()))
