"""calc_perf's report: one value, ``Report``, that holds every figure (computed once
by ``build``), and its renderings in words: the text table, report.md and the JSON.
The plots are in ``report_plots``, the HTML page in ``report_page``.

The figures come from ``opssat.judge.metrics``; the renderers only lay them out. Text
from outside (labels, CSV names) is escaped in Markdown, so report.md shows it
as it is and never as markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import images
from opssat.judge import agreement, metrics, rehearsal_report
from opssat.judge.confidences import NOT_CLASSIFIED, Confidences, load_confidences
from opssat.onboard import flight

#: The rows of the threshold table printed in text and Markdown (JSON has all 100).
COMPACT_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


@dataclass
class ModeResult:
    """One preprocessing mode's CSV and its figures."""

    mode: str
    csv_path: Path
    confidences: Confidences
    performance: metrics.Performance


def evaluate_csvs(
    csvs: Sequence[tuple[str, Path]], threshold: float, target_accuracy: float
) -> list[ModeResult]:
    """Load and score each (mode, CSV) pair."""
    results = []
    for mode, path in csvs:
        conf = load_confidences(path)
        if mode == flight.MODE:  # SmartCam's answers: the one judge's rules, as they came
            agreement.check(conf.probabilities, conf.labels, conf.filenames,
                            f"SmartCam's runtime in {path}")
        results.append(ModeResult(mode, path, conf,
                                  metrics.evaluate(conf, threshold, target_accuracy)))
    return results


def flight_pair(results: Sequence[ModeResult]) -> tuple[int, int] | None:
    """(LiteRT's result, SmartCam's own runtime's result) as indices into ``results``:
    mode flight against LiteRT fed the same on-board input (else ground), when both
    are there."""
    modes = [r.mode for r in results]
    if flight.MODE not in modes:
        return None
    litert = next((modes.index(m) for m in images.PREPROCESS_MODES[::-1] if m in modes), None)
    return None if litert is None else (litert, modes.index(flight.MODE))


@dataclass
class Comparison:
    """Two modes' top-1 on the same images (matched by filename): how often they agree
    and which images differ."""

    first: int  # indices into Report.modes
    second: int
    agreement: metrics.Agreement
    differing: list[tuple[int, int]]  # (row in first, row in second) whose top-1 differs


def compare(results: Sequence[ModeResult], first: int, second: int) -> Comparison:
    a, b = results[first].confidences, results[second].confidences
    agree = metrics.agreement(a, b)
    rows_b = {name: j for j, name in enumerate(b.filenames)}
    top_a, top_b = a.top1, b.top1  # properties that rank every row: read each once
    differing = [(i, j) for i, name in enumerate(a.filenames)
                 if (j := rows_b.get(name)) is not None and top_a[i] != top_b[j]]
    return Comparison(first, second, agree, differing)


@dataclass
class Report:
    """Everything calc_perf reports, computed once by ``build``; the text, report.md,
    report.html and the JSON are renderings of this one value.

    A new section is a field here (None when there is nothing to show), filled in by
    ``build``, and one renderer per format: a function in ``TEXT_SECTIONS`` and
    ``MARKDOWN_SECTIONS`` (one function may serve both: it gets ``markdown``), one in
    ``report_page.HTML_SECTIONS`` and one in ``JSON_SECTIONS``. Per-mode figures belong
    in ``metrics.Performance`` instead, shown by ``figure_lines`` and ``_COMPARED``.
    """

    model: str
    modes: list[ModeResult]
    agreement: Comparison | None = None  # the first two modes, when there are two
    #: SmartCam's own runtime against LiteRT fed the same input (``flight_pair``);
    #: the same object as ``agreement`` when that is the pair.
    flight: Comparison | None = None
    plots: list[Path] = field(default_factory=list)  # report_plots' PNGs, in report order
    #: The model's last flight rehearsal (rehearse.py), when there is one.
    rehearsal: rehearsal_report.Rehearsal | None = None

    @property
    def comparisons(self) -> list[Comparison]:
        """Each compared pair once, the first two modes first."""
        found = [self.agreement] if self.agreement is not None else []
        if self.flight is not None and self.flight is not self.agreement:
            found.append(self.flight)
        return found

    def pair(self, comparison: Comparison) -> list[ModeResult]:
        return [self.modes[comparison.first], self.modes[comparison.second]]


