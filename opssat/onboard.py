"""SmartCam's on-board image chain in NumPy, one function per step, each named after
the program it reproduces:

1. ``stb_load``: the resizer's ``stbi_load(path, ..., channels)`` (stb_image 2.26).
2. ``stb_resize``: its ``stbir_resize_uint8`` (stb_image_resize 0.96, defaults).
3. ``stb_write_jpeg``: its ``stbi_write_jpg`` at quality 90 (stb_image_write 1.15),
   as quantised DCT coefficients: the Huffman coding is lossless, so no file is written.
4. ``ujpeg_decode``: the classifier's uJPEG ``ujGetImage`` (packed RGB).

``onboard_pixels`` runs them in order. Written from the algorithms of the C sources
in ``../shared/onboard_oracle`` (the test oracle); float steps use float32 in C's
order of operations so that the results match bit for bit. Where they cannot, the
docstring says why. This module must not import ``opssat.images`` (which imports it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

from opssat.errors import warn

F32 = np.float32

#: Decode a JPEG at a reduced scale (Pillow's draft mode) or box-reduce another image
#: only when it is at least this many times the resize target on both axes.
DRAFT_FACTOR = 4


@contextmanager
def opened(path: str | Path, quiet: bool = False) -> Iterator[Image.Image]:
    """``Image.open`` that turns Pillow's DecompressionBombWarning (printed with its
    source line) into one ``warning:`` line of ours naming the file; ``quiet`` drops
    the warnings of a file opened a second time."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        img = Image.open(path)
    for item in caught:
        if quiet:
            continue
        if issubclass(item.category, Image.DecompressionBombWarning):
            width, height = img.size
            warn(f"{path}: {width}x{height} pixels is a very large image; it is decoded "
                 "at reduced size where it can be")
        else:
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
    with img:
        yield img


# --- 1. stbi_load ----------------------------------------------------------------------


def _stb_gray(rgb: np.ndarray) -> np.ndarray:
    """stb's integer luma, (77 R + 150 G + 29 B) >> 8."""
    rgb = rgb.astype(np.int32)
    return ((77 * rgb[..., 0] + 150 * rgb[..., 1] + 29 * rgb[..., 2]) >> 8).astype(np.uint8)


def _stb_fixed(x: float) -> int:
    return int(F32(x) * F32(4096) + F32(0.5)) << 8


