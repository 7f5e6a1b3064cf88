"""calc_perf's output: the text table, report.md and the PNG plots.

The figures come from ``opssat.metrics``; this module only lays them out. Plots
use matplotlib's object API with the Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from opssat import atomic, metrics
from opssat.cli import UserError
from opssat.confidences import NOT_CLASSIFIED, Confidences, load_confidences
from opssat.paths import ModelPaths

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
        results.append(ModeResult(mode, path, conf,
                                  metrics.evaluate(conf, threshold, target_accuracy)))
    return results


def mode_agreement(results: Sequence[ModeResult]) -> metrics.Agreement | None:
    """Top-1 agreement of the first two modes, when there are two."""
    if len(results) < 2:
        return None
    return metrics.agreement(results[0].confidences, results[1].confidences)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> list[str]:
    """A plain aligned table, or a Markdown one."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(row) + " |" for row in rows]
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


def _mode_section(result: ModeResult, markdown: bool) -> list[str]:
    perf = result.performance
    h = "### " if markdown else "== "
    lines = [f"{h}{result.mode} preprocessing: {result.csv_path} ({perf.images} images)", ""]
    lines += _table(
        ["label", "correct / total", "sensitivity"],
        [[s.label, f"{s.correct} / {s.total}", _num(s.sensitivity)] for s in perf.per_label],
        markdown,
    )
    lines += ["", f"{'- ' if markdown else ''}total accuracy: {perf.correct} / {perf.images} = "
              f"{perf.accuracy:.3f} (top-1 over all images, threshold ignored)", ""]
    lines += _table(
        ["label", "precision", "recall", "F1"],
        [[s.label, _num(s.precision), _num(s.sensitivity), _num(s.f1)] for s in perf.per_label],
        markdown,
    )
    figures = [
        f"macro-F1: {perf.macro_f1:.3f}    balanced accuracy: {perf.balanced_accuracy:.3f}",
        f"Cohen's kappa: {_num(perf.kappa)}    1 - kappa (ESA OPS-SAT competition score, "
        f"lower is better): {_num(perf.competition_score)}",
        f"at threshold {perf.threshold:.2f}: kept {perf.kept} / {perf.images} "
        f"({_pct(perf.coverage)}), accuracy of kept {_num(perf.kept_accuracy)}",
    ]
    if perf.mean_time_ms is not None:
        figures.append(f"mean invoke time: {perf.mean_time_ms:.2f} ms")
    lines += ["", *(f"- {line}" if markdown else line for line in figures)]
    lines += ["", "confusion matrix, top-1 (rows expected, columns predicted):", ""]
    corner = "expected \\ predicted"
    lines += _table([corner, *perf.labels],
                    [[label, *map(str, row)] for label, row in zip(perf.labels, perf.confusion,
                                                                   strict=True)], markdown)
    lines += ["", f"confusion matrix at threshold {perf.threshold:.2f} "
              f"({NOT_CLASSIFIED} = below threshold):", ""]
    lines += _table([corner, *perf.labels, NOT_CLASSIFIED],
                    [[label, *map(str, row)] for label, row in
                     zip(perf.labels, perf.confusion_at_threshold, strict=True)], markdown)
    lines += ["", "threshold trade-off (kept: top-1 confidence >= threshold):", ""]
    lines += _table(
        ["threshold", "kept", "kept share", "kept accuracy"],
        [[f"{r.threshold:.2f}", str(r.kept), _pct(r.kept_share), _num(r.kept_accuracy)]
         for r in _compact_rows(perf)],
        markdown,
    )
    best = perf.suggested
    lines.append("")
    if best is None:
        lines.append(f"no threshold keeps accuracy >= {perf.target_accuracy:.3f}")
    else:
        lines.append(f"lowest threshold with accuracy >= {perf.target_accuracy:.3f}: "
                     f"{best.threshold:.2f} (keeps {best.kept} / {perf.images}, "
                     f"{_pct(best.kept_share)}; accuracy {_num(best.kept_accuracy)})")
    return lines + [""]


def _comparison(results: Sequence[ModeResult], agree: metrics.Agreement | None,
                markdown: bool) -> list[str]:
    if len(results) < 2:
        return []
    rows = [
        ("images", lambda p: str(p.images)),
        ("accuracy", lambda p: _num(p.accuracy)),
        ("macro-F1", lambda p: _num(p.macro_f1)),
        ("balanced accuracy", lambda p: _num(p.balanced_accuracy)),
        ("Cohen's kappa", lambda p: _num(p.kappa)),
        ("1 - kappa", lambda p: _num(p.competition_score)),
        ("kept at threshold", lambda p: _pct(p.coverage)),
        ("accuracy of kept", lambda p: _num(p.kept_accuracy)),
    ]
    h = "## " if markdown else "== "
    lines = [f"{h}modes side by side", ""]
    lines += _table(["figure", *(r.mode for r in results)],
                    [[name, *(get(r.performance) for r in results)] for name, get in rows],
                    markdown)
    if agree is not None:
        lines += ["", f"top-1 agreement {results[0].mode} vs {results[1].mode}: "
                  f"{agree.agreeing} / {agree.matched} images ({_pct(agree.share)}), "
                  f"matched by filename; only in {results[0].mode}: {agree.only_first}, "
                  f"only in {results[1].mode}: {agree.only_second}"]
    return lines + [""]


