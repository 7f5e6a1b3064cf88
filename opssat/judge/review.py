"""Suspected label errors: cleanlab's ``find_label_issues`` on out-of-fold
probabilities, written as ``data/review/label_issues.csv`` and a review page.

Why out-of-fold: a model judging the very images it learned from agrees with
their labels, right or wrong; cross-validation's held-out probabilities do
not. Without them, the test CSV is the next best thing (every test image was
held out too, but the test set is small).
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.judge import decisions, html_report
from opssat.judge.confidences import Confidences, load_confidences, ranked, read_preprocessing

ISSUE_COLUMNS = ("filename", "given_label", "suggested_label", "score")


@dataclass(frozen=True)
class Source:
    """The CSV whose probabilities are reviewed."""

    csv_path: Path
    preprocess: str  # the preprocessing its probabilities were computed with
    kind: str  # "out-of-fold" or "test set"


def find_source(paths: ModelPaths) -> Source:
    """Out-of-fold probabilities first (on-board, then ground), else the test CSV."""
    candidates = [
        Source(paths.oof_csv("onboard"), "onboard", "out-of-fold"),
        Source(paths.oof_csv("ground"), "ground", "out-of-fold"),
        Source(paths.confidences_csv("onboard"), "onboard", "test set"),
        Source(paths.confidences_csv("ground"), "ground", "test set"),
    ]
    for source in candidates:
        if source.csv_path.is_file():
            return source
    raise UserError(f"no probabilities to review: neither {paths.oof_csv('onboard')} (the "
                    f"cross-validation's out-of-fold CSV) nor {paths.confidences_csv()} exists; "
                    f"run batch_label_images.py {paths.name} first")


@dataclass(frozen=True)
class Suspect:
    """One image whose label cleanlab doubts."""

    row: int  # in the source CSV
    filename: str  # relative to data/all when the file is there, else as in the CSV
    path: Path | None  # the image file, None when not found
    given: str
    suggested: str
    score: float  # cleanlab's label quality: lower is more suspect


@dataclass
class Review:
    source: Source
    confidences: Confidences
    suspects: list[Suspect]
    notes: list[str]


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Rows that sum to 1 exactly, as cleanlab requires (int8 models round a little)."""
    clipped = np.clip(probabilities, 0.0, None)
    sums = clipped.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise UserError("a row of the probabilities CSV is all zeros: re-run the classification")
    return clipped / sums


def label_issues(conf: Confidences) -> tuple[list[tuple[int, float]], list[str]]:
    """(row, label quality score) of each suspected label error, most suspect first,
    and cleanlab's warnings as notes."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {label: i for i, label in enumerate(conf.labels)}
    given = np.asarray([index[label] for label in conf.expected])
    probabilities = _normalised(conf.probabilities)
    if len(given) < 2:
        raise UserError(f"{len(given)} image to review: cleanlab needs several per label")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rows = find_label_issues(given, probabilities,
                                     return_indices_ranked_by="self_confidence")
        except ValueError as err:
            raise UserError(f"cleanlab cannot review these probabilities: {err}") from err
        scores = get_label_quality_scores(given, probabilities, method="self_confidence")
    notes = sorted({str(w.message) for w in caught})
    return [(int(r), float(scores[r])) for r in rows], notes


def review(paths: ModelPaths, source: Source | None = None) -> Review:
    """Find the suspected label errors of the model's probabilities CSV."""
    source = source or find_source(paths)
    conf = load_confidences(source.csv_path)
    found, notes = label_issues(conf)
    suspects = []
    for row, score in found:
        name, given = conf.filenames[row], conf.expected[row]
        path = html_report.locate_image(name, given, [paths.all_dir, paths.test_dir])
        in_all = path is not None and path.parent.parent == paths.all_dir
        filename = f"{given}/{path.name}" if in_all else name
        suggested = conf.labels[int(np.argmax(conf.probabilities[row]))]
        suspects.append(Suspect(row, filename, path, given, suggested, score))
    return Review(source, conf, suspects, notes)


