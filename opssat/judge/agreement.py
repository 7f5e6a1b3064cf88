"""The one judge of a runtime's answers: are they probabilities, do they depend on the
image, and does a second runtime (SmartCam's TFLite 2.5 binaries) agree with the first
(LiteRT) on the same images?

Comparing only the top-1 let a broken model through: a TensorFlow-default per-channel
int8 model answers 0.332031 for every label on every image in SmartCam's build, and
the first label then wins every "tie". So the answers themselves are judged first.

API (every function returns a one-line reason, or None when all is well):

- ``answer_problem(probs, labels, where="", source="")``: one answer is not a
  probability vector: a value that is not finite, outside [0, 1], or a sum off 1 by
  more than ``sum_tolerance(len(labels))``.
- ``matrix_problem(matrix, labels, names, source)``: ``answer_problem`` for each row,
  then ``constant_answers_problem``.
- ``constant_answers_problem(matrix, labels, source)``: the answers do not depend on
  the image: every label has the same value in every answer, or (two images or more)
  every image got the same answer (within ``TIE``).
- ``check(matrix, labels, names, source)``: ``matrix_problem`` as a ``UserError``.
- ``compare(reference, candidate, labels, names, ...) -> Agreement``: both matrices
  judged with ``matrix_problem``, then per image: the top-1 must match (a tie within
  ``TIE`` is no difference) AND the largest probability difference must stay within
  ``BOUND``. ``Agreement.problem`` is the first line to refuse on (None when they agree);
  ``Agreement.differing`` lists the images that differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from opssat.core.errors import UserError

#: Confidences this close count as equal (SmartCam prints six decimals).
TIE = 1e-6
#: An int8 model's outputs come in steps of 1/256: each value may be half a step off,
#: so the sum of n of them may be off 1 by n/512, beside float rounding.
INT8_STEP = 1.0 / 256
#: The largest probability difference allowed between two runtimes on one image.
#: Measured in SmartCam's k8 build against LiteRT on real EfficientNet-Lite0 models of
#: the bundled sample (docs/smartcam_runtime.md, bench/bench_smartcam.py): the toolkit's
#: int8 and dynamic exports differ by up to 0.031 (about 0.08 on issue 28's model:
#: TFLite 2.5's kernels and one-level JPEG decode differences), TensorFlow's default
#: per-channel int8 by 0.55. Twice the largest honest figure.
BOUND = 0.15
#: What every answer must be, quoted in each refusal.
RULE = "every answer must be finite, within [0, 1] and sum to 1"


def sum_tolerance(n_labels: int) -> float:
    """How far the sum of ``n_labels`` confidences may be from 1 (int8 rounding)."""
    return 0.01 + n_labels * INT8_STEP / 2


def _shown(value: float) -> str:
    return f"{value:.6g}"


def answer_problem(probs: Sequence[float] | np.ndarray, labels: Sequence[str],
                   where: str = "", source: str = "the model") -> str | None:
    """Why one answer (confidences in ``labels`` order) is not a probability vector."""
    values = np.asarray(probs, dtype=np.float64).reshape(-1)
    on = f" on {where}" if where else ""
    if values.size != len(labels):
        return f"{source} gave {values.size} confidences{on}, not one per label ({len(labels)})"
    for label, value in zip(labels, values, strict=True):
        if not np.isfinite(value):
            return f"{source} answered {_shown(value)} for {label!r}{on}: not a number ({RULE})"
        if not -TIE <= value <= 1 + TIE:
            return (f"{source} answered {_shown(value)} for {label!r}{on}: outside [0, 1] "
                    f"({RULE})")
    total = float(values.sum())
    if abs(total - 1.0) > sum_tolerance(len(labels)):
        return (f"{source}'s confidences{on} sum to {total:.4f}, not 1 (within "
                f"{sum_tolerance(len(labels)):.3f}): not probabilities ({RULE})")
    return None


def constant_answers_problem(matrix: np.ndarray, labels: Sequence[str],
                             source: str = "the model") -> str | None:
    """Why answers (one row per image) do not depend on the image, or None."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.size == 0:
        return None
    matrix = matrix.reshape(matrix.shape[0], -1)
    count = f"every one of the {len(matrix)} images" if len(matrix) > 1 else "the only image"
    spread = matrix.max(axis=1) - matrix.min(axis=1)
    if np.all(spread <= TIE):
        return (f"{source} gives every label the same confidence ({_shown(matrix[0, 0])}) "
                f"on {count}: its answers do not depend on the image (a TensorFlow-default "
                "per-channel int8 model does this in TFLite 2.5)")
    if len(matrix) > 1 and np.all(np.abs(matrix - matrix[0]) <= TIE):
        answer = ", ".join(f"{label} {_shown(v)}" for label, v in zip(labels, matrix[0],
                                                                          strict=False))
        return (f"{source} gives {count} the same answer ({answer}): its answers do not "
                "depend on the image")
    return None


