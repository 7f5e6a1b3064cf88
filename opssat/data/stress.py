"""Exposure failures as they happen on board, applied to real thumbnails.

The bundled sample has few exposure failures, and those few sit in one or two
bursts: cross-validation on it cannot see whether a recipe recognises a
saturated or washed-out frame as ``bad``. The stress set fills that gap. Each
held-out real frame is degraded the way OPS-SAT's camera degrades frames,
in its 8-bit, gamma-encoded thumbnail (above the sensor's black level):

- ``saturated``: the whole frame over-exposed, up to pure white;
- ``washed_out``: exposure and stray light that climb across the frame;
- ``dark``: under-exposed, down to the black level (real black frames sit there);
- ``noisy``: sensor read noise, row stripes and hot pixels.

The frame is then written as a JPEG thumbnail, as the camera writes it, and
judged through SmartCam's own chain (``onboard`` preprocessing), as SmartCam
would judge it.

**The labelling rule** (``stressed_label``): a stressed frame becomes ``bad``
when any of these holds, each threshold measured on the bundled sample:

- a quarter or more of it is saturated (luma >= 250, ``SATURATED_SHARE``): every
  real ``earth`` and ``edge`` frame of the sample has 15 % or less, every real
  over-exposed ``bad`` one 28 % to 81 % (its labellers called a limb whose Earth
  side is blown out ``bad``, however clear the limb);
- its scene explains less than half of its luma variance as the classifier sees
  it (``MIN_SCENE_R2``: squared Pearson correlation between the original and the
  stressed luma, both box-resized to the model input size): more of the frame is
  stray light or noise than scene;
- it is darker than any real ``earth`` or ``edge`` frame of the sample (99th
  percentile of its luma below ``DARK_P99``: theirs are 37 and up, the dim ``bad``
  frames' 10 to 55).

Milder stresses keep the frame's label; a ``bad`` frame stays ``bad``.

**The bright-but-valid family** (``build_bright``): the opposite check. Real
``earth`` and ``edge`` frames made brighter (``brighter``: +0.7 to +3 stops) or more
contrasty (``contrasty``: contrast gain 1.3 to 2.5 around the frame's mean, a small
lift), as bright cloud decks are, each **keeping its label** because it stays below
the rule's ``bad`` line with room to spare: at most 15 % saturated
(``BRIGHT_MAX_SATURATED``, the most any real earth or edge frame of the sample has),
scene r² at least ``MIN_SCENE_R2``, not too dark. A drawn severity that crosses the
line is halved towards none until it does not; a frame already at the line gets no
copy. A recipe must call the failures ``bad`` and these frames not.

The same primitives make the ``bad`` top-up (``opssat.data.topup.top_up``) from
real frames, and its ``bright`` top-up.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from opssat.core import atomic
from opssat.data import images, sample
from opssat.onboard import smartcam

#: Display gamma of the thumbnails: one stop of exposure multiplies a value by 2**(1/GAMMA).
GAMMA = 2.2
#: The sensor's black level (luma): the sample's black ``bad`` frames sit at 10 to 12.
BLACK_LEVEL = 10.0
#: A stressed frame whose scene explains less than this share of its luma variance is ``bad``.
MIN_SCENE_R2 = 0.5
#: Below this luma standard deviation a frame has no scene to lose (black frames: 0.3).
MIN_SCENE_STD = 1.0
#: A frame with this share of saturated pixels (luma >= SATURATED) or more is ``bad``.
SATURATED_SHARE = 0.25
SATURATED = 250
#: Luma of an RGB pixel (BT.601): what every rule here measures.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: A frame whose 99th-percentile luma is below this is too dark to be ``earth`` or ``edge``:
#: every one of the 97 in the bundled sample reaches 37 or more.
DARK_P99 = 36.0
BAD = "bad"

#: Severity drawn per kind, uniformly over these ranges, wide enough to give mild and
#: destroyed frames: exposure in stops (saturated, washed_out: the most a part of the
#: frame gets; dark: negative), noise as the read noise's standard deviation in levels
#: (drawn log-uniformly).
SEVERITY = {
    "saturated": (1.0, 7.0),
    "washed_out": (2.0, 9.0),
    "dark": (-8.0, -1.0),
    "noisy": (3.0, 60.0),
}
KINDS = tuple(SEVERITY)


# --- the camera's failures, on (H, W, 3) float pixels ---------------------------------


def expose(pixels: np.ndarray, stops: np.ndarray | float, veil: np.ndarray | float = 0.0
           ) -> np.ndarray:
    """The same scene shot ``stops`` brighter (negative: darker) plus stray light ``veil``
    (levels), clipped as the 8-bit thumbnail clips; ``stops`` and ``veil`` may be
    (H, W) maps. The black level stays where it is."""
    gain = np.power(2.0, np.asarray(stops, np.float32) / GAMMA)
    signal = np.clip(pixels.astype(np.float32) - BLACK_LEVEL, 0, None)
    if np.ndim(gain) == 2:
        gain = gain[..., None]
    veil = np.asarray(veil, np.float32)
    if veil.ndim == 2:
        veil = veil[..., None]
    return np.clip(BLACK_LEVEL + signal * gain + veil, 0, 255)


def ramp(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) in [0, 1], rising across the frame in a random direction, at a random pace."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    across = (xs / width - 0.5) * np.cos(angle) + (ys / height - 0.5) * np.sin(angle)
    start = rng.uniform(-0.3, 0.3)
    return np.clip((across - start) / 0.7 + 0.5, 0, 1) ** rng.uniform(0.6, 1.6)


def add_noise(pixels: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Read noise of ``sigma`` levels, row stripes (half the time) and hot pixels."""
    height, width = pixels.shape[:2]
    noisy = pixels.astype(np.float32) + rng.normal(0, sigma, (height, width, 1)).astype(
        np.float32)
    if rng.random() < 0.5:
        noisy += rng.normal(0, sigma * rng.uniform(0.2, 0.6), (height, 1, 1)).astype(np.float32)
    hot = rng.random((height, width)) < 2e-4
    noisy[hot] = rng.uniform(150, 255)
    return np.clip(noisy, 0, 255)


