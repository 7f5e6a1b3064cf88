"""Sample data: the bundled real OPS-SAT thumbnails, and synthetic OPS-SAT-like
thumbnails, so that every script can run offline on data the project ships or
makes itself.

The real sample (``sample_data/opssat_real/``, credit ESA / OPS-SAT) is copied
into a model's ``data/all`` after each file is checked against its manifest.
Synthetic images serve the tests and top up what the real sample lacks.

The images imitate what the SmartCam downlinks: ``earth`` (clouds over land and
sea, often dark or blue-green), ``edge`` (black space and a bright, curved limb
of the Earth with a thin blue glow) and ``bad`` (black, over-exposed, noisy,
sun glare, blurred). Bursts of a few images seconds apart are near-duplicates of
one scene, as on board, so that a leakage-safe split has something to guard.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from opssat.core import atomic, paths
from opssat.core.errors import UserError
from opssat.data import images
from opssat.onboard import smartcam

#: (width, height) of an OPS-SAT thumbnail.
THUMBNAIL_SIZE = (614, 583)
JPEG_QUALITY = 90
DEFAULT_COUNT = 120
DEFAULT_SEED = 2020
#: The real data's imbalance, about 6 bad : 3 earth : 1 edge.
LABEL_SHARES = dict(zip(smartcam.DEFAULT_LABELS, (0.6, 0.3, 0.1), strict=True))
#: Kinds of ``bad`` image, drawn with these weights.
BAD_KINDS = {"black": 0.25, "overexposed": 0.15, "noise": 0.2, "glare": 0.2, "blur": 0.2}
#: First acquisition time (ms), December 2020 like the real thumbnails.
START_MS = 1_608_500_000_000
#: The two files that exercise image hygiene, written beside the images.
TRUNCATED_LABEL = "earth"
NON_IMAGE_NAME = "notes.jpeg"
NON_IMAGE_LABEL = "bad"
#: Burst images sit this far into a scene drawn with a margin, so they can be shifted.
_MARGIN = 24

Size = tuple[int, int]


def file_name(ms: int) -> str:
    """The SmartCam thumbnail name for an acquisition time."""
    return f"img_msec_{ms}_2_thumbnail.jpeg"


# --- noise fields --------------------------------------------------------------


def fractal(rng: np.random.Generator, size: Size, cells: float, roughness: float = 0.55,
             stretch: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Smooth multi-scale noise in [0, 1], shape (height, width).

    Octaves are added while doubling a small random grid, so the cost is about
    one resize to full size; ``stretch`` and ``angle`` streak it like wind-blown
    cloud. ``cells`` is the number of coarsest blobs across the larger side.
    """
    width, height = size
    side = max(width, height)
    grid = max(2, int(round(cells)))
    field = rng.standard_normal((grid, grid)).astype(np.float32)
    amplitude = 1.0
    while field.shape[0] * 2 <= side // 2:
        n = field.shape[0] * 2
        field = np.asarray(Image.fromarray(field).resize((n, n), Image.Resampling.BICUBIC))
        amplitude *= roughness
        field = field + amplitude * rng.standard_normal((n, n)).astype(np.float32)
    n = field.shape[0]
    # Affine map from output pixels into the grid: rotate, stretch along one axis.
    cos, sin = np.cos(angle), np.sin(angle)
    scale = n / (side * 1.5)
    a, b = scale * cos / stretch, -scale * sin / stretch
    d, e = scale * sin, scale * cos
    cx, cy = width / 2, height / 2
    c = n / 2 - a * cx - b * cy
    f = n / 2 - d * cx - e * cy
    img = Image.fromarray(field).transform(
        (width, height), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BICUBIC
    )
    out = np.asarray(img, dtype=np.float32)
    low, high = np.percentile(out[::4, ::4], (1, 99))
    return np.clip((out - low) / max(high - low, 1e-6), 0.0, 1.0)