def render_text(results: Sequence[ModeResult], agree: metrics.Agreement | None) -> str:
    lines: list[str] = []
    for result in results:
        lines += _mode_section(result, markdown=False)
    lines += _comparison(results, agree, markdown=False)
    return "\n".join(lines)


def render_markdown(model: str, results: Sequence[ModeResult],
                    agree: metrics.Agreement | None, plots: Sequence[Path]) -> str:
    lines = [
        f"# Performance of model `{model}`",
        "",
        "Main figures: the top-1 label of every test image, whatever its confidence. "
        "The \"at threshold\" figures show what SmartCam keeps on board: images whose top-1 "
        "confidence reaches the threshold.",
        "",
    ]
    lines += _comparison(results, agree, markdown=True)
    lines += ["## Per mode", ""]
    for result in results:
        lines += _mode_section(result, markdown=True)
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
        lines.append("")
    return "\n".join(lines)


def to_json(model: str, results: Sequence[ModeResult], agree: metrics.Agreement | None,
            report: Path, plots: Sequence[Path]) -> dict:
    return {
        "model": model,
        "modes": {r.mode: {"csv": str(r.csv_path), **r.performance.to_dict()} for r in results},
        "agreement": None if agree is None else asdict(agree),
        "report": str(report),
        "plots": [str(p) for p in plots],
    }


# --- plots -------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buffer.getvalue())
    return path


def _suffix(mode: str) -> str:
    return "" if mode == "ground" else f"_{mode}"


def plot_confusion(result: ModeResult, path: Path) -> Path:
    perf = result.performance
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    panels = [
        ("top-1", np.asarray(perf.confusion), perf.labels),
        (f"at threshold {perf.threshold:.2f}", np.asarray(perf.confusion_at_threshold),
         [*perf.labels, NOT_CLASSIFIED]),
    ]
    for index, (title, matrix, columns) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, index)
        ax.imshow(matrix, cmap="Blues", vmin=0)
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
        ax.set_yticks(range(len(perf.labels)), perf.labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("expected")
        ax.set_title(f"{result.mode}: {title}")
        peak = matrix.max(initial=0)
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, str(value), ha="center", va="center",
                    color="white" if peak and value > peak / 2 else "black")
    return _save(fig, path)


def plot_threshold_curve(results: Sequence[ModeResult], path: Path) -> Path:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    styles = ["-", "--", ":"]
    for result, style in zip(results, styles, strict=False):
        table = result.performance.threshold_table
        x = [r.threshold for r in table]
        ax.plot(x, [r.kept_share for r in table], style, color="tab:blue",
                label=f"kept share ({result.mode})")
        ax.plot(x, [np.nan if r.kept_accuracy is None else r.kept_accuracy for r in table],
                style, color="tab:orange", label=f"accuracy of kept ({result.mode})")
    perf = results[0].performance
    ax.axvline(perf.threshold, color="grey", lw=1, label=f"threshold {perf.threshold:.2f}")
    ax.axhline(perf.target_accuracy, color="tab:green", lw=1, ls=":",
               label=f"target accuracy {perf.target_accuracy:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("share")
    ax.set_title("threshold trade-off")
    ax.legend(fontsize="small", loc="lower left")
    return _save(fig, path)


def plot_histograms(result: ModeResult, path: Path) -> Path:
    conf, perf = result.confidences, result.performance
    top = conf.top1_confidence
    correct = np.asarray(conf.top1) == np.asarray(conf.expected)
    expected = np.asarray(conf.expected)
    bins = np.linspace(0, 1, 21)
    fig = Figure(figsize=(4 * len(conf.labels), 3.5), layout="constrained")
    for index, label in enumerate(conf.labels, start=1):
        ax = fig.add_subplot(1, len(conf.labels), index)
        rows = expected == label
        ax.hist([top[rows & correct], top[rows & ~correct]], bins=bins, stacked=True,
                color=["tab:green", "tab:red"], label=["top-1 right", "top-1 wrong"])
        ax.axvline(perf.threshold, color="grey", lw=1)
        ax.set_title(f"expected {label} ({int(rows.sum())})")
        ax.set_xlabel("top-1 confidence")
        if index == 1:
            ax.set_ylabel("images")
            ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(f"{result.mode}: confidence per expected label")
    return _save(fig, path)


def write_plots(paths: ModelPaths, results: Sequence[ModeResult]) -> list[Path]:
    """Write every plot; return their paths (report order)."""
    plots = [plot_threshold_curve(results, paths.plot_png("threshold_curve"))]
    for result in results:
        suffix = _suffix(result.mode)
        plots.append(plot_confusion(result, paths.plot_png(f"confusion_matrix{suffix}")))
        plots.append(plot_histograms(result, paths.plot_png(f"confidence_histograms{suffix}")))
    return plots


def write_report(paths: ModelPaths, results: Sequence[ModeResult],
                 agree: metrics.Agreement | None, plots: Sequence[Path]) -> Path:
    if not results:
        raise UserError("nothing to report: run batch_label_images.py first")
    atomic.write_text(paths.report_md, render_markdown(paths.name, results, agree, plots))
    return paths.report_md