def stress_pixels(pixels: np.ndarray, kind: str, severity: float, rng: np.random.Generator
                  ) -> np.ndarray:
    """(H, W, 3) uint8: ``pixels`` with failure ``kind`` at ``severity`` (see SEVERITY)."""
    if kind == "saturated":
        out = expose(pixels, severity)
    elif kind == "washed_out":
        climb = ramp(rng, pixels.shape[:2])
        out = expose(pixels, severity * climb, veil=rng.uniform(0, 80) * climb)
    elif kind == "dark":
        out = expose(pixels, severity)
    elif kind == "noisy":
        out = add_noise(pixels, severity, rng)
    else:
        raise ValueError(f"unknown stress kind {kind!r}: use one of {', '.join(KINDS)}")
    return np.round(out).astype(np.uint8)


def draw_severity(kind: str, rng: np.random.Generator) -> float:
    low, high = SEVERITY[kind]
    if kind == "noisy":
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


# --- the labelling rule -------------------------------------------------------------------


def luma(pixels: np.ndarray, size: tuple[int, int] = smartcam.INPUT_SIZE) -> np.ndarray:
    """Luma (ITU-R 601) box-resized to ``size`` (height, width): what the classifier sees."""
    gray = _gray(pixels)
    height, width = size
    return np.asarray(Image.fromarray(gray, mode="F").resize((width, height),
                                                              Image.Resampling.BOX))


def scene_r2(original: np.ndarray, stressed: np.ndarray,
             size: tuple[int, int] = smartcam.INPUT_SIZE) -> float | None:
    """Share of the stressed luma's variance the original scene explains (squared
    Pearson correlation); None when either frame is uniform (no scene to compare)."""
    a, b = luma(original, size).ravel(), luma(stressed, size).ravel()
    if a.std() < MIN_SCENE_STD:
        return None
    if b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1] ** 2)


def _gray(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) @ np.array(LUMA_WEIGHTS, np.float32)


