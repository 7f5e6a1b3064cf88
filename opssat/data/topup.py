"""Topping up a label the real sample has too few of, ``bad`` above all: exposure
failures made from real ``earth`` and ``edge`` frames at the statistics of the
sample's own over-exposed frames (or drawn from scratch without real frames).
Top-up files are named ``synthetic_*`` so that every tool keeps them in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from opssat.core import atomic, progress
from opssat.core.errors import UserError
from opssat.data import images, sample, stress
from opssat.data.sample import Size


def _overexposed_earth(rng: np.random.Generator, size: Size) -> np.ndarray:
    """Clouds shot far too long: white almost everywhere, a cyan trace of texture."""
    earth = sample.earth_rgb(rng, size, "cyan")
    glow = rng.uniform(40, 90) + sample.grain(rng, earth.shape[:2], 3.0)
    return earth * rng.uniform(3.0, 6.0) + glow


def _saturated_limb(rng: np.random.Generator, size: Size) -> np.ndarray:
    """A blown-out Earth beside a dim, hazy sky: a sharp boundary, one side pure white."""
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(-0.35, 0.35) * max(size)
    across = (xs - width / 2) * np.cos(angle) + (ys - height / 2) * np.sin(angle) - offset
    white = sample.smoothstep(across, -1.5, 1.5)[..., None]
    texture = sample.fractal(rng, size, cells=2)[..., None]
    haze = np.array([38, 62, 58], np.float32) * (0.6 + 0.6 * texture)
    lit = np.array([255, 255, 255], np.float32) * rng.uniform(1.1, 1.6)
    return haze * (1 - white) + lit * white + sample.grain(rng, (height, width), 2.5)


def _washed_out(rng: np.random.Generator, size: Size) -> np.ndarray:
    """Part of the frame saturates: an exposure that climbs across the image."""
    width, height = size
    earth = sample.earth_rgb(rng, size, "cyan")
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xs / width - 0.5) * np.cos(angle) + (ys / height - 0.5) * np.sin(angle)) + 0.5
    ramp = np.clip(ramp + rng.uniform(0.0, 0.4), 0, 1) ** rng.uniform(0.5, 1.5)
    gain = 1.5 + rng.uniform(6.0, 12.0) * ramp
    return earth * gain[..., None] + sample.grain(rng, (height, width), 3.0)


#: ``bad`` kinds for topping up the real sample: the exposure failures it has too few of.
TOP_UP_BAD_KINDS = {"overexposed_earth": 0.4, "saturated_limb": 0.3, "washed_out": 0.3}
_TOP_UP_BAD: dict[str, Callable[[np.random.Generator, Size], np.ndarray]] = {
    "overexposed_earth": _overexposed_earth,
    "saturated_limb": _saturated_limb,
    "washed_out": _washed_out,
}
#: Top-up file names start with this, so every tool can tell them from real images.
SYNTHETIC_PREFIX = "synthetic_"
#: Top-up acquisition times (ms) lie in 2031, far from any real or generated burst.
TOP_UP_START_MS = 1_920_000_000_000
#: Top-up images are this far apart, so that each is a burst of its own.
_TOP_UP_GAP_MS = 10 * 60_000


def is_synthetic(path: str | Path) -> bool:
    """True for a top-up image (named by ``top_up``), which belongs in training only."""
    return Path(path).name.startswith(SYNTHETIC_PREFIX)


def top_up_thumbnail(label: str, rng: np.random.Generator, size: Size = sample.THUMBNAIL_SIZE
                     ) -> Image.Image:
    """One synthetic thumbnail for topping up ``label``: for ``bad``, an exposure failure
    drawn from scratch (``top_up`` prefers ones made from real frames)."""
    if label != "bad":
        return sample.make_thumbnail(label, rng, size)
    kinds = list(TOP_UP_BAD_KINDS)
    kind = kinds[rng.choice(len(kinds), p=list(TOP_UP_BAD_KINDS.values()))]
    return sample.to_image(_TOP_UP_BAD[kind](rng, size))


#: Share of saturated pixels (luma >= 250) and the floor (1st-percentile luma) of the
#: bundled sample's five over-exposed ``bad`` frames (two bursts: 1609233349321 to
#: 1609233377561, 1609402442350 and 1609402462591): 0.28 to 0.81, and 37 to 121 (stray
#: light lifts even their darkest parts). Top-up exposure failures are drawn in these ranges.
OVEREXPOSED_SATURATED = (0.28, 0.81)
OVEREXPOSED_FLOOR = (37.0, 121.0)
#: Labels whose real frames the ``bad`` top-up over-exposes.
TOP_UP_SOURCE_LABELS = ("earth", "edge")


def top_up_sources(items: Sequence[tuple[Path, str]]) -> list[Path]:
    """The real ``earth`` and ``edge`` frames of (path, label) pairs: what ``top_up``
    over-exposes. Give it the training side only, never images that will be judged."""
    return [Path(p) for p, label in items
            if label in TOP_UP_SOURCE_LABELS and not is_synthetic(p)]


def data_top_up_sources(all_dir: Path, test_dir: Path | None = None) -> list[Path]:
    """``all_dir``'s readable earth and edge frames but those also in ``test_dir`` (a test
    split): a test image must not reach training, even over-exposed."""
    tested = ({(p.parent.name, p.name) for p in test_dir.rglob("*") if p.is_file()}
              if test_dir is not None and test_dir.is_dir() else set())
    return top_up_sources(
        [(p, folder.name) for folder in images.label_folders(all_dir)
         for p in images.list_files(folder)
         if (folder.name, p.name) not in tested and images.readable(p)])


def overexposed_from_real(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: a real frame over-exposed until the share of saturated pixels and
    the floor match the sample's over-exposed frames (OVEREXPOSED_*): the whole frame
    (``stress.expose``) or, half the time, washed out across part of it (``stress.ramp``)."""
    target = rng.uniform(*OVEREXPOSED_SATURATED)
    floor = rng.uniform(*OVEREXPOSED_FLOOR)
    climb = stress.ramp(rng, pixels.shape[:2]) if rng.random() < 0.5 else None

    def exposed(stops: float) -> np.ndarray:
        if climb is None:
            lift = max(0.0, floor - stress.BLACK_LEVEL)
            return stress.expose(pixels, stops, lift)
        return stress.expose(pixels, stops * climb, floor * climb)

    low, high = 0.0, 16.0  # stops: bisect to the target share of saturated pixels
    for _ in range(12):
        middle = (low + high) / 2
        if stress.saturated_share(exposed(middle)[::4, ::4]) < target:  # every 16th pixel
            low = middle
        else:
            high = middle
    return np.round(exposed(high)).astype(np.uint8)


