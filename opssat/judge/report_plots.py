"""calc_perf's PNG plots: the threshold curve, the confusion matrices and the
confidence histograms. matplotlib's object API with the Agg canvas (no display, no
pyplot state); text from outside (labels, CSV names) is shown literally, never as
mathtext.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from opssat.core import atomic
from opssat.core.paths import ModelPaths
from opssat.judge import report
from opssat.judge.confidences import NOT_CLASSIFIED


def _plain(text: object) -> str:
    """Outside text as matplotlib shows it literally ('$' would start mathtext)."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: Path, outputs: atomic.OutputSet | None = None) -> Path:
    """Write the PNG to ``path``, staged in ``outputs`` when given; return ``path``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buffer.getvalue(), outputs)
    return path


def _suffix(mode: str) -> str:
    return "" if mode == "ground" else f"_{mode}"


def plot_confusion(result: report.ModeResult, path: Path,
                   outputs: atomic.OutputSet | None = None) -> Path:
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
        ax.set_xticks(range(len(columns)), [_plain(c) for c in columns], rotation=45, ha="right")
        ax.set_yticks(range(len(perf.labels)), [_plain(c) for c in perf.labels])
        ax.set_xlabel("predicted")
        ax.set_ylabel("expected")
        ax.set_title(_plain(f"{result.mode}: {title}"))
        peak = matrix.max(initial=0)
        for (row, col), value in np.ndenumerate(matrix):
            ax.text(col, row, str(value), ha="center", va="center",
                    color="white" if peak and value > peak / 2 else "black")
    return _save(fig, path, outputs)


def plot_threshold_curve(results: Sequence[report.ModeResult], path: Path,
                   outputs: atomic.OutputSet | None = None) -> Path:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    styles = ["-", "--", ":"]
    for result, style in zip(results, styles, strict=False):
        table = result.performance.threshold_table
        x = [r.threshold for r in table]
        ax.plot(x, [r.kept_share for r in table], style, color="tab:blue",
                label=_plain(f"kept share ({result.mode})"))
        ax.plot(x, [np.nan if r.kept_accuracy is None else r.kept_accuracy for r in table],
                style, color="tab:orange", label=_plain(f"accuracy of kept ({result.mode})"))
    perf = results[0].performance
    ax.axvline(perf.threshold, color="grey", lw=1, label=f"threshold {perf.threshold:.2f}")
    ax.axhline(perf.target_accuracy, color="tab:green", lw=1, ls=":",
               label=f"target accuracy {perf.target_accuracy:.2f}")
    _unit_axes(ax, "confidence threshold", "share", "threshold trade-off", "lower left")
    return _save(fig, path, outputs)


def _unit_axes(ax, xlabel: str, ylabel: str, title: str, legend: str) -> None:
    """Both axes from 0 to 1 (a little headroom above), their labels, title and legend."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize="small", loc=legend)


def plot_histograms(result: report.ModeResult, path: Path,
                   outputs: atomic.OutputSet | None = None) -> Path:
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
        ax.set_title(_plain(f"expected {label} ({int(rows.sum())})"))
        ax.set_xlabel("top-1 confidence")
        if index == 1:
            ax.set_ylabel("images")
            ax.legend(fontsize="small", loc="upper left")
    fig.suptitle(_plain(f"{result.mode}: confidence per expected label"))
    return _save(fig, path, outputs)


def plot_reliability(results: Sequence[report.ModeResult], path: Path,
                     outputs: atomic.OutputSet | None = None) -> Path:
    """The reliability diagram: per bin of the top-1 probability (10 equal-width bins),
    how often the top-1 is right against how sure the model was; on the diagonal the
    probabilities mean what they say (SmartCam's threshold reads them at face value)."""
    from opssat.judge import metrics

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="calibrated")
    for result, marker in zip(results, "osd^", strict=False):
        found = metrics.calibration_of(result.confidences)
        if found is not None and found.bins:
            confidence, accuracy, count = zip(*found.bins, strict=True)
            ax.plot(confidence, accuracy, marker=marker, label=_plain(
                f"{result.mode}: ECE {found.ece:.3f}, {sum(count)} images"))
    _unit_axes(ax, "top-1 probability (bin mean)", "top-1 accuracy in the bin",
               "reliability diagram", "upper left")
    return _save(fig, path, outputs)


def write_plots(paths: ModelPaths, results: Sequence[report.ModeResult],
                outputs: atomic.OutputSet | None = None) -> list[Path]:
    """Write every plot (staged in ``outputs`` when given); return their paths in
    report order."""
    plots = [plot_threshold_curve(results, paths.plot_png("threshold_curve"), outputs),
             plot_reliability(results, paths.plot_png("reliability_diagram"), outputs)]
    for result in results:
        suffix = _suffix(result.mode)
        plots.append(plot_confusion(result, paths.plot_png(f"confusion_matrix{suffix}"),
                                    outputs))
        plots.append(plot_histograms(result, paths.plot_png(f"confidence_histograms{suffix}"),
                                     outputs))
    return plots
