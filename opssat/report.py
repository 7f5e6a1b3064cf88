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

from opssat import atomic, flight, html_report, images, infer, metrics
from opssat.confidences import NOT_CLASSIFIED, Confidences, load_confidences
from opssat.errors import UserError
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


def flight_pair(results: Sequence[ModeResult]) -> tuple[int, int] | None:
    """(LiteRT's result, SmartCam's own runtime's result) as indices into ``results``:
    mode flight against LiteRT fed the same on-board input (else ground), when both
    are there."""
    modes = [r.mode for r in results]
    if flight.MODE not in modes:
        return None
    litert = next((modes.index(m) for m in images.PREPROCESS_MODES[::-1] if m in modes), None)
    return None if litert is None else (litert, modes.index(flight.MODE))


def flight_agreement(results: Sequence[ModeResult]) -> metrics.Agreement | None:
    pair = flight_pair(results)
    return None if pair is None else metrics.agreement(results[pair[0]].confidences,
                                                       results[pair[1]].confidences)


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


def _sensitivity_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[s.label, f"{s.correct} / {s.total}", _num(s.sensitivity)] for s in perf.per_label]


def _prf_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[s.label, _num(s.precision), _num(s.sensitivity), _num(s.f1)]
            for s in perf.per_label]


def _accuracy_line(perf: metrics.Performance) -> str:
    return (f"total accuracy: {perf.correct} / {perf.images} = {perf.accuracy:.3f} "
            "(top-1 over all images, threshold ignored)")


def _figure_lines(perf: metrics.Performance) -> list[str]:
    figures = [
        f"macro-F1: {perf.macro_f1:.3f}    balanced accuracy: {perf.balanced_accuracy:.3f}",
        f"Cohen's kappa: {_num(perf.kappa)}    1 - kappa (ESA OPS-SAT competition score, "
        f"lower is better): {_num(perf.competition_score)}",
        f"at threshold {perf.threshold:.2f}: kept {perf.kept} / {perf.images} "
        f"({_pct(perf.coverage)}), accuracy of kept {_num(perf.kept_accuracy)}",
    ]
    if perf.mean_time_ms is not None:
        figures.append(f"mean invoke time: {perf.mean_time_ms:.2f} ms")
    return figures


CONFUSION_CORNER = "expected \\ predicted"
THRESHOLD_HEADER = ["threshold", "kept", "kept share", "kept accuracy"]


