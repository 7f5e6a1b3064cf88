"""Opening images and turning them into model input: the one home of the image
file extensions, the timestamp pattern and ``load_pixels``, which prepares an image
for training, evaluation and the on-board emulation alike as a ``Preprocessing``
(declared in ``opssat.data.preprocess``) says."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageFile

from opssat.core.errors import UnreadableImageError, UserError, warn
from opssat.data.preprocess import (  # noqa: F401  (the names callers know from here)
    GROUND,
    ONBOARD_CHANNEL_CHOICES,
    PREPROCESS_MODES,
    Preprocessing,
    check_preprocessing,
    preprocessing_from_args,
)
from opssat.onboard import chain, smartcam

# OPS-SAT downlinks truncated JPEGs; decode what arrived instead of failing.
ImageFile.LOAD_TRUNCATED_IMAGES = True

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

T = TypeVar("T")

#: ``img_msec_<ms>_...`` or a bare 13-digit millisecond timestamp.
_TIMESTAMP = re.compile(r"img_msec_(\d+)|(?<!\d)(\d{13})(?!\d)")



def timestamp_ms(path: str | Path) -> int | None:
    """Acquisition time in milliseconds from an OPS-SAT file name, or None."""
    match = _TIMESTAMP.search(Path(path).name)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def shown(path: str | Path) -> str:
    """``path`` as text whatever its bytes: a name that is not UTF-8 shows them as
    ``\\xff`` escapes instead of failing to print."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def utf8_name(path: str | Path) -> bool:
    """True when the name is valid UTF-8, so it can go into the CSVs and logs."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_utf8_name(path: str | Path) -> None:
    """UserError for a file whose name is not UTF-8 (the toolkit's policy: such files
    are refused or skipped, never half-processed)."""
    if not utf8_name(path):
        raise UserError(f"{shown(path)}: the file name is not valid UTF-8; rename it "
                        "(e.g. with convmv), then run again")


def _usable(paths: list[Path]) -> list[Path]:
    """``paths`` without those whose names are not UTF-8, each named in a warning."""
    for path in paths:
        if not utf8_name(path):
            warn(f"skipped {shown(path)}: its name is not valid UTF-8; rename it to use it")
    return [path for path in paths if utf8_name(path)]


def list_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files directly in ``folder``, sorted by name; a name that
    is not UTF-8, or a symbolic link that leads nowhere, is skipped with a warning,
    before anything is written."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    for path in entries:
        if path.is_symlink() and not path.exists():
            warn(f"skipped {path}: a symbolic link to nothing (its target is missing, or "
                 "it loops); fix or remove the link")
    return _usable([p for p in entries if p.is_file()])


def label_folders(folder: Path) -> list[Path]:
    """The ``<label>/`` sub-folders of ``folder``, sorted by name (the label order);
    a name that is not UTF-8 is skipped with a warning."""
    return _usable(sorted(p for p in folder.iterdir()
                          if p.is_dir() and not p.name.startswith(".")))


def open_rgb(path: str | Path, target: tuple[int, int] | None = None) -> Image.Image:
    """Decode any supported image (any mode, truncated JPEG included) as RGB.

    ``target`` (height, width): the size it will be resized to; a JPEG many times
    larger (chain.DRAFT_FACTOR) is decoded at a reduced scale to bound memory.
    """
    return _decoded_rgb(path, target, Image.Image.copy)


def _decoded_rgb(path: str | Path, target: tuple[int, int] | None,
                 finish: Callable[[Image.Image], T]) -> T:
    """``finish`` applied to the decoded RGB image while its file is open (an RGB JPEG
    is then used without a copy)."""
    path = Path(path)
    if not is_image_name(path):
        raise UnreadableImageError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    try:
        with chain.opened(path) as img:
            factor = chain.reduction(img.size, target)
            if factor > 1 and img.format == "JPEG":
                img.draft("RGB", (-(-img.size[0] // factor), -(-img.size[1] // factor)))
            img.load()
            if img.mode == "RGB":
                return finish(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale: scale to 8 bits rather than clipping at 255.
                wide = np.asarray(img, dtype=np.uint32)
                shift = 8 if wide.max(initial=0) > 255 else 0
                img = Image.fromarray((wide >> shift).astype(np.uint8), mode="L")
            elif img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                # Flatten transparency onto black, the colour of space.
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, rgba)
            return finish(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"{path}: cannot decode image ({err})") from err


def has_image_header(path: str | Path) -> bool:
    """A cheap check that reads only the header; ``readable`` decodes the whole file."""
    if not is_image_name(path):
        return False
    try:
        with chain.opened(path):
            return True
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def readable(path: str | Path) -> bool:
    """True if ``open_rgb`` can decode the file."""
    try:
        open_rgb(path)
    except UnreadableImageError:
        return False
    return True


# --- preprocessing (declared in opssat.data.preprocess) ----------------------


def load_pixels(path: str | Path, preprocessing: Preprocessing = GROUND) -> np.ndarray:
    """Decode ``path`` into a (height, width, 3) uint8 array as the model sees it.

    ``ground``: RGB, Pillow bilinear resize, as ground tools always did.
    ``onboard``: SmartCam's own chain (opssat.onboard.chain): stb's load with
    ``onboard_channels``, its resize and JPEG encoder at quality 90, uJPEG's decode.
    """
    size = preprocessing.size
    if preprocessing.mode == "ground":
        height, width = size
        return _decoded_rgb(path, size, lambda img: np.asarray(
            img.resize((width, height), Image.Resampling.BILINEAR)))
    if not is_image_name(path):
        raise UnreadableImageError(f"{path}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    try:
        return chain.onboard_pixels(path, size, preprocessing.onboard_channels,
                                      smartcam.ONBOARD_JPEG_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"{path}: cannot decode image ({err})") from err


def to_model_input(
    pixels: np.ndarray,
    mean: float = smartcam.INPUT_MEAN,
    std: float = smartcam.INPUT_STD,
) -> np.ndarray:
    """(pixel - mean) / std as float32: SmartCam's input scaling."""
    return (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)


def load_input(path: str | Path, preprocessing: Preprocessing = GROUND) -> np.ndarray:
    """A file as one float32 (height, width, 3) model input."""
    return to_model_input(load_pixels(path, preprocessing), preprocessing.mean,
                          preprocessing.std)
