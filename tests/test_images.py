"""mprnet_kernels.images: Pillow files <-> (3, H, W) float tensors, conversions reported."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from mprnet_kernels.images import (ImageReadError, as_written, image_size, list_images, read_image, read_image_file,
                                   to_uint8, write_png)


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


# --------------------------------------------------------------------------- EXIF orientation

#: What a viewer does to the stored pixels for each EXIF orientation (the EXIF 2.3 definitions).
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse: across the other diagonal
    8: lambda a: np.rot90(a, k=1),
}


def with_orientation(path, array, orientation, **save):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(array).save(path, exif=exif.tobytes(), **save)


@pytest.mark.parametrize("orientation", sorted(ORIENT))
def test_exif_orientation_is_applied(tmp_path, rgb, orientation):
    with_orientation(tmp_path / "o.png", rgb, orientation)  # PNG: lossless, so pixels compare exactly
    f = read_image_file(tmp_path / "o.png")
    upright = np.ascontiguousarray(ORIENT[orientation](rgb))
    assert torch.equal(f.image, torch.from_numpy(upright).permute(2, 0, 1).float() / 255)
    assert image_size(tmp_path / "o.png") == upright.shape[:2] == tuple(f.image.shape[1:])
    if orientation == 1:
        assert f.note is None and f.output_note is None
    else:
        assert f.note == f.output_note and f.note.startswith(f"EXIF orientation {orientation} applied: ")


def test_exif_rotated_jpeg_reads_upright(tmp_path, rgb):
    with_orientation(tmp_path / "phone.jpg", rgb, 8, quality=95)
    image, note = read_image(tmp_path / "phone.jpg")
    assert image.shape == (3, 11, 7) and image_size(tmp_path / "phone.jpg") == (11, 7)
    assert note == "EXIF orientation 8 applied: rotated 90 degrees counter-clockwise"
    with Image.open(tmp_path / "phone.jpg") as stored:
        decoded = np.asarray(stored.convert("RGB"))
    assert torch.equal(image, torch.from_numpy(np.rot90(decoded).copy()).permute(2, 0, 1).float() / 255)


def test_exif_note_follows_the_mode_notes(tmp_path, rgb):
    with_orientation(tmp_path / "g.png", rgb[..., 0], 3)
    f = read_image_file(tmp_path / "g.png")
    assert f.note == "grayscale: converted to RGB; EXIF orientation 3 applied: rotated 180 degrees"
    assert f.mode == "L" and f.output_note == "EXIF orientation 3 applied: rotated 180 degrees"


# --------------------------------------------------------------------------- modes written back


@pytest.mark.parametrize("name, make, mode, output_note", [
    ("rgb", lambda a: Image.fromarray(a), "RGB", None),
    ("l", lambda a: Image.fromarray(a[..., 0]), "L", None),
    ("la", lambda a: Image.fromarray(a[..., 0]).convert("LA"), "L", "grayscale with alpha: alpha dropped"),
    ("one", lambda a: Image.fromarray(a[..., 0] > 127), "L", "1-bit: written as 8-bit grayscale"),
    ("g16", lambda a: Image.fromarray(a[..., 0].astype(np.uint16) * 257), "I;16", None),
    ("rgba", lambda a: Image.fromarray(np.concatenate([a, a[..., :1]], axis=2), "RGBA"), "RGB", "RGBA: alpha dropped"),
    ("p", lambda a: Image.fromarray(a).convert("P"), "RGB", "palette image: written as RGB"),
])
def test_each_mode_says_how_to_write_it_back(tmp_path, rgb, name, make, mode, output_note):
    make(rgb).save(tmp_path / f"{name}.png")
    f = read_image_file(tmp_path / f"{name}.png")
    assert (f.mode, f.output_note) == (mode, output_note)
    image, note = read_image(tmp_path / f"{name}.png")
    assert torch.equal(f.image, image) and f.note == note


@pytest.mark.parametrize("mode, pil_mode, dtype, scale", [("RGB", "RGB", np.uint8, 255), ("L", "L", np.uint8, 255),
                                                          ("I;16", "I;16", np.uint16, 65535)])
def test_write_png_modes_and_as_written_agree(tmp_path, mode, pil_mode, dtype, scale):
    image = torch.rand(3, 9, 13, generator=torch.Generator().manual_seed(3))
    image[:, 0, 0] = torch.tensor([-1.0, 0.5, 2.0])  # out of range: clamped first
    write_png(tmp_path / "w.png", image, mode=mode)
    with Image.open(tmp_path / "w.png") as img:
        assert img.mode == pil_mode
        stored = np.asarray(img)
    assert stored.dtype == dtype
    clamped = image.clamp(0, 1)
    expected = clamped if mode == "RGB" else clamped.mean(0)  # grayscale: the channels' mean
    assert np.array_equal(stored.astype(np.int64), expected.mul(scale).round().numpy().astype(np.int64)
                          .transpose(*((1, 2, 0) if mode == "RGB" else (0, 1))))
    back = read_image(tmp_path / "w.png")[0]
    assert torch.equal(as_written(image, mode), back)  # scoring as_written scores the file


def test_grayscale_round_trip_is_exact(tmp_path, rgb):
    gray = rgb[..., 1]
    Image.fromarray(gray).save(tmp_path / "g.png")
    f = read_image_file(tmp_path / "g.png")
    write_png(tmp_path / "again.png", f.image, mode=f.mode)
    with Image.open(tmp_path / "again.png") as img:
        assert img.mode == "L" and np.array_equal(np.asarray(img), gray)
    values = np.array([[0, 1, 255, 256], [32768, 40000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    f = read_image_file(tmp_path / "g16.png")
    write_png(tmp_path / "again16.png", f.image, mode=f.mode)
    with Image.open(tmp_path / "again16.png") as img:
        assert img.mode == "I;16" and np.array_equal(np.asarray(img), values)


def test_write_png_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match="^mode: expected one of 'RGB', 'L', 'I;16', got 'RGBA'"):
        write_png(tmp_path / "x.png", torch.zeros(3, 4, 4), mode="RGBA")
    with pytest.raises(ValueError, match="^mode: expected one of"):
        as_written(torch.zeros(3, 4, 4), "P")


def test_image_size_reads_headers_and_names_bad_files(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.png") == (7, 11)
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(ImageReadError, match="t.png: not a readable image"):
        image_size(tmp_path / "t.png")
    with pytest.raises(ImageReadError, match="nope.png: no such file"):
        image_size(tmp_path / "nope.png")
