"""calc_perf's one report value (opssat.judge.report.Report): every figure computed once by
``build``, and the same figures in each rendering (text, report.md, report.html, JSON)."""

from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import asdict
from pathlib import Path

import pytest
from page_fixture import make_model, write_csv

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.judge import metrics, report, report_page
from opssat.onboard import flight

MODES = ("ground", "onboard", flight.MODE)


def with_flight(root: Path) -> ModelPaths:
    """The page fixture's ground and on-board CSVs, and a flight CSV: the on-board one
    with the answers of two images rotated (SmartCam's runtime disagrees on them)."""
    paths = make_model(root)
    with paths.confidences_csv("onboard").open(newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    flown = []
    for k, row in enumerate(rows):
        probs = [float(x) for x in row[4:]]
        flown.append((row[0], row[3], probs[1:] + probs[:1] if k in (1, 5) else probs))
    write_csv(paths.confidences_csv(flight.MODE), flown)
    return paths


def build(paths: ModelPaths) -> report.Report:
    return report.build(paths.name, [(m, paths.confidences_csv(m)) for m in MODES], 0.7, 0.95)


def renderings(paths: ModelPaths, rep: report.Report) -> dict[str, str]:
    """Text, report.md and report.html as plain text: Markdown's backslash escapes and
    HTML's tags and entities undone."""
    report.write_report(paths, rep)
    page = report_page.write_html(paths, rep).read_text(encoding="utf-8")
    markdown = paths.report_md.read_text(encoding="utf-8")
    return {"text": report.render_text(rep),
            "markdown": html.unescape(re.sub(r"\\(.)", r"\1", markdown)),
            "html": html.unescape(re.sub(r"<[^>]+>", "", page))}


def test_flight_agreement_is_computed_once_for_every_format(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    paths = with_flight(tmp_path)
    calls = []
    real = metrics.agreement
    monkeypatch.setattr(metrics, "agreement", lambda a, b: calls.append(1) or real(a, b))
    rep = build(paths)
    assert len(calls) == 2  # ground vs onboard, onboard vs flight
    renderings(paths, rep)
    json.dumps(report.to_json(rep, report=paths.report_md))
    assert len(calls) == 2, "a renderer computed an agreement again"
    assert [(c.first, c.second) for c in rep.comparisons] == [(0, 1), (1, 2)]
    assert len(rep.flight.differing) == 2


def test_every_format_shows_the_same_figures(tmp_path: Path):
    paths = with_flight(tmp_path)
    rep = build(paths)
    shown = renderings(paths, rep)
    wanted = []
    for result in rep.modes:
        perf = result.performance
        wanted += [report.accuracy_line(perf), *report.figure_lines(perf),
                   report.suggestion_line(perf)]
    wanted += [report.agreement_line(rep.pair(c), c.agreement) for c in rep.comparisons]
    for name, text in shown.items():
        missing = [line for line in wanted if line not in text]
        assert not missing, f"{name} lacks {missing}"
    figures = report.to_json(rep)
    for result in rep.modes:
        assert figures["modes"][result.mode] == {"csv": str(result.csv_path),
                                                 **result.performance.to_dict()}
    assert figures["agreement"] == asdict(rep.agreement.agreement)
    assert figures["flight_agreement"] == asdict(rep.flight.agreement)
    assert figures["flight_agreement"]["agreeing"] == figures["flight_agreement"]["matched"] - 2


def test_when_flight_is_the_first_pair_it_is_compared_once(tmp_path: Path):
    paths = with_flight(tmp_path)
    csvs = [(m, paths.confidences_csv(m)) for m in ("onboard", flight.MODE)]
    rep = report.build(paths.name, csvs, 0.7, 0.95)
    assert rep.flight is rep.agreement and rep.comparisons == [rep.agreement]
    assert report.render_text(rep).count("top-1 agreement onboard vs flight") == 1


def test_a_report_needs_a_csv():
    with pytest.raises(UserError, match="nothing to report"):
        report.build("m", [], 0.7, 0.95)
