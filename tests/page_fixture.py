"""A small model folder for the HTML page tests: test images, a ground and an
on-board confidences CSV, and out-of-fold probabilities with one planted label error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from opssat.core.paths import ModelPaths

LABELS = ["bad", "earth", "edge"]
HEADER = ["filename", "time_ms", "predicted_label", "expected_label", *LABELS]
COLOURS = {"bad": (200, 40, 40), "earth": (40, 160, 60), "edge": (40, 60, 200)}


def write_photo(path: Path, colour: tuple[int, int, int], seed: int,
                size: tuple[int, int] = (96, 80)) -> Path:
    """A small noisy colour image with a gradient (so gray and colour inputs differ)."""
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0.4, 1.0, width)[None, :, None]
    pixels = np.asarray(colour)[None, None, :] * ramp + rng.normal(0, 12, (height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def probabilities(rng: np.random.Generator, top: int, confidence: float) -> list[float]:
    """Three probabilities summing to 1 whose largest, ``confidence``, is at ``top``."""
    rest = rng.dirichlet([1.0, 1.0]) * (1.0 - confidence)
    values = list(rest)
    values.insert(top, confidence)
    return [float(v) for v in values]


def write_csv(path: Path, rows: list[tuple[str, str, list[float]]],
              threshold: float = 0.7) -> Path:
    lines = [",".join(HEADER)]
    for name, expected, probs in rows:
        best = int(np.argmax(probs))
        predicted = LABELS[best] if probs[best] >= threshold else "n/a"
        lines.append(",".join([name, "2.5", predicted, expected, *map(repr, probs)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_model(root: Path, per_label: int = 6, seed: int = 0, name: str = "m") -> ModelPaths:
    """``<root>/<name>/`` with data/all and data/test images and both CSVs.

    In each mode about a third of the images are wrong or unsure, and the modes
    disagree on some images, so every part of the page has content.
    """
    paths = ModelPaths(name, root)
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {"ground": [], "onboard": []}
    for label_index, label in enumerate(LABELS):
        for k in range(per_label):
            file = f"img_msec_{1700000000000 + 100000 * (label_index * per_label + k)}_{k}.png"
            write_photo(paths.all_dir / label / file, COLOURS[label], seed * 1000 + k)
            write_photo(paths.test_dir / label / file, COLOURS[label], seed * 1000 + k)
            for mode in rows:
                top = label_index if rng.random() > 0.3 else int(rng.integers(0, 3))
                confidence = float(rng.uniform(0.4, 0.99))
                rows[mode].append((f"{label}/{file}", label,
                                   probabilities(rng, top, confidence)))
    write_csv(paths.confidences_csv("ground"), rows["ground"])
    write_csv(paths.confidences_csv("onboard"), rows["onboard"])
    (paths.model_dir / "labels.txt").write_text("".join(f"{x}\n" for x in LABELS))
    return paths


def write_oof(paths: ModelPaths, planted: str, planted_as: str, seed: int = 0) -> Path:
    """Out-of-fold probabilities for every image in data/all: each confidently its own
    label, except ``planted`` (a bare file name), ``planted_as`` at 0.99, above every
    other image's confidence, as a clear label error looks."""
    rng = np.random.default_rng(seed)
    rows = []
    for label_index, label in enumerate(LABELS):
        for file in sorted(p.name for p in (paths.all_dir / label).iterdir()):
            if file == planted:
                rows.append((file, label, probabilities(rng, LABELS.index(planted_as), 0.99)))
            else:
                rows.append((file, label, probabilities(rng, label_index,
                                                        float(rng.uniform(0.8, 0.97)))))
    return write_csv(paths.oof_csv("onboard"), rows)
