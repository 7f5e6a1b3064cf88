"""``labels.txt``: written once by training, read by everything else. Its line
order is the order of the model's outputs."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from opssat.core import atomic
from opssat.core.errors import UserError

#: Characters SmartCam cannot hold in a label, besides path separators: ``labels_keep``
#: entries are ``label:model`` pairs in an INI file that %-interpolates, and the
#: classifier prints labels inside JSON strings.
SMARTCAM_FORBIDDEN = (":", "%", '"', "\\")


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a label, or None. A label names a folder
    (``data/all/<label>/``, ``classified/<label>/``) and a SmartCam config entry, so
    it must be one plain path component: the one rule, wherever a label comes from."""
    if label in ("", ".", ".."):
        return "is not a folder name"
    if "/" in label or any(ch in label for ch in SMARTCAM_FORBIDDEN):
        return f"contains one of / {' '.join(SMARTCAM_FORBIDDEN)}"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in label):
        return "contains a control character"
    return None


def check_label(label: str, source: str = "label") -> str:
    """``label`` when it obeys ``label_problem``'s rule, else a UserError naming ``source``."""
    problem = label_problem(label)
    if problem:
        raise UserError(f"{source}: label {label!r} {problem}: a label is one folder name "
                        f"and cannot contain / {' '.join(SMARTCAM_FORBIDDEN)} or control "
                        "characters; rename it")
    return label


def validate_labels(labels: list[str], source: str = "labels") -> list[str]:
    """Raise a UserError unless ``labels`` is non-empty, unique and has no blank entry."""
    if not labels:
        raise UserError(f"{source} is empty: it needs one label per line")
    if any(not label.strip() or label != label.strip() for label in labels):
        raise UserError(f"{source} has a blank line or stray spaces: one label per line, no blanks")
    for label in labels:
        check_label(label, source)
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"{source} lists {', '.join(duplicates)} more than once")
    return labels


def read_labels(path: Path) -> list[str]:
    """The labels in ``path``, one per line, checked with ``validate_labels``."""
    if not path.is_file():
        raise UserError(f"labels file {path} not found: train a model first (./train.sh)")
    try:
        # utf-8-sig: an editor's byte-order mark is no part of the first label.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"labels file {path} is not UTF-8 (byte 0x{err.object[err.start]:02x} "
                        f"at offset {err.start}): save it as UTF-8") from err
    except OSError as err:
        raise UserError(f"cannot read labels file {path}: {err.strerror}") from err
    lines = text.splitlines()
    return validate_labels(lines, str(path))


def write_labels(path: Path, labels: list[str]) -> None:
    """Write ``labels`` one per line, atomically."""
    validate_labels(labels)
    atomic.write_text(path, "".join(f"{label}\n" for label in labels))