def issues_csv_text(suspects: list[Suspect]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(ISSUE_COLUMNS)
    for s in suspects:
        writer.writerow([s.filename, s.given, s.suggested, f"{s.score:.6f}"])
    return buffer.getvalue()


_SORTS = [("score ↑ (most suspect first)", "score", 1), ("score ↓", "score", -1),
          ("name", "name", 1)]


def render_page(paths: ModelPaths, result: Review,
                outputs: atomic.OutputSet | None = None) -> str:
    """review.html: each suspect's thumbnail beside the model's input, its given and
    suggested labels, the score and the top-3."""
    esc = html_report.esc
    page = paths.review_html
    conf, source = result.confidences, result.source
    seen = read_preprocessing(source.csv_path)  # what its model saw, when recorded
    files = html_report.ImageFiles(page, inputs={source.preprocess: seen} if seen else None)
    for s in result.suspects:
        if s.path is not None:
            files.want(s.path, [source.preprocess])
    pairs = files.write(outputs)
    cards, items = [], {}
    for number, s in enumerate(result.suspects):
        original = None if s.path is None else html_report.relative_url(s.path, page)
        body = html_report.image_pair(pairs.get(s.path) if s.path else None, original,
                                      [source.preprocess])
        top = ranked(conf.probabilities[s.row], conf.labels, 3)
        caption = (f'<span class="name">{esc(s.filename)}</span><br>given <b>{esc(s.given)}'
                   f"</b>, suggested <b>{esc(s.suggested)}</b><br>score {s.score:.3f}"
                   + html_report.top_k(top, s.given, "top-3"))
        if s.path is not None and s.path.parent.parent == paths.all_dir:
            items[f"d{number}"] = decisions.Item(s.filename, s.given, s.suggested)
            caption += decisions.controls(f"d{number}", items[f"d{number}"], conf.labels)
        cards.append(html_report.card(body, caption, {"score": f"{s.score:.6f}",
                                                      "name": s.filename}, ["wrong"]))
    issues = html_report.relative_url(paths.label_issues_csv, page)
    key = decisions.run_key(paths.name, "review", [str(source.csv_path),
                                                   issues_csv_text(result.suspects)])
    body = [
        f"<h1>Suspected label errors of model <code>{esc(paths.name)}</code></h1>",
        f"<p>Probabilities: <code>{esc(source.csv_path)}</code> ({esc(source.kind)}, "
        f"{esc(source.preprocess)} preprocessing), {len(conf.filenames)} images; cleanlab's "
        f"<code>find_label_issues</code> flags <b>{len(result.suspects)}</b>. Score: cleanlab's "
        "label quality (the probability of the given label), lower is more suspect.</p>",
        f'<p>The list: <a href="{esc(issues)}">{esc(paths.label_issues_csv.name)}</a>.</p>',
        decisions.howto(paths.name),
    ]
    if source.kind != "out-of-fold":
        body.append('<p class="muted">Without out-of-fold probabilities (cross-validation), '
                    "these come from the test set: a weak model's own mistakes look like label "
                    "errors here, so look before you move.</p>")
    body += [f'<p class="muted">cleanlab: {esc(note)}</p>' for note in result.notes]
    body += [decisions.toolbar(conf.labels), html_report.sort_buttons("suspects", _SORTS),
             html_report.gallery("suspects", cards), decisions.data_block(key, conf.labels, items)]
    return html_report.page(f"Label review of {paths.name}", body)


def outputs(paths: ModelPaths) -> list[Path]:
    """What write_review replaces (checked writable before the work)."""
    return [paths.label_issues_csv, paths.review_html, html_report.files_dir(paths.review_html)]


def write_review(paths: ModelPaths, result: Review) -> tuple[Path, Path]:
    """label_issues.csv and review.html (with review_files/) in data/review/, staged
    and then replacing the old ones together."""
    outputs = atomic.OutputSet()
    try:
        atomic.write_text(paths.label_issues_csv, issues_csv_text(result.suspects), outputs)
        atomic.write_text(paths.review_html, render_page(paths, result, outputs), outputs)
        outputs.commit()
    finally:
        outputs.discard()
    return paths.label_issues_csv, paths.review_html
