"""Decisions on the pages: what review.html, report.html and unlabelled.html put
beside each image so that a person can accept the model's suggestion, pick another
label or keep the current one (by click or key), and download the decisions as the
``filename,new_label`` CSV that relabel.py takes.

The page's one script (``html_report.SCRIPT``, allowed by its hash) does the work in
the browser; this module writes what it reads: a JSON block (inert: a script of type
application/json never runs, and ``<`` ``>`` ``&`` are escaped in it) with the labels
and each card's file, current and suggested label (and its burst), the buttons of
each card, and the bar with the counter and the download button. Decisions are kept
in the browser's local storage under the page's key (model, page, a digest of the
run it shows), so they survive a reload and never leak into another run's page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opssat.data.relabel import REVIEWED_COLUMNS
from opssat.judge import html_report

#: The name of the downloaded file (relabel.py <model> reviewed.csv).
CSV_NAME = "reviewed.csv"
#: Labels 1-9 have a key each; more labels are picked by click.
KEYED_LABELS = 9


@dataclass(frozen=True)
class Item:
    """One card's decision: ``file`` as relabel.py takes it (relative to data/all:
    ``<label>/<file>``, or ``../unlabelled/<file>``); ``current`` is "" for an
    unlabelled file; ``members``: the rest of its burst, decided with it on request."""

    file: str
    current: str
    suggested: str
    members: tuple[str, ...] = ()


def run_key(model: str, page: str, texts: Iterable[str]) -> str:
    """The local-storage key of a page: its model, kind and a digest of what it shows."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return f"{model}/{page}/{digest.hexdigest()[:16]}"


def _json_block(value: object) -> str:
    """JSON that cannot end its script element or open markup."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def data_block(key: str, labels: Sequence[str], items: Mapping[str, Item]) -> str:
    """The page's decision data: read by the script, never run."""
    data = {"key": key, "labels": list(labels), "csv_name": CSV_NAME,
            "columns": list(REVIEWED_COLUMNS),
            "items": {i: {"file": it.file, "current": it.current, "suggested": it.suggested,
                          "members": list(it.members)} for i, it in items.items()}}
    return f'<script type="application/json" id="decisions-data">{_json_block(data)}</script>'


def controls(item_id: str, item: Item, labels: Sequence[str]) -> str:
    """A card's buttons: accept the suggestion, keep the current label (leave an
    unlabelled file unlabelled), one per label, and the burst switch."""
    esc = html_report.esc
    keep = f"keep {esc(item.current)}" if item.current else "leave unlabelled"
    picks = "".join(
        f'<button type="button" data-choice="label" data-index="{i}">'
        f'{f"{i + 1} " if i < KEYED_LABELS else ""}{esc(label)}</button>'
        for i, label in enumerate(labels))
    burst = ""
    if item.members:
        burst = (f'<label class="burst"><input type="checkbox" data-burst checked> all '
                 f"{len(item.members) + 1} of its burst (b)</label>")
    return (f'<div class="decide" data-item="{esc(item_id)}">'
            f'<button type="button" data-choice="accept">accept {esc(item.suggested)} (a)'
            f'</button><button type="button" data-choice="keep">{keep} (k)</button>'
            f'<div class="pick">{picks}</div>{burst}'
            '<div class="decision" aria-live="polite"></div></div>')


def toolbar(labels: Sequence[str]) -> str:
    """The bar above the cards: counter, download, undo and the keys."""
    esc = html_report.esc
    keyed = min(len(labels), KEYED_LABELS)
    keys = (f"keys: 1-{keyed} label ({', '.join(esc(x) for x in labels[:keyed])}), a accept, "
            "k keep, n or → next, p or ← previous, u undo, b burst on/off")
    return ('<div class="decisions-bar" id="decisions-bar">'
            '<span id="decisions-count">0 decided</span> '
            f'<button type="button" id="decisions-download">download {CSV_NAME}</button> '
            '<button type="button" id="decisions-undo">undo (u)</button> '
            f'<span class="muted">{keys}</span></div>')


def howto(model: str) -> str:
    """What to do with the downloaded file."""
    esc = html_report.esc
    return (f"<p>Decide each image below (the bar stays at the top), then download "
            f"<code>{CSV_NAME}</code> and run <code>python relabel.py {esc(model)} "
            f"{CSV_NAME} --dry_run</code>, then without <code>--dry_run</code> "
            "(<code>--undo</code> reverts). Decisions stay in this browser until then, even "
            "after a reload.</p>")