def matrix_problem(matrix: np.ndarray, labels: Sequence[str],
                   names: Sequence[str] | None = None, source: str = "the model") -> str | None:
    """The first answer that is not a probability vector, else whether the answers
    depend on the image; None when they are fine."""
    matrix = np.asarray(matrix, dtype=np.float64).reshape(-1, len(labels))
    names = names if names is not None else [f"image {i + 1}" for i in range(len(matrix))]
    for name, row in zip(names, matrix, strict=True):
        if problem := answer_problem(row, labels, name, source):
            return problem
    return constant_answers_problem(matrix, labels, source)


def check(matrix: np.ndarray, labels: Sequence[str], names: Sequence[str] | None = None,
          source: str = "the model") -> None:
    """``matrix_problem`` as a UserError (its one line), for callers that refuse."""
    if problem := matrix_problem(matrix, labels, names, source):
        raise UserError(problem)


@dataclass
class Agreement:
    """Two runtimes' answers on the same images, judged."""

    labels: list[str]
    names: list[str]
    reference: np.ndarray
    candidate: np.ndarray
    reference_name: str = "LiteRT"
    candidate_name: str = "SmartCam"
    bound: float = BOUND
    #: Why the answers cannot be compared (not probabilities, or image-independent).
    answers_problem: str | None = None
    differing: list[str] = field(default_factory=list)

    @property
    def largest_difference(self) -> float:
        if not self.names:
            return 0.0
        return float(np.abs(self.candidate - self.reference).max())

    @property
    def agreeing(self) -> int:
        return len(self.names) - len(self.differing)

    @property
    def problem(self) -> str | None:
        """The one line to refuse on, or None when the runtimes agree."""
        if self.answers_problem:
            return self.answers_problem
        if not self.differing:
            return None
        shown = "; ".join(self.differing[:5]) + ("; ..." if len(self.differing) > 5 else "")
        return (f"{self.candidate_name} differs from {self.reference_name} on "
                f"{len(self.differing)} of {len(self.names)} images ({shown}); they agree "
                f"when the top-1 matches and no probability differs by more than {self.bound:g}")


def _top1_differs(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int] | None:
    """(candidate's top-1, reference's top-1) when they differ beyond a tie."""
    c, r = int(candidate.argmax()), int(reference.argmax())
    if c != r and reference[c] < reference[r] - TIE and candidate[r] < candidate[c] - TIE:
        return c, r
    return None


def image_difference(name: str, reference: np.ndarray, candidate: np.ndarray,
                     labels: Sequence[str], bound: float = BOUND,
                     reference_name: str = "LiteRT", candidate_name: str = "SmartCam"
                     ) -> str | None:
    """'<image>: SmartCam <label>, LiteRT <label>' (top-1) or '<image>: <label> <a> vs
    <b>' (a probability beyond ``bound``), or None when the two answers agree."""
    if flipped := _top1_differs(reference, candidate):
        c, r = flipped
        return f"{name}: {candidate_name} {labels[c]}, {reference_name} {labels[r]}"
    gaps = np.abs(candidate - reference)
    worst = int(gaps.argmax())
    if gaps[worst] > bound:
        return (f"{name}: {labels[worst]} {candidate[worst]:.3f} in {candidate_name}, "
                f"{reference[worst]:.3f} in {reference_name}")
    return None


def compare(reference: np.ndarray, candidate: np.ndarray, labels: Sequence[str],
            names: Sequence[str], bound: float = BOUND, reference_name: str = "LiteRT",
            candidate_name: str = "SmartCam") -> Agreement:
    """Judge ``candidate``'s answers against ``reference``'s (rows: ``names``)."""
    shape = (len(names), len(labels))
    reference = np.asarray(reference, dtype=np.float64).reshape(shape)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(shape)
    problem = (matrix_problem(candidate, labels, names, candidate_name)
               or matrix_problem(reference, labels, names, reference_name))
    differing = [] if problem else [
        line for name, r, c in zip(names, reference, candidate, strict=True)
        if (line := image_difference(name, r, c, labels, bound, reference_name,
                                     candidate_name))]
    return Agreement(list(labels), list(names), reference, candidate, reference_name,
                     candidate_name, bound, problem, differing)