def _confusion_rows(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[list[str]]:
    return [[label, *map(str, row)] for label, row in zip(labels, matrix, strict=True)]


def _threshold_rows(perf: metrics.Performance) -> list[list[str]]:
    return [[f"{r.threshold:.2f}", str(r.kept), _pct(r.kept_share), _num(r.kept_accuracy)]
            for r in _compact_rows(perf)]


def _suggestion_line(perf: metrics.Performance) -> str:
    best = perf.suggested
    if best is None:
        return f"no threshold keeps accuracy >= {perf.target_accuracy:.3f}"
    return (f"lowest threshold with accuracy >= {perf.target_accuracy:.3f}: "
            f"{best.threshold:.2f} (keeps {best.kept} / {perf.images}, "
            f"{_pct(best.kept_share)}; accuracy {_num(best.kept_accuracy)})")


def _mode_title(result: ModeResult) -> str:
    return (f"{result.mode} preprocessing: {result.csv_path} "
            f"({result.performance.images} images)")


def _mode_section(result: ModeResult, markdown: bool) -> list[str]:
    perf = result.performance
    h = "### " if markdown else "== "
    lines = [f"{h}{_mode_title(result)}", ""]
    lines += _table(["label", "correct / total", "sensitivity"], _sensitivity_rows(perf),
                    markdown)
    lines += ["", f"{'- ' if markdown else ''}{_accuracy_line(perf)}", ""]
    lines += _table(["label", "precision", "recall", "F1"], _prf_rows(perf), markdown)
    lines += ["", *(f"- {line}" if markdown else line for line in _figure_lines(perf))]
    lines += ["", "confusion matrix, top-1 (rows expected, columns predicted):", ""]
    lines += _table([CONFUSION_CORNER, *perf.labels],
                    _confusion_rows(perf.labels, perf.confusion), markdown)
    lines += ["", f"confusion matrix at threshold {perf.threshold:.2f} "
              f"({NOT_CLASSIFIED} = below threshold):", ""]
    lines += _table([CONFUSION_CORNER, *perf.labels, NOT_CLASSIFIED],
                    _confusion_rows(perf.labels, perf.confusion_at_threshold), markdown)
    lines += ["", "threshold trade-off (kept: top-1 confidence >= threshold):", ""]
    lines += _table(THRESHOLD_HEADER, _threshold_rows(perf), markdown)
    return lines + ["", _suggestion_line(perf), ""]


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


def _comparison_rows(results: Sequence[ModeResult]) -> list[list[str]]:
    return [[name, *(get(r.performance) for r in results)] for name, get in _COMPARED]


def _agreement_line(results: Sequence[ModeResult], agree: metrics.Agreement) -> str:
    return (f"top-1 agreement {results[0].mode} vs {results[1].mode}: "
            f"{agree.agreeing} / {agree.matched} images ({_pct(agree.share)}), "
            f"matched by filename; only in {results[0].mode}: {agree.only_first}, "
            f"only in {results[1].mode}: {agree.only_second}")


def _comparison(results: Sequence[ModeResult], agree: metrics.Agreement | None,
                markdown: bool) -> list[str]:
    if len(results) < 2:
        return []
    h = "## " if markdown else "== "
    lines = [f"{h}modes side by side", ""]
    lines += _table(["figure", *(r.mode for r in results)], _comparison_rows(results), markdown)
    if agree is not None:
        lines += ["", _agreement_line(results, agree)]
    pair = flight_pair(results)
    if pair is not None and pair != (0, 1):
        lines += ["", _agreement_line([results[i] for i in pair], flight_agreement(results))]
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
        "flight_agreement": None if (fa := flight_agreement(results)) is None else asdict(fa),
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


# --- the HTML page -------------------------------------------------------------


def preprocessing_of(result: ModeResult) -> str:
    """The preprocessing a CSV was made with: confidences.csv is ground,
    confidences_onboard.csv on-board; a CSV passed by name is judged by its name."""
    if result.mode in images.PREPROCESS_MODES:
        return result.mode
    stem = result.csv_path.stem
    # flight: SmartCam's own resizer, which onboard reproduces
    return "onboard" if result.mode == flight.MODE or "onboard" in stem or \
        flight.MODE in stem else "ground"


def _row_card(result: ModeResult, row: int, source: Path | None, pairs: dict, page: Path,
              modes: Sequence[str], others: Sequence[tuple[ModeResult, int]] = ()) -> str:
    """An image's card: thumbnail, model input(s), expected label and top-3 of each mode."""
    conf = result.confidences
    name, expected = conf.filenames[row], conf.expected[row]
    probabilities = conf.probabilities[row]
    top = float(probabilities.max())
    top1 = conf.labels[int(np.argmax(probabilities))]
    classes = []
    if top1 != expected:
        classes.append("wrong")
    if top < result.performance.threshold:
        classes.append("low")
    original = None if source is None else html_report.relative_url(source, page)
    body = html_report.image_pair(pairs.get(source) if source else None, original, modes)
    rankings = [(result, row), *others]
    lists = "".join(_ranking(r, i, expected, len(rankings) > 1) for r, i in rankings)
    caption = (f'<span class="name">{html_report.esc(name)}</span><br>expected '
               f"<b>{html_report.esc(expected)}</b>{lists}")
    return html_report.card(body, caption, {"conf": f"{top:.6f}", "name": name}, classes)


def _ranking(result: ModeResult, row: int, expected: str, named: bool) -> str:
    """Top-3 of one mode, tagged when wrong or below the threshold."""
    probabilities = result.confidences.probabilities[row]
    ranked = infer.ranked(probabilities, result.confidences.labels, 3)
    tags = ""
    if ranked[0][0] != expected:
        tags += '<span class="tag">misclassified</span>'
    if ranked[0][1] < result.performance.threshold:
        tags += '<span class="tag low">below threshold</span>'
    title = f"{html_report.esc(result.mode)} top-3" if named else "top-3"
    return html_report.top_k(ranked, expected, f"{title} {tags}")


_SORTS = [("confidence ↑", "conf", 1), ("confidence ↓", "conf", -1), ("name", "name", 1)]


def _confusion_html(index: int, result: ModeResult, cards: list[str]) -> list[str]:
    """The top-1 confusion matrix; each cell links to a panel of its images."""
    conf, perf = result.confidences, result.performance
    position = {label: i for i, label in enumerate(conf.labels)}
    cells: dict[tuple[int, int], list[str]] = {}
    for row, card in enumerate(cards):
        key = (position[conf.expected[row]], position[conf.top1[row]])
        cells.setdefault(key, []).append(card)
    esc = html_report.esc
    head = "".join(f"<th>{esc(label)}</th>" for label in perf.labels)
    rows, panels = [], []
    for r, label in enumerate(perf.labels):
        tds = []
        for c, count in enumerate(perf.confusion[r]):
            anchor = f"cell-{index}-{r}-{c}"
            cls = "diag" if r == c else "off"
            value = f'<a href="#{anchor}">{count}</a>' if count else "0"
            tds.append(f'<td class="{cls}" data-expected="{esc(label)}" '
                       f'data-predicted="{esc(perf.labels[c])}" data-count="{count}">{value}</td>')
            if count:
                panels.append(
                    f'<section class="cell" id="{anchor}"><h3>{result.mode}: expected '
                    f"{esc(label)}, predicted {esc(perf.labels[c])} ({count} images) "
                    f'<a href="#confusion-{index}">close</a></h3>'
                    + html_report.gallery(f"{anchor}-gallery", cells.get((r, c), []))
                    + "</section>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(tds)}</tr>")
    table = (f'<table class="confusion" id="confusion-{index}" data-mode="{esc(result.mode)}">'
             f"<tr><th>{esc(CONFUSION_CORNER)}</th>{head}</tr>{''.join(rows)}</table>")
    return [table, *panels]


def render_html(model: str, results: Sequence[ModeResult], agree: metrics.Agreement | None,
                plots: Sequence[Path], page: Path, roots: Sequence[Path]) -> str:
    """report.html: report.md's figures, a clickable confusion matrix, the gallery of
    misclassified and below-threshold images, and the modes side by side."""
    esc = html_report.esc
    modes = [preprocessing_of(r) for r in results]
    files = html_report.ImageFiles(page)
    sources: list[list[Path | None]] = []
    for result, mode in zip(results, modes, strict=True):
        conf = result.confidences
        found = [html_report.locate_image(n, e, roots)
                 for n, e in zip(conf.filenames, conf.expected, strict=True)]
        for source in found:
            if source is not None:
                files.want(source, [mode])
        sources.append(found)
    compared = [(0, 1)] if len(results) >= 2 else []
    if (pair := flight_pair(results)) is not None and pair != (0, 1):
        compared.append(pair)
    differing: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for a, b in compared:
        second = {name: i for i, name in enumerate(results[b].confidences.filenames)}
        top_a, top_b = results[a].confidences.top1, results[b].confidences.top1
        differing[(a, b)] = []
        for i, name in enumerate(results[a].confidences.filenames):
            j = second.get(name)
            if j is not None and top_a[i] != top_b[j]:
                differing[(a, b)].append((i, j))
                if sources[a][i] is not None:
                    files.want(sources[a][i], [modes[a], modes[b]])
    pairs = files.write()

    body = [f"<h1>Performance of model <code>{esc(model)}</code></h1>", "<nav>"]
    if len(results) >= 2:
        body.append('<a href="#compare">modes side by side</a>')
    body += [f'<a href="#mode-{i}">{esc(r.mode)}</a>' for i, r in enumerate(results)]
    body += ['<a href="#plots">plots</a>' if plots else "", "</nav>",
             '<p class="muted">Main figures: the top-1 label of every test image, whatever its '
             'confidence. The "at threshold" figures show what SmartCam keeps on board: images '
             "whose top-1 confidence reaches the threshold. Each image is shown as a thumbnail "
             "(click for the original) beside the model's input as its preprocessing made "
             "it.</p>"]
    if len(results) >= 2:
        body += ['<h2 id="compare">Modes side by side</h2>',
                 html_report.table(["figure", *(r.mode for r in results)],
                                   _comparison_rows(results))]
    for number, (a, b) in enumerate(compared):
        shown = agree if (a, b) == (0, 1) else flight_agreement(results)
        if shown is not None:
            body.append(f"<p>{esc(_agreement_line([results[a], results[b]], shown))}</p>")
        found = differing[(a, b)]
        body.append(f"<h3>Images whose top-1 differs, {esc(results[a].mode)} vs "
                    f"{esc(results[b].mode)} ({len(found)})</h3>")
        cards = [_row_card(results[a], i, sources[a][i], pairs, page, [modes[a], modes[b]],
                           [(results[b], j)]) for i, j in found]
        gallery = "differ" if number == 0 else f"differ-{number}"
        body += [html_report.sort_buttons(gallery, _SORTS[2:]),
                 html_report.gallery(gallery, cards)]
    for index, (result, mode) in enumerate(zip(results, modes, strict=True)):
        perf = result.performance
        body += [f'<h2 id="mode-{index}">{esc(_mode_title(result))}</h2>',
                 html_report.table(["label", "correct / total", "sensitivity"],
                                   _sensitivity_rows(perf)),
                 f"<p>{esc(_accuracy_line(perf))}</p>",
                 html_report.table(["label", "precision", "recall", "F1"], _prf_rows(perf)),
                 '<ul class="figures">' + "".join(f"<li>{esc(line)}</li>"
                                                  for line in _figure_lines(perf)) + "</ul>",
                 "<h3>Confusion matrix, top-1</h3>",
                 '<p class="muted">Rows expected, columns predicted; click a count to see its '
                 "images.</p>"]
        cards = [_row_card(result, row, source, pairs, page, [mode])
                 for row, source in enumerate(sources[index])]
        body += _confusion_html(index, result, cards)
        body += [f"<h3>Confusion matrix at threshold {perf.threshold:.2f} ({NOT_CLASSIFIED} = "
                 "below threshold)</h3>",
                 html_report.table([CONFUSION_CORNER, *perf.labels, NOT_CLASSIFIED],
                                   _confusion_rows(perf.labels, perf.confusion_at_threshold)),
                 "<h3>Threshold trade-off</h3>",
                 html_report.table(THRESHOLD_HEADER, _threshold_rows(perf)),
                 f"<p>{esc(_suggestion_line(perf))}</p>"]
        conf = result.confidences
        flagged = [row for row in range(perf.images)
                   if conf.top1[row] != conf.expected[row]
                   or conf.probabilities[row].max() < perf.threshold]
        gallery = f"gallery-{index}"
        body += [f"<h3>Misclassified or below threshold {perf.threshold:.2f} "
                 f"({len(flagged)} of {perf.images})</h3>",
                 html_report.sort_buttons(gallery, _SORTS),
                 html_report.gallery(gallery, [cards[row] for row in flagged])]
    if plots:
        body.append('<h2 id="plots">Plots</h2>')
        body += [f'<img class="plot" loading="lazy" src="{esc(html_report.relative_url(p, page))}"'
                 f' alt="{esc(p.stem)}">' for p in plots]
    return html_report.page(f"Performance of {model}", body)


def html_outputs(paths: ModelPaths) -> list[Path]:
    """What write_html replaces: the page and its image folder."""
    return [paths.report_html, html_report.files_dir(paths.report_html)]


def write_html(paths: ModelPaths, results: Sequence[ModeResult],
               agree: metrics.Agreement | None, plots: Sequence[Path]) -> Path:
    """report.html beside report.md, its images in report_files/."""
    if not results:
        raise UserError("nothing to report: run batch_label_images.py first")
    page = paths.report_html
    text = render_html(paths.name, results, agree, plots, page, [paths.test_dir, paths.all_dir])
    atomic.write_text(page, text)
    return page
