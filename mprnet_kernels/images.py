"""Image files <-> float tensors, the one place the CLI's `train`, `restore` and `make-demo-data` read
and write pictures (Pillow).

Tensors are float32, (3, H, W), RGB, values in [0, 1]. MPRNet is an RGB model, so other modes are
converted on reading, and the conversion is reported (not silently done) so a command can say it.
Pixels are taken as stored: EXIF orientation is not applied, so an output has the input's stored
size; multi-frame files (GIF, TIFF) give their first frame. 16-bit RGB PNGs are reduced to 8 bits
per channel by Pillow (it has no 16-bit RGB mode); the note says so.

``pad_to_multiple`` pads an image tensor to the sizes MPRNet takes; restore() and validation
share it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """A file that is missing, not an image, or an image Pillow cannot decode."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files directly in folder, sorted by name (hidden files skipped)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=2)


def _to_rgb_array(img, fmt: str | None = None) -> tuple[np.ndarray, str | None]:
    """(H, W, 3) float32 array in [0, 1] and a note on any conversion made. fmt is the file's
    format (img.format), which says how to scale mode "I"."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale (PNG)
        a = np.asarray(img).astype(np.float32) / 65535.0
        return _gray_to_rgb(a), "16-bit grayscale: scaled to [0, 1] and converted to RGB"
    if mode == "I":
        # 32-bit integer grayscale. Older Pillows open 16-bit grayscale PNGs like this, and those
        # hold 16-bit values whatever their maximum; other formats are read as 16-bit when any
        # value exceeds 255 and as 8-bit otherwise (a guess: the file does not say).
        a = np.asarray(img).astype(np.float32)
        scale = 65535.0 if fmt == "PNG" or a.max(initial=0) > 255 else 255.0
        return _gray_to_rgb(a / scale), "integer grayscale: converted to RGB"
    if mode == "F":
        return _gray_to_rgb(np.asarray(img).astype(np.float32)), "float grayscale: clipped to [0, 1], converted to RGB"
    note = None
    if mode != "RGB":
        note = {
            "L": "grayscale: converted to RGB",
            "LA": "grayscale with alpha: alpha dropped, converted to RGB",
            "RGBA": "RGBA: alpha dropped",
            "P": "palette image: converted to RGB",
            "PA": "palette image with alpha: alpha dropped, converted to RGB",
            "CMYK": "CMYK: converted to RGB",
            "1": "1-bit: converted to RGB",
        }.get(mode, f"mode {mode}: converted to RGB")
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0, note


def read_image(path) -> tuple[torch.Tensor, str | None]:
    """(image, note): a float32 (3, H, W) tensor in [0, 1] and a note saying how the file was converted
    to RGB (None when it was 8-bit RGB already). Raises ImageReadError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            sixteen_bit_colour = _sixteen_bit_colour(img)  # the decoder's tiles go away on load()
            img.load()
            array, note = _to_rgb_array(img, img.format)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if sixteen_bit_colour:
        note = "; ".join(n for n in ("16-bit colour: reduced to 8 bits per channel", note) if n)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), note


def _sixteen_bit_colour(img) -> bool:
    """Whether Pillow is about to decode 16-bit RGB(A) samples into its 8-bit RGB(A) mode (PNG
    raw modes "RGB;16B", "RGBA;16B"), a loss of precision worth a note."""
    tiles = getattr(img, "tile", None) or []
    return img.mode in ("RGB", "RGBA") and any(len(t) > 3 and ";16" in str(t[3]) for t in tiles)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, clamped and rounded to nearest."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")
    a = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return a.permute(1, 2, 0).cpu().numpy()


def write_png(path, image: torch.Tensor) -> None:
    """Writes a (3, H, W) float tensor in [0, 1] as an 8-bit RGB PNG (parents created)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)


def _pad_index(size: int, pad: int) -> torch.Tensor:
    """Source index of each of size + pad output positions: mirrored past the end, or the last
    index repeated when the side is too short to mirror."""
    index = torch.arange(size + pad)
    if pad < size:
        return torch.where(index < size, index, 2 * (size - 1) - index)
    return index.clamp(max=size - 1)


def pad_to_multiple(x: torch.Tensor, multiple: int = SIZE_MULTIPLE) -> torch.Tensor:
    """x (..., H, W) padded at the bottom and right to multiples of `multiple`: reflected, or
    replicated along a side shorter than its pad."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_w:
        x = x.index_select(-1, _pad_index(w, pad_w).to(x.device))
    if pad_h:
        x = x.index_select(-2, _pad_index(h, pad_h).to(x.device))
    return x