def smoothstep(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def grain(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Sensor noise."""
    return rng.standard_normal((*shape, 3), dtype=np.float32) * sigma


# --- earth -----------------------------------------------------------------------

#: Colour casts of the camera: (gain on the ground, per-channel tint, gain on clouds).
_LOOKS = {
    "cyan": (1.3, (0.55, 1.05, 1.12), 1.0),
    "dark": (0.45, (0.8, 0.9, 1.05), 0.8),
    "natural": (1.0, (1.0, 1.0, 1.0), 1.0),
    "stretched": (1.0, (1.0, 1.0, 1.0), 1.0),
}


def earth_rgb(rng: np.random.Generator, size: Size, look: str) -> np.ndarray:
    """Clouds over land and sea as float RGB (0..255) in one of the camera looks."""
    gain, tint, cloud_gain = _LOOKS[look]
    gain *= rng.uniform(0.8, 1.2)
    angle = rng.uniform(0, np.pi)
    land_field = fractal(rng, size, cells=rng.uniform(2, 5), roughness=0.6)
    land_share = rng.choice([0.0, rng.uniform(0.2, 0.8), 1.0], p=[0.35, 0.4, 0.25])
    land = smoothstep(land_field, 1 - land_share - 0.02, 1 - land_share + 0.02)[..., None]
    detail = fractal(rng, size, cells=rng.uniform(10, 30), roughness=0.68)[..., None]
    sea = np.array([16, 28, 50], np.float32) * rng.uniform(0.8, 1.5)
    soil = np.array(
        [[110, 86, 66], [88, 82, 62], [128, 106, 86], [72, 62, 52]], np.float32
    )[rng.integers(4)]
    ground = sea * (0.75 + 0.5 * detail) * (1 - land) + soil * (0.4 + 1.0 * detail) * land
    ground = ground * gain
    if look == "cyan":
        ground = 0.4 * ground + 0.6 * ground.mean(axis=2, keepdims=True)
    cover = rng.uniform(0.05, 0.8)
    clouds = fractal(rng, size, cells=rng.uniform(3, 9), roughness=0.68,
                      stretch=rng.uniform(1.0, 4.0), angle=angle)
    puffs = fractal(rng, size, cells=rng.uniform(25, 60), roughness=0.6)
    mix = clouds * 0.7 + puffs * 0.3
    threshold = np.quantile(mix[::8, ::8], 1 - cover)
    density = smoothstep(mix, threshold - 0.02, threshold + rng.uniform(0.1, 0.3))[..., None]
    white = np.array([238, 242, 248], np.float32) * (0.7 + 0.3 * puffs[..., None]) * cloud_gain
    rgb = (ground * (1 - density) + white * density) * np.array(tint, np.float32)
    if look == "stretched":
        gray = rgb.mean(axis=2, keepdims=True)
        rgb = 0.4 * rgb + 0.6 * gray
        low, high = np.percentile(rgb[::4, ::4], (1, 99.5))
        rgb = (rgb - low) / max(high - low, 1.0) * 255
    return rgb


def _earth(rng: np.random.Generator, size: Size) -> np.ndarray:
    looks = list(_LOOKS)
    look = looks[rng.choice(len(looks), p=[0.3, 0.3, 0.2, 0.2])]
    rgb = earth_rgb(rng, size, look)
    return rgb + grain(rng, rgb.shape[:2], 3.0)


# --- edge ------------------------------------------------------------------------


def _edge(rng: np.random.Generator, size: Size) -> np.ndarray:
    """Black space, a bright curved limb at a random angle, a thin blue glow."""
    width, height = size
    side = max(width, height)
    angle = rng.uniform(0, 2 * np.pi)
    radius = side * rng.uniform(1.5, 8.0)
    offset = side * rng.uniform(-0.3, 0.3)
    normal = np.array([np.cos(angle), np.sin(angle)])
    centre = np.array([width / 2, height / 2]) - normal * (radius - offset)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # Signed distance (pixels) from the limb; positive on the Earth side.
    inside = radius - np.hypot(xs - centre[0], ys - centre[1])
    scale = side / 600
    earth = earth_rgb(rng, size, "cyan") * rng.uniform(0.9, 1.3)
    haze = np.exp(-np.clip(inside, 0, None) / (side * rng.uniform(0.1, 0.4)))
    earth = earth + haze[..., None] * np.array([70, 160, 170], np.float32)
    glow_width = scale * rng.uniform(3, 7)
    glow = np.exp(-np.abs(inside) / glow_width)
    outer = np.exp(-np.clip(-inside, 0, None) / (glow_width * 3))
    body = smoothstep(inside, -1.5 * scale, 1.5 * scale)
    space = np.array([10, 12, 16], np.float32)
    rgb = space + earth * body[..., None]
    rgb = rgb + (glow * 0.8 + outer * 0.35 * (1 - body))[..., None] * np.array(
        [80, 190, 255], np.float32
    )
    return rgb + grain(rng, (height, width), 2.5)


# --- bad -------------------------------------------------------------------------


def _black(rng: np.random.Generator, size: Size) -> np.ndarray:
    width, height = size
    level = rng.uniform(0, 12)
    rgb = np.full((height, width, 3), level, np.float32) + grain(rng, (height, width), 2.0)
    hot = rng.random((height, width)) < 2e-4
    rgb[hot] = rng.uniform(120, 255)
    return rgb


def _overexposed(rng: np.random.Generator, size: Size) -> np.ndarray:
    width, height = size
    base = 225 + 40 * fractal(rng, size, cells=2)
    tint = np.array([rng.uniform(0.85, 1.0), 1.0, 1.0], np.float32)
    return base[..., None] * tint + grain(rng, (height, width), 3.0)


def _noise(rng: np.random.Generator, size: Size) -> np.ndarray:
    width, height = size
    mean = rng.uniform(20, 140)
    rgb = mean + rng.normal(0, rng.uniform(40, 90), (height, width, 3)).astype(np.float32)
    if rng.random() < 0.5:  # read-out stripes
        rows = rng.normal(0, 30, (height, 1, 1)).astype(np.float32)
        rgb = rgb + rows
    return rgb


def _glare(rng: np.random.Generator, size: Size) -> np.ndarray:
    """The Sun in or near the field of view: a bright blob, a streak, a halo."""
    width, height = size
    side = max(width, height)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    sx, sy = rng.uniform(-0.2, 1.2) * width, rng.uniform(-0.2, 1.2) * height
    r = np.hypot(xs - sx, ys - sy) / side
    blob = np.exp(-((r / rng.uniform(0.05, 0.15)) ** 2)) * 255
    halo = np.exp(-r / rng.uniform(0.15, 0.4)) * rng.uniform(90, 180)
    angle = rng.uniform(0, np.pi)
    across = np.abs((xs - sx) * np.sin(angle) - (ys - sy) * np.cos(angle)) / side
    streak = np.exp(-across / rng.uniform(0.004, 0.015)) * rng.uniform(120, 255)
    light = (blob + halo + streak)[..., None] * np.array([1.0, 0.97, 0.9], np.float32)
    background = _earth(rng, size) * rng.uniform(0.0, 0.5) if rng.random() < 0.5 else 8.0
    return background + light + grain(rng, (height, width), 3.0)


def _blur(rng: np.random.Generator, size: Size) -> np.ndarray:
    sharp = to_image(_earth(rng, size))
    radius = max(size) * rng.uniform(0.02, 0.05)
    return np.asarray(sharp.filter(ImageFilter.GaussianBlur(radius)), np.float32)


_BAD: dict[str, Callable[[np.random.Generator, Size], np.ndarray]] = {
    "black": _black,
    "overexposed": _overexposed,
    "noise": _noise,
    "glare": _glare,
    "blur": _blur,
}
_SCENES: dict[str, Callable[[np.random.Generator, Size], np.ndarray]] = {
    "earth": _earth,
    "edge": _edge,
}


def _scene(label: str, rng: np.random.Generator, size: Size) -> np.ndarray:
    if label == "bad":
        kinds = list(BAD_KINDS)
        kind = kinds[rng.choice(len(kinds), p=list(BAD_KINDS.values()))]
        return _BAD[kind](rng, size)
    if label not in _SCENES:
        raise ValueError(f"unknown sample label {label!r}: use one of {sorted(LABEL_SHARES)}")
    return _SCENES[label](rng, size)


def make_thumbnail(label: str, rng: np.random.Generator,
                   size: Size = THUMBNAIL_SIZE) -> Image.Image:
    """One synthetic RGB thumbnail of ``label`` (``bad``, ``earth`` or ``edge``)."""
    return to_image(_scene(label, rng, size))


# --- bursts and files ------------------------------------------------------------


def label_counts(count: int) -> dict[str, int]:
    """Images per label for ``count`` images, in the 6 : 3 : 1 ratio, each label >= 1."""
    if count < len(LABEL_SHARES):
        raise UserError(f"--count {count} is too small: use at least {len(LABEL_SHARES)}")
    counts = {label: max(1, round(count * share)) for label, share in LABEL_SHARES.items()
              if label != "bad"}
    counts["bad"] = count - sum(counts.values())
    return {label: counts[label] for label in LABEL_SHARES}


def _bursts(rng: np.random.Generator, counts: dict[str, int]) -> list[tuple[str, int]]:
    """(label, images) bursts in acquisition order; one scene per burst."""
    bursts = []
    for label, n in counts.items():
        while n > 0:
            size = int(min(n, rng.integers(1, 6)))
            bursts.append((label, size))
            n -= size
    order = rng.permutation(len(bursts))
    return [bursts[i] for i in order]


def jpeg_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def truncate_jpeg(data: bytes, keep: float = 0.6) -> bytes:
    """A JPEG cut short inside its scan data, as an interrupted downlink leaves it."""
    start = data.find(b"\xff\xda")
    if start < 0:
        raise ValueError("not a baseline JPEG: no start-of-scan marker")
    return data[: start + int((len(data) - start) * keep)]


def refuse_non_empty(all_dir: Path) -> None:
    """Raise a UserError when ``all_dir`` already holds files (the user's data, perhaps)."""
    if all_dir.is_dir() and any(p.is_file() for p in all_dir.rglob("*")):
        raise UserError(
            f"{all_dir} already holds files: use another model name, or --force to add the "
            "sample images beside them (it overwrites only its own file names)"
        )


def generate(all_dir: Path, count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED,
             size: Size = THUMBNAIL_SIZE) -> dict[str, int]:
    """Write ``count`` images into ``all_dir/<label>/``; return images per label.

    One earth image is written truncated (it still decodes) and a text file
    named like an image is added beside the ``bad`` images: both exercise the
    toolkit's image hygiene. The same seed gives byte-identical files.
    """
    if seed < 0:
        raise UserError(f"seed {seed} is negative: use a whole number >= 0")
    rng = np.random.default_rng(seed)
    counts = label_counts(count)
    width, height = size
    margin = _MARGIN * max(size) // max(THUMBNAIL_SIZE)
    canvas = (width + 2 * margin, height + 2 * margin)
    ms = START_MS
    truncated = False
    for label, burst in _bursts(rng, counts):
        ms += int(rng.uniform(5 * 60_000, 6 * 3_600_000))
        scene = to_image(_scene(label, rng, canvas))
        for _ in range(burst):
            dx, dy = (int(v) for v in rng.integers(0, 2 * margin + 1, 2))
            frame = scene.crop((dx, dy, dx + width, dy + height))
            data = jpeg_bytes(frame)
            if label == TRUNCATED_LABEL and not truncated:
                data, truncated = truncate_jpeg(data), True
            atomic.write_bytes(all_dir / label / file_name(ms), data)
            ms += int(rng.uniform(2_000, 8_000))
    atomic.write_bytes(all_dir / NON_IMAGE_LABEL / NON_IMAGE_NAME,
           b"Downlink notes: this is text, not an image.\n")
    return counts



# --- the bundled real sample ------------------------------------------------------

#: The real OPS-SAT thumbnails shipped with the toolkit (credit ESA / OPS-SAT).
REAL_SAMPLE_DIR = paths.PROJECT_ROOT / "sample_data" / "opssat_real"
MANIFEST_NAME = "MANIFEST.csv"
MANIFEST_COLUMNS = ("label", "filename", "source_repo", "source_path", "sha256", "width",
                    "height")


@dataclass(frozen=True)
class ManifestEntry:
    label: str
    filename: str
    source_repo: str
    sha256: str


@dataclass
class RealCopy:
    """What ``install_real`` did: images copied per label, and files it left out."""

    copied: dict[str, int] = field(default_factory=dict)
    #: (file, why) of each manifest entry not copied.
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def read_manifest(sample_dir: Path = REAL_SAMPLE_DIR) -> list[ManifestEntry]:
    """The manifest's rows; UserError when it is missing or lacks a column."""
    path = sample_dir / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path} not found: the real sample is incomplete (restore "
                        "sample_data/opssat_real/ from the project's repository)")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    missing = [c for c in MANIFEST_COLUMNS if rows and c not in rows[0]]
    if not rows or missing:
        raise UserError(f"{path} has no rows or lacks column(s) {', '.join(missing)}: restore "
                        "it from the project's repository")
    entries = []
    for row in rows:
        label, name = row["label"], row["filename"]
        if "/" in label or "/" in name or name.startswith(".") or label.startswith("."):
            raise UserError(f"{path}: unsafe label or file name {label}/{name}")
        entries.append(ManifestEntry(label, name, row["source_repo"], row["sha256"].lower()))
    return entries


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_real(all_dir: Path, sample_dir: Path = REAL_SAMPLE_DIR) -> RealCopy:
    """Copy the real sample into ``all_dir/<label>/``, each file checked first.

    A file that is missing, differs from its manifest hash or does not decode is
    named and skipped; nothing in ``sample_dir`` is touched.
    """
    result = RealCopy()
    for entry in read_manifest(sample_dir):
        source = sample_dir / entry.label / entry.filename
        result.copied.setdefault(entry.label, 0)
        if not source.is_file():
            result.skipped.append((source, "missing"))
            continue
        if _sha256(source) != entry.sha256:
            result.skipped.append((source, "its sha256 differs from the manifest"))
            continue
        if not images.readable(source):
            result.skipped.append((source, "it does not decode as an image"))
            continue
        atomic.write_bytes(all_dir / entry.label / entry.filename, source.read_bytes())
        result.copied[entry.label] += 1
    if not any(result.copied.values()):
        raise UserError(f"no image of {sample_dir} could be copied (first problem: "
                        f"{result.skipped[0][0]}: {result.skipped[0][1]}): restore the folder "
                        "from the project's repository")
    return result
