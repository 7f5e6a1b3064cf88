"""SmartCam's JPEG round trip between its resizer and its classifier, steps 3 and 4 of
the on-board chain (``opssat.onboard.chain`` runs the whole chain):

3. ``stb_write_jpeg``: the resizer's ``stbi_write_jpg`` at quality 90 (stb_image_write
   1.15), as quantised DCT coefficients: the Huffman coding is lossless, so no file is
   written.
4. ``ujpeg_decode``: the classifier's uJPEG ``ujGetImage`` (packed RGB).

Written from the algorithms of the C sources in ``../shared/onboard_oracle``; float
steps use float32 in C's order of operations so that the results match bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

F32 = np.float32


def colour_tables(red: np.ndarray, green: np.ndarray, blue: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return red.astype(np.int16), green.astype(np.int16), blue.astype(np.int16)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray,
                 tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    red, green, blue = tables
    y = y.astype(np.int16)
    rgb = np.stack([y + red[cr], y + green[cb, cr], y + blue[cb]], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


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
    return ycbcr_to_rgb(y, *chroma, _uj_colour_tables())


@lru_cache(maxsize=1)
def _uj_colour_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uJPEG's YCbCr to RGB, ((Y << 8) + t + 128) >> 8 = Y + (t + 128) >> 8, as tables."""
    c = np.arange(256, dtype=np.int64) - 128
    return colour_tables((359 * c + 128) >> 8,
                          (-88 * c[:, None] - 183 * c[None, :] + 128) >> 8,
                          (454 * c + 128) >> 8)