def too_dark(pixels: np.ndarray) -> bool:
    """Darker than any real earth or edge frame: 99th-percentile luma below DARK_P99."""
    return float(np.percentile(_gray(pixels), 99)) < DARK_P99


def saturated_share(pixels: np.ndarray) -> float:
    """Share of the frame's pixels with luma at SATURATED or above."""
    return float(np.mean(_gray(pixels) >= SATURATED))


def too_bright(pixels: np.ndarray) -> bool:
    """Saturated over SATURATED_SHARE of the frame, as no real earth or edge frame is."""
    return saturated_share(pixels) >= SATURATED_SHARE


def stressed_label(label: str, r2: float | None, dark: bool = False,
                   bright: bool = False) -> str:
    """The rule: ``bad`` when too bright, below MIN_SCENE_R2 or too dark; otherwise the
    frame's label."""
    if dark or bright or (r2 is not None and r2 < MIN_SCENE_R2):
        return BAD
    return label


# --- the stress set ---------------------------------------------------------------------


@dataclass(frozen=True)
class StressedFrame:
    path: Path
    source: Path
    source_label: str
    kind: str
    severity: float
    scene_r2: float | None
    label: str


def _rng(seed: int, name: str, kind: str) -> np.random.Generator:
    """One generator per (seed, file name, kind): the same frame whatever the fold or recipe."""
    digest = hashlib.sha256(f"{name}|{kind}".encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], np.uint32).tolist()])


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 of any image the toolkit reads (truncated JPEGs included)."""
    return np.asarray(images.open_rgb(path))


def build(items: Sequence[tuple[Path, str]], folder: Path, seed: int = 0,
          kinds: Sequence[str] = KINDS,
          size: tuple[int, int] = smartcam.INPUT_SIZE) -> list[StressedFrame]:
    """One stressed copy of each (path, label) per kind, written as
    ``folder/<label>/<kind>_<name>.jpeg``; labels by ``stressed_label``."""
    frames = []
    for path, label in items:
        original = read_rgb(path)
        for kind in kinds:
            rng = _rng(seed, Path(path).name, kind)
            severity = draw_severity(kind, rng)
            stressed = stress_pixels(original, kind, severity, rng)
            r2 = scene_r2(original, stressed, size)
            new_label = stressed_label(label, r2, too_dark(stressed), too_bright(stressed))
            target = folder / new_label / f"{kind}_{Path(path).stem}.jpeg"
            atomic.write_bytes(target, sample.jpeg_bytes(Image.fromarray(stressed)))
            frames.append(StressedFrame(target, Path(path), label, kind, severity, r2,
                                        new_label))
    return frames


# --- the bright-but-valid family --------------------------------------------------------

#: Labels whose real frames the bright-valid family brightens (each keeps its label).
BRIGHT_SOURCE_LABELS = ("earth", "edge")
#: A bright-valid frame has at most this share of saturated pixels: the most any real
#: ``earth`` or ``edge`` frame of the bundled sample has (15 %), well below the rule's
#: SATURATED_SHARE line (25 %); the real over-exposed ``bad`` frames start at 28 %.
BRIGHT_MAX_SATURATED = 0.15
#: Severity per bright kind, drawn uniformly: ``brighter`` in stops of exposure,
#: ``contrasty`` as the contrast gain around the frame's mean (with a small lift).
BRIGHT_SEVERITY = {"brighter": (0.7, 3.0), "contrasty": (1.3, 2.5)}
BRIGHT_KINDS = tuple(BRIGHT_SEVERITY)
#: Halvings of the severity tried before a frame that cannot stay valid is left out.
_BRIGHT_TRIES = 8


def brighten_pixels(pixels: np.ndarray, kind: str, severity: float, lift: float = 0.0
                    ) -> np.ndarray:
    """(H, W, 3) uint8: ``pixels`` exposed ``severity`` stops longer (``brighter``), or
    their contrast around the mean multiplied by ``severity`` and lifted by ``lift``
    levels (``contrasty``: bright cloud against dark sea)."""
    if kind == "brighter":
        out = expose(pixels, severity, lift)
    elif kind == "contrasty":
        values = pixels.astype(np.float32)
        mean = float(_gray(pixels).mean())
        out = np.clip(mean + (values - mean) * severity + lift, 0, 255)
    else:
        raise ValueError(f"unknown bright kind {kind!r}: use one of {', '.join(BRIGHT_KINDS)}")
    return np.round(out).astype(np.uint8)


def still_valid(original: np.ndarray, bright: np.ndarray,
                size: tuple[int, int] = smartcam.INPUT_SIZE) -> tuple[bool, float | None]:
    """(whether ``bright`` stays below the rule's ``bad`` line with room to spare: at most
    BRIGHT_MAX_SATURATED saturated, scene r² at least MIN_SCENE_R2, not too dark; its r²)."""
    r2 = scene_r2(original, bright, size)
    valid = (saturated_share(bright) <= BRIGHT_MAX_SATURATED and not too_dark(bright)
             and stressed_label("valid", r2) == "valid")
    return valid, r2


def bright_valid_pixels(original: np.ndarray, kind: str, rng: np.random.Generator,
                        size: tuple[int, int] = smartcam.INPUT_SIZE
                        ) -> tuple[np.ndarray, float, float | None] | None:
    """(frame, severity, r²) of one bright-valid version of ``original``: the drawn
    severity, halved towards none until the frame stays valid; None when even the
    mildest is not (a frame that is already at the line)."""
    severity = float(rng.uniform(*BRIGHT_SEVERITY[kind]))
    lift = float(rng.uniform(0, 20))
    neutral = 0.0 if kind == "brighter" else 1.0
    for _ in range(_BRIGHT_TRIES):
        bright = brighten_pixels(original, kind, severity, lift)
        valid, r2 = still_valid(original, bright, size)
        if valid:
            return bright, severity, r2
        severity, lift = neutral + (severity - neutral) / 2, lift / 2
    return None


def build_bright(items: Sequence[tuple[Path, str]], folder: Path, seed: int = 0,
                 kinds: Sequence[str] = BRIGHT_KINDS,
                 size: tuple[int, int] = smartcam.INPUT_SIZE) -> list[StressedFrame]:
    """The bright-valid family: one brighter (more contrasty) copy of each real
    ``earth``/``edge`` (path, label) per kind, still below the ``bad`` line, keeping its
    label; written as ``folder/<label>/<kind>_<name>.jpeg``."""
    frames = []
    for path, label in items:
        if label not in BRIGHT_SOURCE_LABELS:
            continue
        original = read_rgb(path)
        for kind in kinds:
            made = bright_valid_pixels(original, kind, _rng(seed, Path(path).name, kind), size)
            if made is None:
                continue
            bright, severity, r2 = made
            target = folder / label / f"{kind}_{Path(path).stem}.jpeg"
            atomic.write_bytes(target, sample.jpeg_bytes(Image.fromarray(bright)))
            frames.append(StressedFrame(target, Path(path), label, kind, severity, r2, label))
    return frames


STRESS_CSV_COLUMNS = ("file", "source", "source_label", "kind", "severity", "scene_r2", "label")


def write_csv(csv_path: Path, frames: Sequence[StressedFrame]) -> Path:
    """What each stressed frame is: its source, kind, severity, scene r² and label."""
    with atomic.staged_file(csv_path) as staged, \
            staged.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(STRESS_CSV_COLUMNS)
        for f in frames:
            writer.writerow([f.path.name, f.source.name, f.source_label, f.kind,
                             f"{f.severity:.3f}", "" if f.scene_r2 is None else f"{f.scene_r2:.4f}",
                             f.label])
    return csv_path


def summary(frames: Sequence[StressedFrame]) -> str:
    """``kind: n bad of m`` per kind, for the log."""
    parts = []
    for kind in dict.fromkeys(f.kind for f in frames):
        of_kind = [f for f in frames if f.kind == kind]
        parts.append(f"{kind} {sum(f.label == BAD for f in of_kind)}/{len(of_kind)} bad")
    return ", ".join(parts)