#: The most top-up images of one label: far more synthetic images than the real ones
#: (the bundled sample has 123) would teach the model the generator, not the camera.
MAX_TOP_UP = 1000


#: Top-ups that are not one label's: ``bright`` brightens real earth and edge frames below
#: the stress rule's ``bad`` line, each keeping its label (``stress.bright_valid_pixels``);
#: ``bright_paired`` does so to the frames the ``bad`` top-up over-exposes, in its order,
#: so a scene is seen both as a failure and as a valid bright frame;
#: ``bad_drawn`` draws exposure failures from scratch (the top-up before real frames).
BRIGHT = "bright"
BRIGHT_PAIRED = "bright_paired"
BAD_DRAWN = "bad_drawn"
TOP_UP_KINDS = (BRIGHT, BRIGHT_PAIRED, BAD_DRAWN)
#: Their files' timestamps start this far after TOP_UP_START_MS, so no name repeats.
_KIND_OFFSET_MS = {BRIGHT: 5 * 86_400_000, BAD_DRAWN: 10 * 86_400_000,
                   BRIGHT_PAIRED: 15 * 86_400_000}


def top_up_labels(kind: str) -> tuple[str, ...]:
    """The label folders a top-up of ``kind`` (a label or one of TOP_UP_KINDS) writes into."""
    if kind in (BRIGHT, BRIGHT_PAIRED):
        return stress.BRIGHT_SOURCE_LABELS
    return ("bad",) if kind == BAD_DRAWN else (kind,)


def parse_top_up(text: str) -> tuple[str, int]:
    """``LABEL=N`` (or ``bright=N``, ``bad_drawn=N``) from the command line, e.g. ``bad=20``."""
    label, sep, number = text.partition("=")
    try:
        count = int(number)
    except ValueError:
        count = -1
    choices = [*sample.LABEL_SHARES, *TOP_UP_KINDS]
    if not sep or not 1 <= count <= MAX_TOP_UP or label not in choices:
        raise UserError(f"--top_up {text!r}: write LABEL=N with LABEL one of "
                        f"{', '.join(choices)} and N from 1 to {MAX_TOP_UP}, e.g. bad=20")
    return label, count


