"""Image hygiene: any mode opens as RGB, truncated JPEGs load, non-images are
refused with the module's own error, and timestamps come from both name styles."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from opssat.data import images, sample

REAL = sample.REAL_SAMPLE_DIR


def _pattern(size: tuple[int, int] = (30, 20)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("name", "mode"),
    [("rgba.png", "RGBA"), ("la.png", "LA"), ("gray.png", "L"), ("gray.bmp", "L"),
     ("bits.png", "1"), ("palette.png", "P"), ("cmyk.jpg", "CMYK"), ("rgb.bmp", "RGB")],
)
def test_open_rgb_converts_every_mode(tmp_path: Path, name: str, mode: str) -> None:
    path = tmp_path / name
    _pattern().convert(mode).save(path)
    with Image.open(path) as raw:
        assert raw.mode == mode
    img = images.open_rgb(path)
    assert img.mode == "RGB"
    assert img.size == (30, 20)


def test_transparent_pixels_become_black_space(tmp_path: Path) -> None:
    pixels = np.zeros((4, 6, 4), np.uint8)
    pixels[..., :3] = 200
    pixels[:, :3, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(images.open_rgb(tmp_path / "a.png"))
    assert (out[:, :3] == 200).all()
    assert (out[:, 3:] == 0).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = _pattern().convert("P")
    img.save(tmp_path / "p.png", transparency=int(np.asarray(img)[0, 0]))
    out = images.open_rgb(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (0, 0, 0)


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    wide = np.array([[0, 256 * 100, 65535]], np.uint16)
    Image.fromarray(wide).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")
    out = np.asarray(images.open_rgb(tmp_path / "deep.png"))
    assert out.shape == (1, 3, 3)
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_truncated_jpeg_loads(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    sample.make_thumbnail("earth", np.random.default_rng(1), size=(96, 90)).save(
        buffer, format="JPEG", quality=90)
    whole = buffer.getvalue()
    cut = sample.truncate_jpeg(whole)
    assert len(cut) < len(whole) and not cut.endswith(b"\xff\xd9")
    path = tmp_path / "img_msec_1608588759000_2_thumbnail.jpeg"
    path.write_bytes(cut)
    img = images.open_rgb(path)
    assert img.mode == "RGB" and img.size == (96, 90)
    assert images.readable(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("notes.jpeg", b"downlink notes, not an image\n"), ("empty.png", b""),
     ("header.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 20)],
)
def test_non_image_is_unreadable(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert not images.readable(path)
    with pytest.raises(images.UnreadableImageError, match=name):
        images.open_rgb(path)


def test_image_with_other_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "picture.txt"
    _pattern().save(path, format="PNG")
    assert not images.readable(path)


def test_readable_never_raises_on_corrupt_files(tmp_path: Path) -> None:
    """Damaged files of each format: readable() answers, it never crashes."""
    rng = np.random.default_rng(3)
    originals = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("BMP", ".bmp")):
        buffer = io.BytesIO()
        _pattern().save(buffer, format=fmt)
        originals[suffix] = buffer.getvalue()
    answers = set()
    for suffix, data in originals.items():
        for i in range(40):
            damaged = bytearray(data)
            if i % 2:
                damaged = damaged[: int(rng.integers(0, len(damaged)))]
            else:
                for at in rng.integers(0, len(damaged), 8):
                    damaged[at] = int(rng.integers(0, 256))
            path = tmp_path / f"damaged{suffix}"
            path.write_bytes(bytes(damaged))
            answers.add(images.readable(path))
    assert answers == {True, False}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("img_msec_1608588759000_2_thumbnail.jpeg", 1608588759000),
        ("img_msec_1608588759000.png", 1608588759000),
        ("1608603723961.jpg", 1608603723961),
        ("pass_1608603723961_raw.jpeg", 1608603723961),
        ("16086037239612.jpg", None),  # 14 digits: not a millisecond timestamp
        ("photo_42.jpg", None),
        ("notes.jpeg", None),
    ],
)
def test_timestamp_ms(name: str, expected: int | None) -> None:
    assert images.timestamp_ms(name) == expected
    assert images.timestamp_ms(Path("some/folder") / name) == expected


def test_real_thumbnails_open() -> None:
    with (REAL / "MANIFEST.csv").open(newline="") as handle:
        sizes = {row["filename"]: (int(row["width"]), int(row["height"]))
                 for row in csv.DictReader(handle)}
    files = sorted(REAL.glob("*/*.jpeg"))
    assert len(files) == len(sizes)
    for path in files:
        img = images.open_rgb(path)
        assert img.mode == "RGB" and img.size == sizes[path.name]
        assert images.timestamp_ms(path) is not None
