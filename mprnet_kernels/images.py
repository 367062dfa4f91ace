"""Image files <-> float tensors, the one place the CLI's `train`, `restore`, `evaluate` and
`make-demo-data` read and write pictures (Pillow).

Tensors are float32, (3, H, W), RGB, values in [0, 1]. MPRNet is an RGB model, so other modes are
converted on reading, and the conversion is reported (not silently done) so a command can say it:

- Grayscale files (8-bit "L", 16-bit, 1-bit, with alpha) become 3 equal channels; ``read_image_file``
  also says which mode to write a result back in (``ImageFile.mode``), so that a grayscale input
  gives a grayscale output: 8-bit "L" for 8-bit (and 1-bit) files, 16-bit for 16-bit files.
  ``write_png`` turns the 3 channels back into one by their mean.
- Alpha is dropped, palettes and CMYK are converted to RGB (the result is written as RGB).
- 16-bit RGB PNGs are reduced to 8 bits per channel by Pillow (it has no 16-bit RGB mode).
- The EXIF orientation tag (JPEGs from cameras and phones) is applied, so tensors, outputs and
  sizes are as viewers show the picture, not as the pixels are stored; the note says so.
- Multi-frame files (GIF, TIFF) give their first frame.

``pad_to_multiple`` pads an image tensor to the sizes MPRNet takes; restore() and validation
share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .reference.model import SIZE_MULTIPLE  # H and W of MPRNet's input are multiples of it

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: The modes write_png writes: 8-bit RGB, 8-bit grayscale, 16-bit grayscale.
OUTPUT_MODES = ("RGB", "L", "I;16")
_OUTPUT_MAX = {"RGB": 255, "L": 255, "I;16": 65535}

_EXIF_ORIENTATION = 0x0112
#: What applying each EXIF orientation value does to the stored pixels (1 is "as stored").
_ORIENTATIONS = {2: "mirrored left to right", 3: "rotated 180 degrees", 4: "mirrored top to bottom",
                 5: "transposed (mirrored and rotated 90 degrees)", 6: "rotated 90 degrees clockwise",
                 7: "transversed (mirrored and rotated 90 degrees)", 8: "rotated 90 degrees counter-clockwise"}


class ImageReadError(ValueError):
    """A file that is missing, not an image, or an image Pillow cannot decode."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files directly in folder, sorted by name (hidden files skipped)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))


@dataclass(frozen=True)
class ImageFile:
    """An image file read for MPRNet (read_image_file).

    image: float32 (3, H, W) RGB in [0, 1], EXIF orientation applied.
    note: how the file was converted to that tensor, None for 8-bit RGB stored upright.
    mode: the mode in OUTPUT_MODES that keeps the file's kind when a result is written back
        (write_png(path, result, mode=...)): "L" or "I;16" for grayscale files, else "RGB".
    output_note: what such a written-back result has lost or changed against the file (alpha
        dropped, palette converted, orientation applied...), None when nothing (8-bit RGB, or
        grayscale in and grayscale out).
    """

    image: torch.Tensor
    note: Optional[str]
    mode: str
    output_note: Optional[str]


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=2)


#: mode -> (note on reading, mode to write back, note on writing back); RGB needs none.
_MODES = {
    "L": ("grayscale: converted to RGB", "L", None),
    "LA": ("grayscale with alpha: alpha dropped, converted to RGB", "L", "grayscale with alpha: alpha dropped"),
    "1": ("1-bit: converted to RGB", "L", "1-bit: written as 8-bit grayscale"),
    "RGBA": ("RGBA: alpha dropped", "RGB", "RGBA: alpha dropped"),
    "P": ("palette image: converted to RGB", "RGB", "palette image: written as RGB"),
    "PA": ("palette image with alpha: alpha dropped, converted to RGB", "RGB",
           "palette image with alpha: alpha dropped, written as RGB"),
    "CMYK": ("CMYK: converted to RGB", "RGB", "CMYK: written as RGB"),
}


