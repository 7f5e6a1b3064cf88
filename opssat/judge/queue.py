"""The labelling queue: what to label first among unlabelled thumbnails.

A person's time is the scarce thing, so the queue puts first the images the model
is least sure of (the smallest margin between its two top probabilities, or the
highest entropy), where a label teaches it most. Thumbnails taken seconds apart are
near-duplicates: the queue groups them into bursts with the split's own rule
(``split.time_groups``), shows each burst once, ranked by its least certain member,
so one decision can label the whole burst.

``build`` runs a model over ``data/unlabelled/`` and ``write`` makes
``data/review/unlabelled_queue.csv`` and ``unlabelled.html``, whose decisions relabel.py
takes (files named ``../unlabelled/<file>``, relative to data/all as every other).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.core.progress import bar as progress_bar
from opssat.data import images, split
from opssat.judge import decisions, html_report
from opssat.judge.confidences import ranked
from opssat.judge.infer import Classifier

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


# --- the queue of a model's unlabelled folder -------------------------------------------

QUEUE_COLUMNS = ("rank", "burst", "burst_size", "filename", "suggested_label", "confidence",
                 "margin", "entropy")


@dataclass
class Queue:
    """The model's answers on data/unlabelled, in the queue's order."""

    labels: list[str]
    files: list[Path]
    probabilities: np.ndarray
    bursts: list[Burst]
    rank: str
    preprocess: str
    unreadable: list[str]


def unlabelled_files(paths: ModelPaths) -> list[Path]:
    """The files directly in data/unlabelled/ (UserError when there are none)."""
    folder = paths.unlabelled_dir
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: run ./create_dirs.sh {paths.name} and put the "
                        "thumbnails to label there")
    files = images.list_files(folder)
    if not files:
        raise UserError(f"{folder} holds no files: put the thumbnails to label there")
    return files


def build(paths: ModelPaths, classifier: Classifier, rank: str = "margin",
          group_seconds: float = split.DEFAULT_GROUP_SECONDS,
          progress: bool | None = None) -> Queue:
    """Classify every unlabelled file (an unreadable one is left out and named) and
    order them: least sure burst first."""
    uncertainty(np.zeros((1, 2)), rank)  # an unknown ranking fails before the work
    kept, rows, unreadable = [], [], []
    files = unlabelled_files(paths)
    for path in progress_bar(files, len(files), "classifying", "img", progress):
        try:
            rows.append(classifier.classify_file(path)[0])
        except images.UnreadableImageError as err:
            unreadable.append(str(err))
            continue
        kept.append(path)
    if not kept:
        raise UserError(f"none of the files in {paths.unlabelled_dir} could be read (first: "
                        f"{unreadable[0]}): put JPEG/PNG/BMP thumbnails there")
    probabilities = np.asarray(rows, dtype=np.float64)
    return Queue(list(classifier.labels), kept, probabilities,
                 bursts(kept, probabilities, rank, group_seconds), rank,
                 classifier.preprocessing.mode, unreadable)


def relabel_name(paths: ModelPaths, path: Path) -> str:
    """A file's name as relabel.py takes it: relative to data/all."""
    return Path(os.path.relpath(path, paths.all_dir)).as_posix()


