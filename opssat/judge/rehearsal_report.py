"""The flight rehearsal as the report shows it: ``rehearsal/rehearsal.csv`` (a row per image)
and ``rehearsal/summary.json`` (totals), both written by ``rehearse.py`` from SmartCam's own
outputs (its metadata CSV, log, toGround/ and downlink tar). This module only reads and
renders them; the columns and outcome names are declared here so writer and reader agree.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from opssat.core.paths import ModelPaths
from opssat.judge import html_report

#: rehearsal.csv's columns: the image, its true label (empty when unknown), the chain of
#: answers (``model:label`` joined by ``>``), each model's probabilities (JSON), SmartCam's
#: final label and confidence, the outcome (KEPT, DELETED, NOT_REACHED) and why.
COLUMNS = ["file", "true_label", "chain", "answers", "final_label", "confidence",
           "outcome", "reason", "detail"]
KEPT, DELETED, NOT_REACHED = "kept", "deleted", "not reached"
#: Why an image was deleted, as SmartCam's log says it.
BELOW_THRESHOLD = "below threshold"
NOT_KEPT = "label not kept"
MISSING_MODEL = "missing model"
CLASSIFIER_ERROR = "classifier error"
RESIZER_FAILED = "resizer failed"
APP_ERROR = "SmartCam error"


@dataclass
class Rehearsal:
    rows: list[dict[str, str]]
    summary: dict


def load(paths: ModelPaths) -> Rehearsal | None:
    """The model's last rehearsal, or None when there is none (or it cannot be read)."""
    try:
        with open(paths.rehearsal_csv, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        summary = json.loads(paths.rehearsal_summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Rehearsal(rows, summary)


def outcome_name(row: dict[str, str]) -> str:
    """'kept as earth', 'deleted: below threshold', 'not reached'."""
    if row["outcome"] == KEPT:
        return f"kept as {row['final_label']}"
    if row["outcome"] == DELETED:
        return f"deleted: {row['reason']}"
    return row["outcome"]


def outcome_table(rows: Sequence[dict[str, str]]) -> tuple[list[str], list[list[str]]]:
    """True label x outcome counts for the labelled images (header, rows)."""
    labelled = [row for row in rows if row["true_label"]]
    outcomes = sorted({outcome_name(row) for row in labelled})
    counts = Counter((row["true_label"], outcome_name(row)) for row in labelled)
    body = []
    for label in sorted({row["true_label"] for row in labelled}):
        cells = [counts[(label, outcome)] for outcome in outcomes]
        body.append([label, *map(str, cells), str(sum(cells))])
    return ["true label", *outcomes, "images"], body


def total_lines(summary: dict) -> list[str]:
    """The totals, one per line, as SmartCam's outputs gave them."""
    kept = summary.get("kept_per_label", {})
    deleted = summary.get("deleted_per_reason", {})
    downlink = summary.get("downlink", {})
    lines = [
        f"SmartCam ({summary.get('arch')} build, {summary.get('smartcam')}) ran "
        f"{summary.get('rows', 0)} of {summary.get('images', 0)} images through "
        f"{' > '.join(summary.get('chain', []))}",
        "kept per label (metadata CSV): " + (", ".join(f"{k} {v}" for k, v in kept.items())
                                             or "none"),
        "files per label in toGround/: " + (", ".join(
            f"{k} {v}" for k, v in summary.get("toground_per_label", {}).items()) or "none"),
        "deleted per reason: " + (", ".join(f"{k} {v}" for k, v in deleted.items()) or "none"),
        f"downlink: {downlink.get('bytes', 0):,} bytes in {downlink.get('chunks', 0)} "
        f"chunk(s) ({', '.join(downlink.get('files', [])) or 'nothing'})",
    ]
    if summary.get("stopped"):
        lines.append(f"stopped early: {summary['stopped']}")
    return lines


def render_lines(rehearsal: Rehearsal, markdown: bool = False) -> list[str]:
    """The rehearsal section for the terminal or report.md."""
    lines = (["## Flight rehearsal (SmartCam's own app)", ""] if markdown
             else ["", "flight rehearsal (SmartCam's own app, rehearse.py):"])
    lines += [f"- {line}" if markdown else f"  {line}" for line in total_lines(rehearsal.summary)]
    header, body = outcome_table(rehearsal.rows)
    if body:
        lines.append("")
        if markdown:
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
        else:
            widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                      for r in [header, *body]]
    return lines + [""]


def render_html(rehearsal: Rehearsal) -> list[str]:
    """The rehearsal section of report.html."""
    esc = html_report.esc
    body = ['<h2 id="rehearsal">Flight rehearsal (SmartCam\'s own app)</h2>',
            '<p class="muted">Read from SmartCam\'s own outputs (metadata CSV, log, toGround/, '
            "downlink tar) after rehearse.py ran its smartcam.py on these images.</p><ul>"]
    body += [f"<li>{esc(line)}</li>" for line in total_lines(rehearsal.summary)]
    body.append("</ul>")
    header, rows = outcome_table(rehearsal.rows)
    if rows:
        body.append(html_report.table(header, rows))
    return body
