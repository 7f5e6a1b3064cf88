"""The labelling queue: what to label first among unlabelled thumbnails.

A person's time is the scarce thing, so the queue puts first the images the model
is least sure of (the smallest margin between its two top probabilities, or the
highest entropy), where a label teaches it most. Thumbnails taken seconds apart are
near-duplicates: the queue groups them into bursts with the split's own rule
(``split.time_groups``), shows each burst once, ranked by its least certain member,
so one decision can label the whole burst.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opssat.core.errors import UserError
from opssat.data import split

#: How uncertainty is measured: margin (smallest first) or entropy (largest first).
RANKINGS = ("margin", "entropy")


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row: 0 is a coin toss, 1 is certain."""
    top2 = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropies(probabilities: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, in nats (0: certain)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def uncertainty(probabilities: np.ndarray, rank: str = "margin") -> np.ndarray:
    """One number per row, larger = less sure: 1 - margin, or the entropy."""
    if rank not in RANKINGS:
        raise UserError(f"--rank {rank!r}: use one of {', '.join(RANKINGS)}")
    if rank == "margin":
        return 1.0 - margins(probabilities)
    return entropies(probabilities)


@dataclass(frozen=True)
class Burst:
    """Thumbnails taken within the group seconds of each other, least sure first
    (``rows`` index the probabilities; ``rows[0]`` stands for the burst)."""

    rows: list[int]
    uncertainty: float  # its first member's

    @property
    def size(self) -> int:
        return len(self.rows)


def bursts(files: Sequence[Path], probabilities: np.ndarray, rank: str = "margin",
           group_seconds: float = split.DEFAULT_GROUP_SECONDS) -> list[Burst]:
    """The queue: bursts of ``files``, the least sure burst first (ties by name)."""
    score = uncertainty(probabilities, rank)
    row_of = {Path(f): i for i, f in enumerate(files)}
    found = []
    for group in split.time_groups([Path(f) for f in files], group_seconds):
        rows = sorted((row_of[p] for p in group), key=lambda r: (-score[r], Path(files[r]).name))
        found.append(Burst(rows, float(score[rows[0]])))
    return sorted(found, key=lambda b: (-b.uncertainty, Path(files[b.rows[0]]).name))


def order(files: Sequence[Path], probabilities: np.ndarray, rank: str = "margin",
          group_seconds: float = split.DEFAULT_GROUP_SECONDS) -> list[int]:
    """Rows in the queue's order, one per burst (what a person labels first)."""
    return [b.rows[0] for b in bursts(files, probabilities, rank, group_seconds)]
