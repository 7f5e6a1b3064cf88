"""The confidences CSV (``confidences.csv``): one row per image, written by batch and
single-image labelling and by cross-validation, read by the metrics, the package's
threshold advice and the label review. Its columns are the original toolkit's.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.data.preprocess import Preprocessing

#: What ``predicted_label`` says when the top-1 confidence is below the threshold.
NOT_CLASSIFIED = "n/a"
#: The fixed columns, as the original toolkit wrote them; one column per label
#: (labels.txt order) follows.
COLUMNS = ("filename", "time_ms", "predicted_label", "expected_label")


def check_threshold(value: float, flag: str = "--threshold") -> float:
    """``value`` when it is a confidence in [0, 1], else a UserError naming ``flag``."""
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise UserError(f"{flag} must be between 0 and 1, not {value}")
    return value


def preprocessing_file(csv_path: Path) -> Path:
    """The sidecar beside a CSV that says what input its model saw
    (``confidences_onboard.csv`` -> ``confidences_onboard.preprocessing.json``): the
    CSV keeps the original toolkit's columns."""
    return csv_path.with_suffix(".preprocessing.json")


def write_preprocessing(csv_path: Path, preprocessing: Preprocessing,
                        outputs: atomic.OutputSet | None = None) -> Path:
    """Write ``csv_path``'s sidecar (staged in ``outputs`` when given, to be committed
    with the CSV)."""
    sidecar = preprocessing_file(csv_path)
    atomic.write_text(sidecar, json.dumps(preprocessing.to_dict(), indent=2) + "\n", outputs)
    return sidecar


def read_preprocessing(csv_path: Path) -> Preprocessing | None:
    """What ``write_preprocessing`` wrote beside ``csv_path``; None without a sidecar
    (a CSV of an older run, or one made elsewhere)."""
    sidecar = preprocessing_file(Path(csv_path))
    if not sidecar.is_file():
        return None
    try:
        values = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{sidecar} is not readable JSON ({err}): delete it or re-run "
                        "batch_label_images.py") from err
    if not isinstance(values, dict):
        raise UserError(f"{sidecar} is not a preprocessing record: delete it or re-run "
                        "batch_label_images.py")
    return Preprocessing.from_dict(values)


def header(labels: Sequence[str]) -> list[str]:
    """The CSV's first row for a model with ``labels``."""
    return [*COLUMNS, *labels]


def row(filename: str, time_ms: float, predicted: str, expected: str,
        probabilities: Sequence[float]) -> list[str]:
    """One image's row; confidences in full precision (``repr``) so the reader gets
    back exactly what the model gave."""
    return [filename, f"{time_ms:.3f}", predicted, expected,
            *(repr(float(p)) for p in probabilities)]


def append_row(csv_path: Path, labels: Sequence[str], values: Sequence[str]) -> None:
    """Append one row, writing the header first when the file is new or empty.

    Each writer holds an exclusive lock (fcntl) on the file while it checks the
    header and writes, so concurrent runs neither interleave nor lose rows. A CSV
    written for other labels is refused rather than mixed.
    """
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    wanted = header(labels)
    existed = csv_path.exists()
    with csv_path.open("a+", newline="", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            try:
                first = handle.readline()
            except UnicodeDecodeError as err:
                raise UserError(f"{csv_path} is not a UTF-8 confidences CSV: move it "
                                "away, then run again") from err
            text = io.StringIO()
            writer = csv.writer(text)
            if not first.strip():
                handle.truncate(0)
                writer.writerow(wanted)
            elif next(csv.reader([first])) != wanted:
                raise UserError(f"{csv_path} has the columns {first.strip()!r}, not this "
                                f"model's {','.join(wanted)!r}: move it away (or re-run "
                                "batch_label_images.py), then run again")
            else:
                with csv_path.open("rb+") as raw:
                    dropped = _end_last_line(raw, len(wanted))
                if dropped is not None:
                    warn(f"{csv_path}: dropped its cut-off last line {dropped[:60]!r} (a run "
                         "stopped while writing it)")
            writer.writerow(values)
            try:
                atomic.append_whole(handle.fileno(), text.getvalue().encode("utf-8"))
            except OSError:
                if not existed:
                    csv_path.unlink(missing_ok=True)  # leave no empty CSV behind
                raise
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _end_last_line(raw: BinaryIO, fields: int) -> str | None:
    """Make the file end with a whole row, so a new row never glues onto a torn one:
    a complete last row without its newline gets one; a row cut off by a crash
    (fewer fields) is dropped and returned for the caller's warning. Reads only the
    file's tail. Called under the lock."""
    size = raw.seek(0, os.SEEK_END)
    if size == 0:
        return None
    raw.seek(size - 1)
    if raw.read(1) == b"\n":
        return None
    start, data = atomic.last_line(raw, size)
    last = data.decode("utf-8", errors="replace")
    try:
        whole = len(next(csv.reader([last]))) == fields
    except csv.Error:
        whole = False
    if whole:
        raw.seek(size)
        raw.write(b"\r\n")
        return None
    raw.truncate(start)
    return last


def ranked(probabilities: np.ndarray, labels: list[str],
           top_k: int | None = None) -> list[tuple[str, float]]:
    """(label, confidence) pairs, most confident first; ties keep labels.txt order."""
    order = np.argsort(-probabilities, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(labels[i], float(probabilities[i])) for i in order]


@dataclass
class Confidences:
    """One confidences.csv: a row per image, a probability column per label."""

    filenames: list[str]
    expected: list[str]
    predicted: list[str]  # "n/a" below threshold
    probabilities: np.ndarray  # (n, len(labels)) float
    labels: list[str]
    time_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def top1(self) -> list[str]:
        """The most probable label of each image, whatever its confidence."""
        return [self.labels[i] for i in np.argmax(self.probabilities, axis=1)]

    @property
    def top1_confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)