def csv_text(paths: ModelPaths, found: Queue) -> str:
    """unlabelled_queue.csv: every file, burst by burst, the least sure first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(QUEUE_COLUMNS)
    margin, entropy = margins(found.probabilities), entropies(found.probabilities)
    rank = 0
    for number, burst in enumerate(found.bursts, start=1):
        for row in burst.rows:
            rank += 1
            probs = found.probabilities[row]
            writer.writerow([rank, number, burst.size, relabel_name(paths, found.files[row]),
                             found.labels[int(np.argmax(probs))], f"{probs.max():.6f}",
                             f"{margin[row]:.6f}", f"{entropy[row]:.6f}"])
    return buffer.getvalue()


def _card(paths: ModelPaths, found: Queue, number: int, burst: Burst, pair: html_report.Pair,
          ) -> tuple[str, decisions.Item]:
    """One burst's card: its least sure member, the burst's size and the decision."""
    esc = html_report.esc
    row = burst.rows[0]
    path, probs = found.files[row], found.probabilities[row]
    suggested = found.labels[int(np.argmax(probs))]
    members = tuple(relabel_name(paths, found.files[r]) for r in burst.rows[1:])
    item = decisions.Item(relabel_name(paths, path), "", suggested, members)
    body = html_report.image_pair(pair, html_report.relative_url(path, paths.unlabelled_html),
                                  [found.preprocess])
    others = "".join(f"<li>{esc(found.files[r].name)}</li>" for r in burst.rows[1:])
    size = (f"<details><summary>burst of {burst.size}</summary><ol>{others}</ol></details>"
            if members else "<div>single image</div>")
    caption = (f'<span class="name">{esc(path.name)}</span>{size}suggested '
               f"<b>{esc(suggested)}</b>, margin {margins(probs[None])[0]:.3f}"
               + html_report.top_k(ranked(probs, found.labels, 3), suggested, "top-3")
               + decisions.controls(f"d{number}", item, found.labels))
    data = {"unsure": f"{burst.uncertainty:.6f}", "name": path.name}
    return html_report.card(body, caption, data, ["low"]), item


def render_page(paths: ModelPaths, found: Queue, queue_csv: str,
                outputs: atomic.OutputSet | None = None) -> str:
    """unlabelled.html: one card per burst, least sure first, each to be decided."""
    esc = html_report.esc
    page = paths.unlabelled_html
    files = html_report.ImageFiles(page)
    for burst in found.bursts:
        files.want(found.files[burst.rows[0]], [found.preprocess])
    pairs = files.write(outputs)
    cards, items = [], {}
    for number, burst in enumerate(found.bursts):
        card, items[f"d{number}"] = _card(paths, found, number, burst,
                                          pairs[found.files[burst.rows[0]]])
        cards.append(card)
    listed = html_report.relative_url(paths.unlabelled_queue_csv, page)
    key = decisions.run_key(paths.name, "unlabelled", [queue_csv])
    body = [
        f"<h1>Unlabelled thumbnails of model <code>{esc(paths.name)}</code></h1>",
        f"<p>{len(found.files)} images in <code>{esc(paths.unlabelled_dir)}</code>, "
        f"{len(found.bursts)} bursts (taken within seconds of each other; a decision applies "
        "to the whole burst unless you untick it), the ones the model is least sure of first "
        f"(by {esc(found.rank)}; {esc(found.preprocess)} input). The list: "
        f'<a href="{esc(listed)}">{esc(paths.unlabelled_queue_csv.name)}</a>.</p>',
        decisions.howto(paths.name),
        decisions.toolbar(found.labels),
        html_report.sort_buttons("queue", _SORTS),
        html_report.gallery("queue", cards),
        decisions.data_block(key, found.labels, items),
    ]
    return html_report.page(f"Unlabelled thumbnails of {paths.name}", body)


_SORTS = [("least sure first", "unsure", -1), ("name", "name", 1)]


def outputs(paths: ModelPaths) -> list[Path]:
    """What write replaces (checked writable before the work)."""
    return [paths.unlabelled_queue_csv, paths.unlabelled_html,
            html_report.files_dir(paths.unlabelled_html)]


def write(paths: ModelPaths, found: Queue) -> None:
    """The queue CSV and its page (with unlabelled_files/), replacing the old ones
    together."""
    staged = atomic.OutputSet()
    try:
        text = csv_text(paths, found)
        atomic.write_text(paths.unlabelled_queue_csv, text, staged)
        atomic.write_text(paths.unlabelled_html, render_page(paths, found, text, staged), staged)
        staged.commit()
    finally:
        staged.discard()
