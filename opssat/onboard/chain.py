"""SmartCam's on-board image chain in NumPy, one function per step, each named after
the program it reproduces:

1. ``stb_load``: the resizer's ``stbi_load(path, ..., channels)`` (stb_image 2.26).
2. ``stb_resize``: its ``stbir_resize_uint8`` (stb_image_resize 0.96, defaults).
3. ``stb_write_jpeg`` and 4. ``ujpeg_decode``: the JPEG round trip from the resizer to
   the classifier, in ``opssat.onboard.jpeg``.

``onboard_pixels`` runs them in order. Written from the algorithms of the C sources
in ``../shared/onboard_oracle`` (the test oracle); float steps use float32 in C's
order of operations so that the results match bit for bit. Where they cannot, the
docstring says why. This module must not import ``opssat.data.images`` (which imports it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin

from opssat.core.errors import warn
from opssat.onboard.jpeg import (  # noqa: F401  (steps 3 and 4 re-exported: one chain, one module)
    F32,
    JpegCoefficients,
    colour_tables,
    stb_write_jpeg,
    ujpeg_decode,
    ycbcr_to_rgb,
)

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
    return colour_tables(red, green, blue)


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
    return ycbcr_to_rgb(luma, cb, cr, _stb_colour_tables())


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
        return ycbcr_to_rgb(ycc[..., 0], ycc[..., 1], ycc[..., 2], _stb_colour_tables())
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


# --- the chain ------------------------------------------------------------------------------


def onboard_pixels(source: str | Path | Image.Image, size: tuple[int, int], channels: int = 1,
                   quality: int = 90) -> np.ndarray:
    """(height, width, 3) uint8: what SmartCam's classifier reads for an image, i.e.
    ``resize -x W -y H -c channels -q quality`` then uJPEG's decode."""
    pixels = stb_load(source, channels, size)
    return ujpeg_decode(stb_write_jpeg(stb_resize(pixels, size), quality))
