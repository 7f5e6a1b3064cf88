"""``labels.txt``: written once by training, read by everything else. Its line
order is the order of the model's outputs."""

from __future__ import annotations

from pathlib import Path

from opssat import atomic
from opssat.errors import UserError


def validate_labels(labels: list[str], source: str = "labels") -> list[str]:
    """Raise a UserError unless ``labels`` is non-empty, unique and has no blank entry."""
    if not labels:
        raise UserError(f"{source} is empty: it needs one label per line")
    if any(not label.strip() or label != label.strip() for label in labels):
        raise UserError(f"{source} has a blank line or stray spaces: one label per line, no blanks")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"{source} lists {', '.join(duplicates)} more than once")
    return labels


def read_labels(path: Path) -> list[str]:
    """The labels in ``path``, one per line, checked with ``validate_labels``."""
    if not path.is_file():
        raise UserError(f"labels file {path} not found: train a model first (./train.sh)")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    return validate_labels(lines, str(path))


def write_labels(path: Path, labels: list[str]) -> None:
    """Write ``labels`` one per line, atomically."""
    validate_labels(labels)
    atomic.write_text(path, "".join(f"{label}\n" for label in labels))