def _rng(label: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, len(label), *label.encode("utf-8")])


def _bright_top_up(all_dir: Path, count: int, rng: np.random.Generator, start_ms: int,
                   order: Sequence[Path]) -> list[Path]:
    """``count`` of the real earth/edge frames ``order`` brightened below the ``bad`` line,
    taken in turn, each into its own label's folder (a source's label is its folder's name)."""
    if not order:
        raise UserError("--top_up bright=N (or bright_paired=N) brightens real earth and edge "
                        "frames: there are none")
    written: list[Path] = []
    attempt = 0
    while len(written) < count and attempt < 4 * count:
        source = order[attempt % len(order)]
        attempt += 1
        kind = stress.BRIGHT_KINDS[attempt % len(stress.BRIGHT_KINDS)]
        made = stress.bright_valid_pixels(stress.read_rgb(source), kind, rng)
        if made is None:
            continue
        ms = start_ms + len(written) * _TOP_UP_GAP_MS
        path = all_dir / source.parent.name / f"{SYNTHETIC_PREFIX}{sample.file_name(ms)}"
        atomic.write_bytes(path, sample.jpeg_bytes(Image.fromarray(made[0])))
        written.append(path)
    return written


def top_up(all_dir: Path, label: str, count: int, seed: int = sample.DEFAULT_SEED,
           size: Size = sample.THUMBNAIL_SIZE, start_ms: int = TOP_UP_START_MS,
           sources: Sequence[Path] = ()) -> list[Path]:
    """Write ``count`` synthetic ``label`` images into ``all_dir/<label>/``; return them.

    ``bad`` images are real ``sources`` frames over-exposed as the sample's real
    over-exposed frames are (``overexposed_from_real``), each source in turn in a
    seeded order; without sources, exposure failures drawn from scratch.

    Names start with ``SYNTHETIC_PREFIX`` and carry timestamps from ``start_ms``
    (2031), so they never join a real burst and replace nothing real. The same
    seed gives the same files, so a re-run rewrites them rather than adding more.
    """
    if not 1 <= count <= MAX_TOP_UP:
        raise UserError(f"top-up count {count}: use 1 to {MAX_TOP_UP}")
    rng = _rng(label, seed)
    if label == BAD_DRAWN:
        label, sources, start_ms = "bad", (), start_ms + _KIND_OFFSET_MS[BAD_DRAWN]
    order = [sources[i] for i in rng.permutation(len(sources))] if sources else []
    if label == BRIGHT_PAIRED:  # the bad top-up's order (its generator's first draw); the
        # own draw above still advances rng, so the severities stay those measured
        order = [sources[i] for i in _rng("bad", seed).permutation(len(sources))]
    if label in (BRIGHT, BRIGHT_PAIRED):
        return _bright_top_up(all_dir, count, rng, start_ms + _KIND_OFFSET_MS[label], order)
    written = []
    for n in progress.bar(range(count), count, f"top-up {label}", "img"):
        ms = start_ms + n * _TOP_UP_GAP_MS
        path = all_dir / label / f"{SYNTHETIC_PREFIX}{sample.file_name(ms)}"
        if label == "bad" and sources:
            source = order[n % len(order)]
            image = sample.to_image(overexposed_from_real(stress.read_rgb(source), rng))
        else:
            image = top_up_thumbnail(label, rng, size)
        atomic.write_bytes(path, sample.jpeg_bytes(image))
        written.append(path)
    return written


def remove_other_top_ups(folder: Path, keep: Sequence[Path]) -> list[Path]:
    """Delete the ``synthetic_*`` files in ``folder`` that are not in ``keep``: a top-up
    of N leaves N, whatever an earlier (or interrupted) larger one wrote. Only the
    toolkit's own top-up files are touched, never a real image."""
    kept = {Path(p).name for p in keep}
    stale = [p for p in sorted(folder.glob(f"{SYNTHETIC_PREFIX}*"))
             if p.is_file() and not p.is_symlink() and p.name not in kept]
    for path in stale:
        path.unlink()
    return stale