def _colour_tables(red: np.ndarray, green: np.ndarray, blue: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return red.astype(np.int16), green.astype(np.int16), blue.astype(np.int16)


@lru_cache(maxsize=1)
def _stb_colour_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What stb's fixed-point YCbCr to RGB adds to Y: (Y << 20) + 2^19 + t >> 20 is
    exactly Y + (2^19 + t) >> 20, so each term is a table over Cr, (Cb, Cr) or Cb."""
    c = np.arange(256, dtype=np.int64) - 128
    half = 1 << 19
    red = (half + c * _stb_fixed(1.402)) >> 20
    green = (half + c[None, :] * -_stb_fixed(0.71414)
             + ((c[:, None] * -_stb_fixed(0.34414)) & ~0xFFFF)) >> 20
    blue = (half + c * _stb_fixed(1.772)) >> 20
    return _colour_tables(red, green, blue)


def _to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray,
            tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    red, green, blue = tables
    y = y.astype(np.int16)
    rgb = np.stack([y + red[cr], y + green[cb, cr], y + blue[cb]], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _stb_upsample_420(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """stb_image's 2x2 chroma upsampling (``resample_row_hv_2``): each output row mixes
    its nearest chroma row 3:1 with the next nearest, then each column likewise."""
    plane = plane.astype(np.int32)
    rows = np.arange(2 * plane.shape[0])
    near = rows // 2
    far = np.clip(np.where(rows % 2, near + 1, near - 1), 0, plane.shape[0] - 1)
    t = 3 * plane[near] + plane[far]
    out = np.empty((t.shape[0], 2 * t.shape[1]), np.int32)
    out[:, 0] = (t[:, 0] + 2) >> 2
    out[:, 1:-1:2] = (3 * t[:, :-1] + t[:, 1:] + 8) >> 4
    out[:, 2:-1:2] = (3 * t[:, 1:] + t[:, :-1] + 8) >> 4
    out[:, -1] = (t[:, -1] + 2) >> 2
    return out[:height, :width].astype(np.uint8)


def _stb_jpeg_colour(path: str | Path, luma: np.ndarray) -> np.ndarray | None:
    """stb's RGB for a colour JPEG given its luma plane, or None when its sampling is
    neither 4:4:4 nor 4:2:0. Decoded at half scale, libjpeg gives 4:2:0 chroma at its
    own resolution (an 8x8 IDCT per block, no upsampling), so stb's upsampling and
    colour conversion can be applied to the same samples stb has."""
    height, width = luma.shape
    with opened(path, quiet=True) as img:
        sampling = JpegImagePlugin.get_sampling(img)
        if sampling not in (0, 2) or min(height, width) < 4:
            return None
        img.draft("YCbCr", (width // 2, height // 2) if sampling == 2 else (width, height))
        chroma = np.asarray(img)
    cb, cr = chroma[..., 1], chroma[..., 2]
    if sampling == 2:
        if cb.shape != ((height + 1) // 2, (width + 1) // 2):
            return None
        cb, cr = (_stb_upsample_420(c, height, width) for c in (cb, cr))
    elif cb.shape != luma.shape:
        return None
    return _to_rgb(luma, cb, cr, _stb_colour_tables())


def reduction(image_size: tuple[int, int], target: tuple[int, int] | None) -> int:
    """The integer factor a huge image may be shrunk by before the chain (1: none)."""
    if target is None:
        return 1
    (width, height), (out_h, out_w) = image_size, target
    return max(1, min(width // (DRAFT_FACTOR * out_w), height // (DRAFT_FACTOR * out_h)))


def stb_load(source: str | Path | Image.Image, channels: int,
             target: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, channels) uint8 as ``stbi_load(path, &w, &h, &n, channels)`` returns it.

    A colour JPEG with one channel gives its own luma plane (stb decodes only Y);
    Pillow decodes straight to it (``draft("L")``), so only libjpeg's and stb's IDCT
    differ (1 level here and there). With three channels, the chroma planes are
    decoded at their own resolution too (a half-scale decode for 4:2:0) and stb's
    upsampling and fixed-point colour conversion applied; other samplings, or an
    already opened image, use libjpeg's upsampled chroma (a level or two off).
    Other inputs: stb's integer luma (77 R + 150 G + 29 B) >> 8 with alpha and
    palette transparency ignored, 16-bit samples >> 8.

    ``target`` (height, width): the resize that follows. An image at least
    ``DRAFT_FACTOR`` times larger on both axes is decoded at a reduced scale (JPEG
    draft mode, 1/2 to 1/8) or box-reduced first, which bounds memory and time for
    huge images; exact parity is moot there, as the resize averages dozens of pixels
    into each output anyway. Real thumbnails (614x583 to 224x224) are never reduced.
    """
    if not isinstance(source, Image.Image):
        with opened(source) as img:
            colour_jpeg = img.format == "JPEG" and img.mode == "RGB"
            if not (colour_jpeg and channels == 3 and reduction(img.size, target) == 1):
                return stb_load(img, channels, target)
            img.draft("L", img.size)
            luma = np.asarray(img)
        rgb = _stb_jpeg_colour(source, luma)
        if rgb is not None:
            return rgb
        with opened(source, quiet=True) as img:
            return stb_load(img, channels, target)
    img = source
    factor = reduction(img.size, target)
    if img.format == "JPEG" and img.mode in ("RGB", "L"):
        wanted = "L" if channels == 1 or img.mode == "L" else "YCbCr"
        img.draft(wanted, (-(-img.size[0] // factor), -(-img.size[1] // factor)))
        factor = 1
    img.load()
    if factor > 1:
        img = img.reduce(factor)
    if img.mode == "L":
        gray = np.asarray(img)
    elif img.mode == "LA":
        gray = np.asarray(img.getchannel("L"))
    elif img.mode.startswith("I;16") or img.mode == "I":
        gray = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
    elif img.mode == "YCbCr":
        ycc = np.asarray(img)
        return _to_rgb(ycc[..., 0], ycc[..., 1], ycc[..., 2], _stb_colour_tables())
    else:
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGBA"))[..., :3]
        return _stb_gray(rgb)[..., None] if channels == 1 else np.ascontiguousarray(rgb)
    return gray[..., None] if channels == 1 else np.repeat(gray[..., None], 3, axis=2)


# --- 2. stbir_resize_uint8 -------------------------------------------------------------


def _mitchell(x: np.ndarray) -> np.ndarray:
    """stb's Mitchell-Netravali cubic (B = C = 1/3), its default for downsampling."""
    x = np.abs(x)
    near = (F32(16) + x * x * (F32(21) * x - F32(36))) / F32(18)
    far = (F32(32) + x * (F32(-60) + x * (F32(36) - F32(7) * x))) / F32(18)
    return np.where(x < 1, near, np.where(x < 2, far, F32(0))).astype(F32)


def _catmull_rom(x: np.ndarray) -> np.ndarray:
    """stb's Catmull-Rom spline, its default for upsampling."""
    x = np.abs(x)
    near = F32(1) - x * x * (F32(2.5) - F32(1.5) * x)
    far = F32(2) - x * (F32(4) + x * (F32(0.5) * x - F32(2.5)))
    return np.where(x < 1, near, np.where(x < 2, far, F32(0))).astype(F32)


@lru_cache(maxsize=32)
def _resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(input index, weight) arrays of shape (n_out, taps) for one axis, as stb lays
    them out: taps in increasing input order, edge pixels clamped (a tap beyond the
    edge reads the edge pixel as a term of its own), float32 weights normalised as
    stb normalises them. Zero weights pad the short rows (adding 0.0 is exact)."""
    scale = F32(n_out) / F32(n_in)
    rows: list[list[tuple[int, np.float32]]] = [[] for _ in range(n_out)]
    if scale > 1:  # upsampling: per output pixel, Catmull-Rom, normalised per output
        radius = F32(2) * scale
        for out in range(n_out):
            centre = F32(out) + F32(0.5)
            first = int(np.floor(float((centre - radius) / scale) + 0.5))
            last = int(np.floor(float((centre + radius) / scale) - 0.5))
            in_centre = centre / scale
            taps = np.arange(first, last + 1)
            weights = _catmull_rom(in_centre - (taps.astype(F32) + F32(0.5)))
            while weights.size and weights[0] == 0:
                taps, weights = taps[1:], weights[1:]
            total = F32(0)
            for w in weights:
                total = F32(total + w)
            weights = weights * (F32(1) / total)
            nonzero = np.flatnonzero(weights)
            end = nonzero[-1] + 1 if nonzero.size else 0
            rows[out] = list(zip(taps[:end].tolist(), weights[:end], strict=True))
    else:  # downsampling: per input pixel (margin included), Mitchell, then per output
        radius = F32(2) / scale
        margin = int(np.ceil(float(F32(4) / scale))) // 2
        groups = []
        for contributor in range(n_in + 2 * margin):
            centre = F32(contributor - margin) + F32(0.5)
            first = int(np.floor(float((centre - radius) * scale) + 0.5))
            last = int(np.floor(float((centre + radius) * scale) - 0.5))
            out_centre = centre * scale
            outs = np.arange(first, last + 1)
            weights = _mitchell((outs.astype(F32) + F32(0.5)) - out_centre) * scale
            nonzero = np.flatnonzero(weights)
            end = nonzero[-1] + 1 if nonzero.size else 0
            groups.append((outs[:end], weights[:end]))
        totals = np.zeros(n_out, F32)
        for outs, weights in groups:  # stb sums each output's weights in input order
            keep = (outs >= 0) & (outs < n_out)
            totals[outs[keep]] += weights[keep]
        inverse = F32(1) / totals
        for contributor, (outs, weights) in enumerate(groups):
            for out, weight in zip(outs.tolist(), weights, strict=True):
                if 0 <= out < n_out and weight != 0:
                    rows[out].append((contributor - margin, F32(weight * inverse[out])))
    width = max(len(r) for r in rows)
    index = np.zeros((n_out, width), np.intp)
    weight = np.zeros((n_out, width), F32)
    for out, row in enumerate(rows):
        for tap, (pixel, w) in enumerate(row):
            index[out, tap] = min(max(pixel, 0), n_in - 1)
            weight[out, tap] = w
    return index, weight


def stb_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 to ``size`` = (height, width) as ``stbir_resize_uint8`` does:
    Mitchell when shrinking (Catmull-Rom when enlarging), clamped edges, linear space,
    each row resampled horizontally then the rows combined vertically, in float32
    with stb's summation order, rounded half up. Bit-exact with stb."""
    height, width = size
    cols, col_w = _resize_taps(pixels.shape[1], width)
    rows, row_w = _resize_taps(pixels.shape[0], height)
    in_h, in_w, channels = pixels.shape
    # (W, H * C): the columns a tap gathers are contiguous rows here.
    columns = pixels.transpose(1, 0, 2).reshape(in_w, -1).astype(F32, order="C") / F32(255)
    wide = _weighted_sum(columns, cols, col_w).reshape(width, in_h, channels)
    wide = np.ascontiguousarray(wide.transpose(1, 0, 2)).reshape(in_h, width * channels)
    out = _weighted_sum(wide, rows, row_w).reshape(height, width, channels)
    scaled = (np.clip(out, 0, 1) * F32(255)).astype(np.float64)
    return np.floor(scaled + 0.5).astype(np.uint8)


def _weighted_sum(data: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Sum over taps of data[index[:, tap]] * weight[:, tap] for 2-D ``data``, tap by tap
    in float32 (stb's order of additions)."""
    total = np.zeros((index.shape[0], data.shape[1]), F32)
    for tap in range(index.shape[1]):
        term = data[index[:, tap]]
        term *= weight[:, tap, None]
        total += term
    return total


# --- 3. stbi_write_jpg ------------------------------------------------------------------

_LUMA_QT = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
_CHROMA_QT = np.full((8, 8), 99)
_CHROMA_QT[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
#: The AAN DCT's output scale per frequency, times 2 sqrt(2), as stb_image_write has it.
_AAN = (np.array([1.0, 1.387039845, 1.306562965, 1.175875602, 1.0, 0.785694958,
                  0.541196100, 0.275899379], F32) * F32(2.828427125))


@dataclass(frozen=True)
class JpegCoefficients:
    """What ``stbi_write_jpg`` puts in its file, before the lossless Huffman coding:
    quantised coefficients in natural (row, column) order, shape (8, 8, blocks down,
    blocks across), and the quantisation tables (8, 8)."""

    width: int
    height: int
    luma: np.ndarray
    cb: np.ndarray | None  # None: all zero (a one-channel input)
    cr: np.ndarray | None
    luma_table: np.ndarray
    chroma_table: np.ndarray
    subsampled: bool  # 4:2:0 (quality <= 90) rather than 4:4:4


def _quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((qt * scale + 50) // 100, 1, 255) for qt in (_LUMA_QT, _CHROMA_QT))


def _aan_dct(d: list[np.ndarray]) -> list[np.ndarray]:
    """stb_image_write's float AAN DCT of 8 float32 arrays (one per position)."""
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    out0, out4 = tmp10 + tmp11, tmp10 - tmp11
    z1 = (tmp12 + tmp13) * F32(0.707106781)
    out2, out6 = tmp13 + z1, tmp13 - z1
    tmp10, tmp11, tmp12 = tmp4 + tmp5, tmp5 + tmp6, tmp6 + tmp7
    z5 = (tmp10 - tmp12) * F32(0.382683433)
    z2 = tmp10 * F32(0.541196100) + z5
    z4 = tmp12 * F32(1.306562965) + z5
    z3 = tmp11 * F32(0.707106781)
    z11, z13 = tmp7 + z3, tmp7 - z3
    return [out0, z11 + z4, out2, z13 - z2, out4, z13 + z2, out6, z11 - z4]


def _separable(transform, blocks: np.ndarray, dtype: type) -> np.ndarray:
    """Apply a 1-D 8-point ``transform`` to the rows, then the columns, of (8, 8, N)
    blocks (row, column, block): the rows pass first, as both C programs do."""
    rows = np.empty(blocks.shape, dtype)
    for index, values in enumerate(transform([blocks[:, k] for k in range(8)], False)):
        rows[:, index] = values
    out = np.empty(blocks.shape, dtype)
    for index, values in enumerate(transform([rows[k] for k in range(8)], True)):
        out[index] = values
    return out


def _to_blocks(plane: np.ndarray) -> np.ndarray:
    """(8 by, 8 bx) plane -> (8, 8, by, bx) blocks: row, column, then block position."""
    return plane.reshape(plane.shape[0] // 8, 8, plane.shape[1] // 8, 8).transpose(1, 3, 0, 2)


def _quantised_blocks(plane: np.ndarray, table: np.ndarray) -> np.ndarray:
    """float32 (8 by, 8 bx) plane -> (8, 8, by, bx) int32 quantised coefficients."""
    blocks = _to_blocks(plane)
    flat = np.ascontiguousarray(blocks).reshape(8, 8, -1)
    coefficients = _separable(lambda d, _: _aan_dct(d), flat, F32)
    divisor = (1 / (table.astype(F32) * _AAN[:, None] * _AAN[None, :])).astype(F32)
    v = coefficients * divisor[..., None]
    return np.where(v < 0, v - F32(0.5), v + F32(0.5)).astype(np.int32).reshape(blocks.shape)


@lru_cache(maxsize=1)
def _gray_luma_table() -> np.ndarray:
    """stb's Y - 128 for R = G = B = v, v = 0..255, in its float32 order of operations."""
    v = np.arange(256, dtype=F32)
    return F32(0.299) * v + F32(0.587) * v + F32(0.114) * v - F32(128)


def stb_write_jpeg(pixels: np.ndarray, quality: int = 90) -> JpegCoefficients:
    """The quantised coefficients ``stbi_write_jpg`` writes for (H, W, C) uint8 pixels.

    Bit-exact with stb: its float32 RGB to YCbCr, edge replication to whole 16x16
    (or 8x8) macroblocks, 2x2 chroma averaging at quality <= 90, float AAN DCT and
    round-half-away quantisation. A one-channel image is written as three components
    with R = G = B: its chroma is a few float32 ulps from zero and quantises to all
    zeros (|Cb| < 1e-4 per pixel, so every coefficient is far below half a step),
    hence ``cb = cr = None``.
    """
    height, width, channels = pixels.shape
    subsampled = quality <= 90
    mcu = 16 if subsampled else 8
    luma_table, chroma_table = _quant_tables(quality)
    pad = ((0, -height % mcu), (0, -width % mcu), (0, 0))
    padded = np.pad(pixels, pad, mode="edge")
    if channels < 3:
        y = _gray_luma_table()[padded[..., 0]]
        return JpegCoefficients(width, height, _quantised_blocks(y, luma_table), None, None,
                                luma_table, chroma_table, subsampled)
    r, g, b = (padded[..., c].astype(F32) for c in range(3))
    y = F32(0.299) * r + F32(0.587) * g + F32(0.114) * b - F32(128)
    cb = F32(-0.16874) * r - F32(0.33126) * g + F32(0.5) * b
    cr = F32(0.5) * r - F32(0.41869) * g - F32(0.08131) * b
    if subsampled:
        cb, cr = ((c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) * F32(0.25)
                  for c in (cb, cr))
    return JpegCoefficients(width, height, _quantised_blocks(y, luma_table),
                            _quantised_blocks(cb, chroma_table),
                            _quantised_blocks(cr, chroma_table),
                            luma_table, chroma_table, subsampled)


# --- 4. ujGetImage ------------------------------------------------------------------------

_W1, _W2, _W3, _W5, _W6, _W7 = 2841, 2676, 2408, 1609, 1108, 565


def _uj_idct_1d(b: list[np.ndarray], column: bool) -> list[np.ndarray]:
    """uJPEG's integer IDCT butterfly of 8 int32 arrays (its row or column pass; the
    passes' zero-AC shortcuts give the same values as the full formula)."""
    x0 = (b[0] << (8 if column else 11)) + (8192 if column else 128)
    x1 = b[4] << (8 if column else 11)
    x2, x3, x4, x5, x6, x7 = b[6], b[2], b[1], b[7], b[5], b[3]
    bias, shift = (4, 3) if column else (0, 0)
    x8 = _W7 * (x4 + x5) + bias
    x4 = (x8 + (_W1 - _W7) * x4) >> shift
    x5 = (x8 - (_W1 + _W7) * x5) >> shift
    x8 = _W3 * (x6 + x7) + bias
    x6 = (x8 - (_W3 - _W5) * x6) >> shift
    x7 = (x8 - (_W3 + _W5) * x7) >> shift
    x8 = x0 + x1
    x0 = x0 - x1
    x1 = _W6 * (x3 + x2) + bias
    x2 = (x1 - (_W2 + _W6) * x2) >> shift
    x3 = (x1 + (_W2 - _W6) * x3) >> shift
    x1 = x4 + x6
    x4 = x4 - x6
    x6 = x5 + x7
    x5 = x5 - x7
    x7 = x8 + x3
    x8 = x8 - x3
    x3 = x0 + x2
    x0 = x0 - x2
    x2 = (181 * (x4 + x5) + 128) >> 8
    x4 = (181 * (x4 - x5) + 128) >> 8
    out = [x7 + x1, x3 + x2, x0 + x4, x8 + x6, x8 - x6, x0 - x4, x3 - x2, x7 - x1]
    if column:
        return [np.clip((v >> 14) + 128, 0, 255) for v in out]
    return [v >> 8 for v in out]


def _uj_plane(coefficients: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Dequantise and inverse-transform (8, 8, by, bx) blocks into a plane."""
    _, _, by, bx = coefficients.shape
    blocks = (coefficients * table.astype(np.int32)[..., None, None]).reshape(8, 8, -1)
    pixels = _separable(_uj_idct_1d, blocks, np.int32).reshape(8, 8, by, bx)
    return pixels.transpose(2, 0, 3, 1).reshape(by * 8, bx * 8)


def _cf(x: np.ndarray) -> np.ndarray:
    return np.clip((x + 64) >> 7, 0, 255)


def _uj_upsample_h(plane: np.ndarray, width: int) -> np.ndarray:
    """uJPEG's centred 2x horizontal chroma filter over the first ``width`` samples.
    Its right edge reads the last columns of the whole block row (the stride), not of
    the image, so those are passed in ``plane`` as uJPEG has them."""
    lin, end = plane[:, :width], plane[:, ::-1][:, :3]  # end: stride-1, stride-2, stride-3
    a, b, c, d = (lin[:, k:width - 3 + k] for k in range(4))
    middle = np.empty((plane.shape[0], 2 * (width - 3)), np.int32)
    middle[:, 0::2] = _cf(-9 * a + 111 * b + 29 * c - 3 * d)
    middle[:, 1::2] = _cf(-3 * a + 29 * b + 111 * c - 9 * d)
    return np.concatenate([
        _cf(139 * lin[:, :1] - 11 * lin[:, 1:2]),
        _cf(104 * lin[:, :1] + 27 * lin[:, 1:2] - 3 * lin[:, 2:3]),
        _cf(28 * lin[:, :1] + 109 * lin[:, 1:2] - 9 * lin[:, 2:3]),
        middle,
        _cf(28 * end[:, :1] + 109 * end[:, 1:2] - 9 * end[:, 2:3]),
        _cf(104 * end[:, :1] + 27 * end[:, 1:2] - 3 * end[:, 2:3]),
        _cf(139 * end[:, :1] - 11 * end[:, 1:2]),
    ], axis=1)


def _uj_upsample_v(plane: np.ndarray, height: int) -> np.ndarray:
    """uJPEG's centred 2x vertical chroma filter over the first ``height`` rows."""
    return _uj_upsample_h(plane[:height].T, height).T


def ujpeg_decode(jpeg: JpegCoefficients) -> np.ndarray:
    """(H, W, 3) uint8 as uJPEG's ``ujGetImage`` decodes stb's file: integer IDCT with
    its rounding and clamping, centred chroma upsampling (the JFIF file has no Exif
    co-siting tag), fixed-point YCbCr to RGB. Bit-exact with uJPEG.

    All-zero chroma decodes to 128 everywhere, which the filters keep at 128 and the
    conversion turns into R = G = B = Y; that case skips the chroma work.
    """
    luma = _uj_plane(jpeg.luma, jpeg.luma_table)
    height, width = jpeg.height, jpeg.width
    y = luma[:height, :width]
    if jpeg.cb is None:
        return np.repeat(y.astype(np.uint8)[..., None], 3, axis=2)
    chroma = []
    for coefficients in (jpeg.cb, jpeg.cr):
        plane = _uj_plane(coefficients, jpeg.chroma_table)
        if jpeg.subsampled:
            c_width, c_height = (width + 1) // 2, (height + 1) // 2
            plane = _uj_upsample_h(plane[:c_height], c_width)
            plane = _uj_upsample_v(plane, c_height)
        chroma.append(plane[:height, :width].astype(np.uint8))
    return _to_rgb(y, *chroma, _uj_colour_tables())


@lru_cache(maxsize=1)
def _uj_colour_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uJPEG's YCbCr to RGB, ((Y << 8) + t + 128) >> 8 = Y + (t + 128) >> 8, as tables."""
    c = np.arange(256, dtype=np.int64) - 128
    return _colour_tables((359 * c + 128) >> 8,
                          (-88 * c[:, None] - 183 * c[None, :] + 128) >> 8,
                          (454 * c + 128) >> 8)


# --- the chain ------------------------------------------------------------------------------


def onboard_pixels(source: str | Path | Image.Image, size: tuple[int, int], channels: int = 1,
                   quality: int = 90) -> np.ndarray:
    """(height, width, 3) uint8: what SmartCam's classifier reads for an image, i.e.
    ``resize -x W -y H -c channels -q quality`` then uJPEG's decode."""
    pixels = stb_load(source, channels, size)
    return ujpeg_decode(stb_write_jpeg(stb_resize(pixels, size), quality))