def load_confidences(csv_path: Path) -> Confidences:
    """Read and check a CSV written by batch_label_images.py (UserError on missing
    columns, unknown labels or non-numeric values)."""
    csv_path = Path(csv_path)
    rows = _read_rows(csv_path)
    header = rows[0]
    labels = _labels_of(csv_path, header)
    body = [r for r in rows[1:] if r]
    if not body:
        raise UserError(f"{csv_path} has no images: put test images in data/test/<label>/ "
                        "and re-run batch_label_images.py")
    col = {name: i for i, name in enumerate(header)}
    label_cols = [col[label] for label in labels]
    filenames, expected, predicted = [], [], []
    probabilities = np.zeros((len(body), len(labels)))
    times = np.zeros(len(body))
    for n, row in enumerate(body):
        where = f"{csv_path} line {n + 2}"
        if len(row) != len(header):
            raise UserError(f"{where} has {len(row)} fields, the header "
                            f"{len(header)}: re-run batch_label_images.py")
        exp, pred = row[col["expected_label"]], row[col["predicted_label"]]
        _check_labels(where, exp, pred, labels)
        try:
            probabilities[n] = [float(row[i]) for i in label_cols]
            times[n] = float(row[col["time_ms"]]) if row[col["time_ms"]] else math.nan
        except ValueError as err:
            raise UserError(f"{where}: {err}: re-run batch_label_images.py") from err
        if not np.all((probabilities[n] >= 0) & (probabilities[n] <= 1)):  # NaN fails too
            raise UserError(f"{where}: a confidence is not a number from 0 to "
                            "1: re-run batch_label_images.py")
        filenames.append(row[col["filename"]])
        expected.append(exp)
        predicted.append(pred)
    return _each_image_once(csv_path, Confidences(filenames, expected, predicted,
                                                  probabilities, labels, times))


def _each_image_once(csv_path: Path, conf: Confidences) -> Confidences:
    """``conf`` with one row per image, its last (the newest: ``label_image.py -n``
    appends), saying so when an image had several: six rows of one image are not six
    right answers."""
    last = {name: n for n, name in enumerate(conf.filenames)}
    if len(last) == len(conf.filenames):
        return conf
    counts = Counter(conf.filenames)
    repeated = [name for name, count in counts.items() if count > 1]
    warn(f"{csv_path} has {len(conf.filenames) - len(last)} repeated row(s) of "
         f"{len(repeated)} image(s) (first: {repeated[0]}, {counts[repeated[0]]} rows): each "
         "image counts once, as its last row")
    keep = sorted(last.values())
    return Confidences([conf.filenames[n] for n in keep], [conf.expected[n] for n in keep],
                       [conf.predicted[n] for n in keep], conf.probabilities[keep],
                       conf.labels, conf.time_ms[keep])


def _read_rows(csv_path: Path) -> list[list[str]]:
    """The CSV's rows, header first (UserError when missing, not UTF-8 or empty)."""
    if not csv_path.is_file():
        raise UserError(f"{csv_path} not found: run batch_label_images.py first")
    try:
        # utf-8-sig: a spreadsheet that saved the CSV may have put a BOM in front.
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except UnicodeDecodeError as err:
        raise UserError(f"{csv_path} is not UTF-8 text (byte {err.start}): save it as UTF-8 "
                        "or re-run batch_label_images.py") from err
    if not rows:
        raise UserError(f"{csv_path} is empty: re-run batch_label_images.py")
    return rows


def _labels_of(csv_path: Path, header: list[str]) -> list[str]:
    """The label columns of a header that has every fixed column, each name once."""
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise UserError(f"{csv_path} lacks the column(s) {', '.join(missing)}: "
                        "re-run batch_label_images.py to write a complete CSV")
    labels = [c for c in header if c not in COLUMNS]
    if not labels:
        raise UserError(f"{csv_path} has no label columns after {', '.join(COLUMNS)}: "
                        "re-run batch_label_images.py")
    if len(set(labels)) != len(labels) or len(set(header)) != len(header):
        raise UserError(f"{csv_path} repeats a column name: re-run batch_label_images.py")
    return labels


def _check_labels(where: str, expected: str, predicted: str, labels: list[str]) -> None:
    """A row's expected label must be one of ``labels``; its predicted one too, or n/a."""
    if expected not in labels:
        raise UserError(f"{where}: unknown expected label {expected!r} (labels: "
                        f"{', '.join(labels)}): fix the test folder names and re-run")
    if predicted not in labels and predicted != NOT_CLASSIFIED:
        raise UserError(f"{where}: unknown predicted label {predicted!r} "
                        f"(labels: {', '.join(labels)}, {NOT_CLASSIFIED}): re-run "
                        "batch_label_images.py")