def _to_rgb_array(img, fmt: str | None = None) -> tuple[np.ndarray, str | None, str, str | None]:
    """(H, W, 3) float32 array in [0, 1], a note on any conversion made, the mode to write a
    result back in and the note for that. fmt is the file's format (img.format), which says how
    to scale mode "I"."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale (PNG)
        a = np.asarray(img).astype(np.float32) / 65535.0
        return _gray_to_rgb(a), "16-bit grayscale: scaled to [0, 1] and converted to RGB", "I;16", None
    if mode == "I":
        # 32-bit integer grayscale. Older Pillows open 16-bit grayscale PNGs like this, and those
        # hold 16-bit values whatever their maximum; other formats are read as 16-bit when any
        # value exceeds 255 and as 8-bit otherwise (a guess: the file does not say).
        a = np.asarray(img).astype(np.float32)
        sixteen = fmt == "PNG" or a.max(initial=0) > 255
        bits = 16 if sixteen else 8
        return (_gray_to_rgb(a / (65535.0 if sixteen else 255.0)), "integer grayscale: converted to RGB",
                "I;16" if sixteen else "L", f"integer grayscale: written as {bits}-bit grayscale")
    if mode == "F":
        return (_gray_to_rgb(np.asarray(img).astype(np.float32)),
                "float grayscale: clipped to [0, 1], converted to RGB",
                "I;16", "float grayscale: clipped to [0, 1], written as 16-bit grayscale")
    if mode == "RGB":
        note, out_mode, out_note = None, "RGB", None
    else:
        note, out_mode, out_note = _MODES.get(
            mode, (f"mode {mode}: converted to RGB", "RGB", f"mode {mode}: written as RGB"))
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).astype(np.float32) / 255.0, note, out_mode, out_note


def _join(*notes) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _orientation(img) -> int:
    """The EXIF orientation tag (1..8), 1 when there is none or it is not a valid value."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: take the pixels as stored
        return 1
    return value if value in _ORIENTATIONS else 1


def read_image_file(path) -> ImageFile:
    """The file as an ImageFile (its tensor, the notes and the mode to write results back in).
    Raises ImageReadError naming the file when it is missing or cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            sixteen_bit_colour = _sixteen_bit_colour(img)  # the decoder's tiles go away on load()
            fmt = img.format
            img.load()
            orientation = _orientation(img)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
            array, note, mode, out_note = _to_rgb_array(img, fmt)
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    reduced = "16-bit colour: reduced to 8 bits per channel" if sixteen_bit_colour else None
    turned = f"EXIF orientation {orientation} applied: {_ORIENTATIONS[orientation]}" if orientation != 1 else None
    image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    return ImageFile(image, _join(reduced, note, turned), mode, _join(reduced, out_note, turned))


def read_image(path) -> tuple[torch.Tensor, str | None]:
    """(image, note): a float32 (3, H, W) tensor in [0, 1] and a note saying how the file was converted
    to RGB (None when it was 8-bit RGB already). Raises ImageReadError naming the file otherwise."""
    f = read_image_file(path)
    return f.image, f.note


def image_size(path) -> tuple[int, int]:
    """(height, width) of the tensor read_image would give (EXIF orientation applied), from the
    file's header alone. Raises ImageReadError naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            w, h = img.size
            if _orientation(img) in (5, 6, 7, 8):  # these turn the picture by 90 degrees
                w, h = h, w
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return h, w


def _sixteen_bit_colour(img) -> bool:
    """Whether Pillow is about to decode 16-bit RGB(A) samples into its 8-bit RGB(A) mode (PNG
    raw modes "RGB;16B", "RGBA;16B"), a loss of precision worth a note."""
    tiles = getattr(img, "tile", None) or []
    return img.mode in ("RGB", "RGBA") and any(len(t) > 3 and ";16" in str(t[3]) for t in tiles)


def _check_image(image) -> None:
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"image: expected a (3, H, W) tensor, got a {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected a (3, H, W) tensor, got shape {tuple(image.shape)}")


def _check_mode(mode) -> None:
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode: expected one of {', '.join(map(repr, OUTPUT_MODES))}, got {mode!r}")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, clamped and rounded to nearest."""
    _check_image(image)
    a = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return a.permute(1, 2, 0).cpu().numpy()


def _levels(image: torch.Tensor, mode: str) -> torch.Tensor:
    """The integer sample values a file of `mode` stores for image: (3, H, W) for RGB, (H, W)
    for the grayscale modes (the mean of the channels), as float32 integers."""
    image = image.detach().float().clamp(0, 1)
    if mode != "RGB":
        image = image.mean(0)
    return image.mul(_OUTPUT_MAX[mode]).round()


def as_written(image: torch.Tensor, mode: str = "RGB") -> torch.Tensor:
    """What reading back write_png(path, image, mode=mode) gives, without the file: image
    (3, H, W) in [0, 1] rounded to the file's levels (grayscale: the channels' mean, repeated
    to 3 channels), float32 on image's device. Scoring this scores the saved file."""
    _check_image(image)
    _check_mode(mode)
    levels = _levels(image, mode) / _OUTPUT_MAX[mode]
    return levels if mode == "RGB" else levels.expand(3, -1, -1).clone()


def write_png(path, image: torch.Tensor, mode: str = "RGB") -> None:
    """Writes a (3, H, W) float tensor in [0, 1] as a PNG (parents created): 8-bit RGB, or with
    mode "L" / "I;16" 8-bit / 16-bit grayscale of the channels' mean (ImageFile.mode keeps the
    input's kind)."""
    from PIL import Image

    _check_image(image)
    _check_mode(mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        array = to_uint8(image)
    else:
        array = _levels(image, mode).cpu().numpy().astype(np.uint8 if mode == "L" else np.uint16)
    Image.fromarray(array).save(path)


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
