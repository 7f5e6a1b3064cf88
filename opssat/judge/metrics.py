"""Judging a classifier from its ``confidences.csv``.

Decision: the main figures (accuracy, per-label table, precision/recall/F1,
macro-F1, balanced accuracy, Cohen's kappa, the top-1 confusion matrix) use the
top-1 label of EVERY image, ignoring the confidence threshold, so they describe
the model itself. The threshold's effect is reported apart: the "at threshold"
figures (coverage and accuracy of the images kept) and the confusion matrix with
an ``n/a`` column, because that is what SmartCam does on board.

All scores come from scikit-learn; this module only reads the CSV and arranges them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from opssat.core.errors import UserError
from opssat.judge.confidences import NOT_CLASSIFIED, Confidences
from opssat.onboard import smartcam

#: 0.00, 0.01, ... 0.99: the thresholds of the trade-off table.
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(100))


# --- threshold trade-off ------------------------------------------------------


@dataclass
class ThresholdRow:
    threshold: float
    kept_share: float
    kept_accuracy: float | None
    kept: int


def threshold_table(
    conf: Confidences, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> list[ThresholdRow]:
    """For each threshold: the share of images kept (top-1 probability >= threshold)
    and the top-1 accuracy of those kept (None when none is kept)."""
    top = conf.top1_confidence
    correct = np.asarray(conf.top1) == np.asarray(conf.expected)
    n = len(top)
    table = []
    for threshold in thresholds:
        kept = top >= threshold
        count = int(kept.sum())
        accuracy = float(correct[kept].mean()) if count else None
        table.append(ThresholdRow(float(threshold), count / n if n else 0.0, accuracy, count))
    return table


def suggest_threshold(table: list[ThresholdRow], target_accuracy: float) -> ThresholdRow | None:
    """The LOWEST threshold whose kept accuracy >= target (keeps the most images);
    None if none reaches it."""
    for row in sorted(table, key=lambda r: r.threshold):
        if row.kept_accuracy is not None and row.kept_accuracy >= target_accuracy:
            return row
    return None


# --- the figures --------------------------------------------------------------


@dataclass
class LabelStats:
    label: str
    total: int  # test images with this expected label
    correct: int  # of them, top-1 right
    sensitivity: float | None  # correct / total (= recall); None without test images
    precision: float | None  # None when never predicted
    f1: float | None


@dataclass
class Performance:
    """Every figure calc_perf prints, JSON-ready (None where a score is undefined)."""

    labels: list[str]
    images: int
    correct: int
    accuracy: float
    per_label: list[LabelStats]
    macro_f1: float
    balanced_accuracy: float
    kappa: float | None
    competition_score: float | None  # 1 - kappa, the ESA OPS-SAT competition score
    confusion: list[list[int]]  # top-1; rows expected, columns predicted (labels order)
    confusion_at_threshold: list[list[int]]  # columns: labels then "n/a"
    threshold: float
    kept: int
    coverage: float  # share of images at or above the threshold
    kept_accuracy: float | None
    mean_time_ms: float | None
    threshold_table: list[ThresholdRow]
    suggested: ThresholdRow | None
    target_accuracy: float

    def to_dict(self) -> dict:
        return _finite(asdict(self))


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _finite(value):
    """NaN -> None everywhere, so the JSON is valid."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def evaluate(
    conf: Confidences,
    threshold: float = smartcam.CONFIDENCE_THRESHOLD,
    target_accuracy: float = smartcam.DEFAULT_TARGET_ACCURACY,
) -> Performance:
    """All figures of one CSV (see the module docstring for top-1 vs at-threshold)."""
    labels = conf.labels
    expected = conf.expected
    top1 = conf.top1
    present = [label for label in labels if label in set(expected) | set(top1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accuracy = float(accuracy_score(expected, top1))
        precision, recall, f1, support = precision_recall_fscore_support(
            expected, top1, labels=labels, zero_division=np.nan)
        # Macro-F1 over the labels that occur (sklearn's default label set).
        _, _, macro_f1, _ = precision_recall_fscore_support(
            expected, top1, labels=present, average="macro", zero_division=0)
        balanced = float(balanced_accuracy_score(expected, top1))
        kappa = _none_if_nan(cohen_kappa_score(expected, top1, labels=labels))
        matrix = confusion_matrix(expected, top1, labels=labels)
    per_label = [
        LabelStats(label, int(support[i]), int(matrix[i, i]), _none_if_nan(recall[i]),
                   _none_if_nan(precision[i]), _none_if_nan(f1[i]))
        for i, label in enumerate(labels)
    ]
    table = threshold_table(conf)
    kept = conf.top1_confidence >= threshold
    correct = np.asarray(top1) == np.asarray(expected)
    times = conf.time_ms[np.isfinite(conf.time_ms)]
    return Performance(
        labels=list(labels),
        images=len(expected),
        correct=int(correct.sum()),
        accuracy=accuracy,
        per_label=per_label,
        macro_f1=float(macro_f1),
        balanced_accuracy=balanced,
        kappa=kappa,
        competition_score=None if kappa is None else 1.0 - kappa,
        confusion=matrix.tolist(),
        confusion_at_threshold=confusion_at_threshold(conf, threshold),
        threshold=float(threshold),
        kept=int(kept.sum()),
        coverage=float(kept.mean()),
        kept_accuracy=float(correct[kept].mean()) if kept.any() else None,
        mean_time_ms=float(times.mean()) if times.size else None,
        threshold_table=table,
        suggested=suggest_threshold(table, target_accuracy),
        target_accuracy=float(target_accuracy),
    )


def confusion_at_threshold(conf: Confidences, threshold: float) -> list[list[int]]:
    """The confusion matrix of what SmartCam keeps: a top-1 below ``threshold`` is
    counted in a last column, ``n/a``."""
    labels = conf.labels
    at_threshold = [label if c >= threshold else NOT_CLASSIFIED
                    for label, c in zip(conf.top1, conf.top1_confidence, strict=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix = confusion_matrix(conf.expected, at_threshold, labels=[*labels, NOT_CLASSIFIED])
    return matrix[: len(labels)].tolist()


@dataclass
class Agreement:
    """How often two runs (ground vs onboard preprocessing) give the same top-1."""

    matched: int
    agreeing: int
    share: float | None
    only_first: int
    only_second: int


def agreement(first: Confidences, second: Confidences) -> Agreement:
    """Top-1 agreement between two CSVs, images matched by filename."""
    if first.labels != second.labels:
        raise UserError(f"the two CSVs have different labels ({', '.join(first.labels)} vs "
                        f"{', '.join(second.labels)}): re-run batch_label_images.py for both")
    a = dict(zip(first.filenames, first.top1, strict=True))
    b = dict(zip(second.filenames, second.top1, strict=True))
    common = sorted(a.keys() & b.keys())
    same = sum(a[name] == b[name] for name in common)
    return Agreement(
        matched=len(common),
        agreeing=same,
        share=same / len(common) if common else None,
        only_first=len(a.keys() - b.keys()),
        only_second=len(b.keys() - a.keys()),
    )
