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
    #: Calibration of the probabilities (see ``calibration``): ECE, Brier score, NLL.
    ece: float | None = None
    brier: float | None = None
    nll: float | None = None

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
        **_calibration_fields(conf),
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


def calibration_of(conf: Confidences) -> Calibration | None:
    """``calibration`` of a CSV's probabilities (its rows with a known label), or None."""
    known = [i for i, label in enumerate(conf.expected) if label in conf.labels]
    if not known:
        return None
    return calibration(np.asarray(conf.probabilities)[known],
                       targets_of([conf.expected[i] for i in known], conf.labels))


def _calibration_fields(conf: Confidences) -> dict[str, float | None]:
    found = calibration_of(conf)
    if found is None:
        return {"ece": None, "brier": None, "nll": None}
    return {"ece": found.ece, "brier": found.brier, "nll": found.nll}


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


# --- calibration: do the probabilities mean what they say? ----------------------------

#: Equal-width bins of the top-1 probability for the expected calibration error.
ECE_BINS = 10
#: Probabilities are clipped here before a logarithm (a model may say exactly 0).
_EPS = 1e-12


@dataclass
class Calibration:
    """ECE (10 equal-width bins of the top-1 probability, weighted by their images),
    the multi-class Brier score (mean squared error of the probability vector, 0 to 2)
    and the negative log-likelihood of the right label (natural log, mean)."""

    ece: float
    brier: float
    nll: float
    #: Per bin: (mean top-1 probability, its accuracy, images); empty bins left out.
    bins: list[tuple[float, float, int]]

    def line(self) -> str:
        return f"ECE {self.ece:.3f}  Brier {self.brier:.3f}  NLL {self.nll:.3f}"


def calibration(probabilities: np.ndarray, targets: Sequence[int],
                bins: int = ECE_BINS) -> Calibration:
    """Calibration figures of (n, labels) ``probabilities`` against label indices."""
    probs = np.asarray(probabilities, np.float64)
    targets = np.asarray(targets, np.int64)
    if not len(probs):
        return Calibration(math.nan, math.nan, math.nan, [])
    top = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    # Bin i holds (i/bins, (i+1)/bins]; a top-1 probability of 0 cannot occur. The 1e-6
    # keeps a float32 0.8 (0.80000001) in the bin that ends at 0.8.
    index = np.clip(np.ceil(top * bins - 1e-6).astype(np.int64) - 1, 0, bins - 1)
    found, ece = [], 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            confidence, accuracy = float(top[members].mean()), float(correct[members].mean())
            ece += members.mean() * abs(confidence - accuracy)
            found.append((confidence, accuracy, int(members.sum())))
    onehot = np.eye(probs.shape[1])[targets]
    brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(probs)), targets], _EPS, 1))))
    return Calibration(float(ece), brier, nll, found)


def targets_of(expected: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """Label indices of ``expected`` in ``labels`` order."""
    where = {label: i for i, label in enumerate(labels)}
    return np.asarray([where[label] for label in expected], np.int64)


# --- temperature scaling (Guo et al., 2017) --------------------------------------------

#: The temperatures searched: wide enough for any head this toolkit trains.
TEMPERATURE_RANGE = (0.1, 10.0)


def scale_temperature(members: Sequence[np.ndarray] | np.ndarray, temperature: float
                      ) -> np.ndarray:
    """The probabilities the model gives once every member's logits are divided by
    ``temperature``: softmax(log p / T), averaged over members (an ensemble averages its
    members' softmax outputs). ``members``: one (n, labels) array or a list of them."""
    arrays = [members] if isinstance(members, np.ndarray) else list(members)
    scaled = []
    for probs in arrays:
        logits = np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1)) / temperature
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        scaled.append(exp / exp.sum(axis=1, keepdims=True))
    return np.mean(scaled, axis=0)


def fit_temperature(members: Sequence[np.ndarray] | np.ndarray, targets: Sequence[int]
                    ) -> float:
    """The temperature T that minimises the negative log-likelihood of ``targets`` under
    ``scale_temperature(members, T)`` (bounded scalar search over log T). With no top-1
    error the likelihood only grows as T falls to the bound, so there is nothing to fit:
    T = 1 (a small validation split without a miss says nothing about confidence)."""
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets, np.int64)
    if not len(targets) or np.all(scale_temperature(members, 1.0).argmax(axis=1) == targets):
        return 1.0

    def nll(log_t: float) -> float:
        probs = scale_temperature(members, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(probs[np.arange(len(targets)), targets],
                                             _EPS, 1))))

    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(nll, bounds=(low, high), method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def cross_fitted(members: Sequence[np.ndarray] | np.ndarray, targets: Sequence[int],
                 groups: Sequence[int]) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold temperature scaling: each group's (fold's) probabilities scaled by the
    T fitted on every other group, so no image calibrates itself. Returns the scaled
    probabilities and each group's T."""
    arrays = [members] if isinstance(members, np.ndarray) else list(members)
    targets, groups = np.asarray(targets, np.int64), np.asarray(groups)
    out = np.zeros_like(np.asarray(arrays[0], np.float64))
    temperatures = []
    for group in np.unique(groups):
        rest = groups != group
        t = fit_temperature([a[rest] for a in arrays], targets[rest])
        out[~rest] = scale_temperature([a[~rest] for a in arrays], t)
        temperatures.append(t)
    return out, temperatures