def build(model: str, csvs: Sequence[tuple[str, Path]], threshold: float,
          target_accuracy: float,
          rehearsal: rehearsal_report.Rehearsal | None = None) -> Report:
    """Read and score every (mode, CSV) pair and compare the modes: every figure of the
    report, once."""
    results = evaluate_csvs(csvs, threshold, target_accuracy)
    if not results:
        raise UserError("nothing to report: run batch_label_images.py first")
    agreement = compare(results, 0, 1) if len(results) >= 2 else None
    pair = flight_pair(results)
    flown = None if pair is None else agreement if pair == (0, 1) else compare(results, *pair)
    return Report(model, results, agreement, flown, rehearsal=rehearsal)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md(text: object) -> str:
    """``text`` shown literally in Markdown: HTML characters as entities, Markdown
    punctuation backslash-escaped, line breaks as spaces."""
    plain = " ".join(str(text).splitlines())
    plain = plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", plain)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """A plain aligned table, or a Markdown one (cells escaped)."""
    if markdown:
        lines = ["| " + " | ".join(map(md, header)) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(map(md, row)) + " |" for row in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    def fmt(row: Sequence[str]) -> str:
        return "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
    return [fmt(header), *(fmt(row) for row in rows)]


def _compact_rows(perf: metrics.Performance) -> list[metrics.ThresholdRow]:
    wanted = {*COMPACT_THRESHOLDS, perf.threshold}
    if perf.suggested is not None:
        wanted.add(perf.suggested.threshold)
    return [row for row in perf.threshold_table
            if any(abs(row.threshold - w) < 1e-9 for w in wanted)]


def sensitivity_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[s.label, f"{s.correct} / {s.total}", _num(s.sensitivity)] for s in perf.per_label]


def prf_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[s.label, _num(s.precision), _num(s.sensitivity), _num(s.f1)]
            for s in perf.per_label]


def accuracy_line(perf: metrics.Performance) -> str:
    return (f"total accuracy: {perf.correct} / {perf.images} = {perf.accuracy:.3f} "
            "(top-1 over all images, threshold ignored)")


def figure_lines(perf: metrics.Performance) -> list[str]:
    figures = [
        f"macro-F1: {perf.macro_f1:.3f}    balanced accuracy: {perf.balanced_accuracy:.3f}",
        f"Cohen's kappa: {_num(perf.kappa)}    1 - kappa (ESA OPS-SAT competition score, "
        f"lower is better): {_num(perf.competition_score)}",
        f"at threshold {perf.threshold:.2f}: kept {perf.kept} / {perf.images} "
        f"({_pct(perf.coverage)}), accuracy of kept {_num(perf.kept_accuracy)}",
    ]
    if perf.ece is not None:
        figures.append(f"calibration: ECE {perf.ece:.3f} (10 equal-width bins of the top-1 "
                       f"probability)    Brier {perf.brier:.3f}    NLL {perf.nll:.3f}")
    if perf.mean_time_ms is not None:
        figures.append(f"mean invoke time: {perf.mean_time_ms:.2f} ms")
    return figures


CONFUSION_CORNER = "expected \\ predicted"
THRESHOLD_HEADER = ["threshold", "kept", "kept share", "kept accuracy"]


def confusion_rows(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[list[str]]:
    return [[label, *map(str, row)] for label, row in zip(labels, matrix, strict=True)]


def threshold_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[f"{r.threshold:.2f}", str(r.kept), _pct(r.kept_share), _num(r.kept_accuracy)]
            for r in _compact_rows(perf)]


def suggestion_line(perf: metrics.Performance) -> str:
    best = perf.suggested
    if best is None:
        return f"no threshold keeps accuracy >= {perf.target_accuracy:.3f}"
    return (f"lowest threshold with accuracy >= {perf.target_accuracy:.3f}: "
            f"{best.threshold:.2f} (keeps {best.kept} / {perf.images}, "
            f"{_pct(best.kept_share)}; accuracy {_num(best.kept_accuracy)})")


def mode_title(result: ModeResult) -> str:
    return (f"{result.mode} preprocessing: {result.csv_path} "
            f"({result.performance.images} images)")


def _mode_section(result: ModeResult, markdown: bool) -> list[str]:
    perf = result.performance
    h = "### " if markdown else "== "
    title = md(mode_title(result)) if markdown else mode_title(result)
    lines = [f"{h}{title}", ""]
    lines += _table(["label", "correct / total", "sensitivity"], sensitivity_rows(perf),
                    markdown)
    lines += ["", f"{'- ' if markdown else ''}{accuracy_line(perf)}", ""]
    lines += _table(["label", "precision", "recall", "F1"], prf_rows(perf), markdown)
    lines += ["", *(f"- {line}" if markdown else line for line in figure_lines(perf))]
    lines += ["", "confusion matrix, top-1 (rows expected, columns predicted):", ""]
    lines += _table([CONFUSION_CORNER, *perf.labels],
                    confusion_rows(perf.labels, perf.confusion), markdown)
    lines += ["", f"confusion matrix at threshold {perf.threshold:.2f} "
              f"({NOT_CLASSIFIED} = below threshold):", ""]
    lines += _table([CONFUSION_CORNER, *perf.labels, NOT_CLASSIFIED],
                    confusion_rows(perf.labels, perf.confusion_at_threshold), markdown)
    lines += ["", "threshold trade-off (kept: top-1 confidence >= threshold):", ""]
    lines += _table(THRESHOLD_HEADER, threshold_rows(perf), markdown)
    return lines + ["", suggestion_line(perf), ""]


_COMPARED = [
    ("images", lambda p: str(p.images)),
    ("accuracy", lambda p: _num(p.accuracy)),
    ("macro-F1", lambda p: _num(p.macro_f1)),
    ("balanced accuracy", lambda p: _num(p.balanced_accuracy)),
    ("Cohen's kappa", lambda p: _num(p.kappa)),
    ("1 - kappa", lambda p: _num(p.competition_score)),
    ("kept at threshold", lambda p: _pct(p.coverage)),
    ("accuracy of kept", lambda p: _num(p.kept_accuracy)),
]


def comparison_rows(results: Sequence[ModeResult]) -> list[list[str]]:
    return [[name, *(get(r.performance) for r in results)] for name, get in _COMPARED]


def agreement_line(results: Sequence[ModeResult], agree: metrics.Agreement) -> str:
    return (f"top-1 agreement {results[0].mode} vs {results[1].mode}: "
            f"{agree.agreeing} / {agree.matched} images ({_pct(agree.share)}), "
            f"matched by filename; only in {results[0].mode}: {agree.only_first}, "
            f"only in {results[1].mode}: {agree.only_second}")


# --- sections in text and Markdown: each gets the report and whether Markdown is wanted ---


def _title(rep: Report, markdown: bool) -> list[str]:
    return [
        f"# Performance of model `{rep.model}`",
        "",
        "Main figures: the top-1 label of every test image, whatever its confidence. "
        "The \"at threshold\" figures count the images whose top-1 confidence reaches the "
        "threshold: SmartCam deletes the others on board. What it downlinks also depends on "
        "labels_keep and the models after this one (rehearse.py runs SmartCam's own app).",
        "",
    ]


def _comparison(rep: Report, markdown: bool) -> list[str]:
    if len(rep.modes) < 2:
        return []
    h = "## " if markdown else "== "
    lines = [f"{h}modes side by side", ""]
    lines += _table(["figure", *(r.mode for r in rep.modes)], comparison_rows(rep.modes),
                    markdown)
    for compared in rep.comparisons:
        line = agreement_line(rep.pair(compared), compared.agreement)
        lines += ["", md(line) if markdown else line]
    return lines + [""]


def _per_mode(rep: Report, markdown: bool) -> list[str]:
    lines = ["## Per mode", ""] if markdown else []
    for result in rep.modes:
        lines += _mode_section(result, markdown)
    return lines


def _plots(rep: Report, markdown: bool) -> list[str]:
    if not rep.plots:
        return []
    # our own file names
    return ["## Plots", "", *(f"![{p.stem}]({p.name})" for p in rep.plots), ""]


def _rehearsal(rep: Report, markdown: bool) -> list[str]:
    return rehearsal_report.render_lines(rep.rehearsal, markdown) if rep.rehearsal else []


SectionLines = Callable[[Report, bool], list[str]]
#: What the terminal shows, in order.
TEXT_SECTIONS: tuple[SectionLines, ...] = (_per_mode, _comparison, _rehearsal)
#: report.md, in order.
MARKDOWN_SECTIONS: tuple[SectionLines, ...] = (_title, _comparison, _per_mode, _plots,
                                                _rehearsal)


def render_text(rep: Report) -> str:
    return "\n".join(line for section in TEXT_SECTIONS for line in section(rep, False))


def render_markdown(rep: Report) -> str:
    return "\n".join(line for section in MARKDOWN_SECTIONS for line in section(rep, True))


def _agreement_json(compared: Comparison | None) -> dict | None:
    return None if compared is None else asdict(compared.agreement)


#: The JSON's keys, in order, and how each is made from the report.
JSON_SECTIONS: dict[str, Callable[[Report], object]] = {
    "model": lambda rep: rep.model,
    "modes": lambda rep: {r.mode: {"csv": str(r.csv_path), **r.performance.to_dict()}
                          for r in rep.modes},
    "agreement": lambda rep: _agreement_json(rep.agreement),
    "flight_agreement": lambda rep: _agreement_json(rep.flight),
    "plots": lambda rep: [str(p) for p in rep.plots],
    "rehearsal": lambda rep: rep.rehearsal.summary if rep.rehearsal else None,
}


def to_json(rep: Report, **written: Path) -> dict:
    """Every figure, and where each output was written (``report=``, ``report_html=``)."""
    return {**{key: make(rep) for key, make in JSON_SECTIONS.items()},
            **{key: str(path) for key, path in written.items()}}


def write_report(paths: ModelPaths, rep: Report,
                 outputs: atomic.OutputSet | None = None) -> Path:
    """report.md; staged in ``outputs`` when given (calc_perf commits all at once)."""
    atomic.write_text(paths.report_md, render_markdown(rep), outputs)
    return paths.report_md
