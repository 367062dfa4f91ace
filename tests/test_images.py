"""mprnet_kernels.images: Pillow files <-> (3, H, W) float tensors, conversions reported."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mprnet_kernels.images import ImageReadError, list_images, read_image, to_uint8, write_png


def png16(path, array: np.ndarray) -> None:
    """Writes a 16-bit RGB or RGBA PNG by hand (Pillow cannot write one)."""
    h, w, c = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)


def test_rgb_round_trip_is_exact(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    image, note = read_image(tmp_path / "a.png")
    assert note is None
    assert image.dtype == torch.float32 and image.shape == (3, 7, 11)
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    write_png(tmp_path / "sub" / "dir" / "b.png", image)  # parents created
    with Image.open(tmp_path / "sub" / "dir" / "b.png") as out:
        assert out.mode == "RGB"
        assert np.array_equal(np.asarray(out), rgb)


def test_write_png_clamps_and_rounds(tmp_path):
    image = torch.tensor([-0.5, 0.0, 0.2 / 255, 0.6 / 255, 0.5, 1.0, 3.0]).view(1, 1, 7).expand(3, 1, 7)
    assert to_uint8(image)[0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]
    write_png(tmp_path / "c.png", image)
    assert read_image(tmp_path / "c.png")[0].mul(255).round()[0, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]


@pytest.mark.parametrize("shape", [(7, 11), (1, 7, 11), (4, 7, 11), (1, 3, 7, 11)])
def test_write_png_rejects_other_shapes(tmp_path, shape):
    with pytest.raises(ValueError, match=r"image: expected a \(3, H, W\)"):
        write_png(tmp_path / "x.png", torch.zeros(shape))


def _expect_gray(image, gray):
    assert image.shape == (3,) + gray.shape
    for c in range(3):
        assert torch.allclose(image[c], torch.from_numpy(gray).float(), atol=1e-6)


def test_grayscale_is_converted_with_a_note(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    image, note = read_image(tmp_path / "g.png")
    assert note == "grayscale: converted to RGB"
    _expect_gray(image, gray / 255)


def test_sixteen_bit_grayscale_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 255, 256], [32768, 40000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I")  # what this test is about: Pillow's 16-bit mode
    image, note = read_image(tmp_path / "g16.png")
    assert "16-bit grayscale" in note
    _expect_gray(image, values / 65535)


def test_rgba_drops_alpha(tmp_path, rgb):
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA").save(tmp_path / "a.png")
    image, note = read_image(tmp_path / "a.png")
    assert note == "RGBA: alpha dropped"
    assert torch.equal(image, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)


def test_palette_and_gray_alpha_and_one_bit(tmp_path, rgb):
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb[..., 0] > 127).save(tmp_path / "one.png")
    notes = {name: read_image(tmp_path / name)[1] for name in ("p.png", "la.png", "one.png")}
    assert "palette" in notes["p.png"]
    assert "grayscale with alpha" in notes["la.png"]
    assert notes["one.png"] is not None and "RGB" in notes["one.png"]
    one = read_image(tmp_path / "one.png")[0]
    assert set(one.unique().tolist()) <= {0.0, 1.0}


def test_sixteen_bit_colour_is_reduced_with_a_note(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    png16(tmp_path / "c16.png", values)
    image, note = read_image(tmp_path / "c16.png")
    assert note == "16-bit colour: reduced to 8 bits per channel"
    assert torch.equal(image, torch.from_numpy((values >> 8).astype(np.float32)).permute(2, 0, 1) / 255)
    png16(tmp_path / "c16a.png", np.concatenate([values, values[..., :1]], axis=2))
    assert read_image(tmp_path / "c16a.png")[1] == "16-bit colour: reduced to 8 bits per channel; RGBA: alpha dropped"


def test_jpeg_reads_without_note(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    image, note = read_image(tmp_path / "a.jpg")
    assert note is None and image.shape == (3, 7, 11)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")


def test_not_an_image_names_it(tmp_path):
    (tmp_path / "text.png").write_text("hello, not a picture")
    with pytest.raises(ImageReadError, match="text.png: not a readable image"):
        read_image(tmp_path / "text.png")


def test_truncated_png_names_it(tmp_path, rgb):
    Image.fromarray(np.tile(rgb, (8, 8, 1))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    assert issubclass(ImageReadError, ValueError)


def test_folder_is_not_an_image(tmp_path):
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageReadError, match="dir.png"):
        read_image(tmp_path / "dir.png")


def test_list_images_sorted_images_only(tmp_path, rgb):
    for name in ("b.png", "a.JPG", "c.tiff", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "sub.png" / "inner.png").write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png", "c.tiff"]


def test_decompression_bomb_is_a_read_error(tmp_path, rgb, monkeypatch):
    Image.fromarray(rgb).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 77 pixels: over twice the limit
    with pytest.raises(ImageReadError, match="big.png"):
        read_image(tmp_path / "big.png")
