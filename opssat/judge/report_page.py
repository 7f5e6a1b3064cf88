"""calc_perf's report.html: report.md's figures, a clickable confusion matrix, the
gallery of misclassified and below-threshold images, and the modes side by side.
Every text from outside (file names, labels, CSV names, paths) goes through
``html_report.esc``; images are shown only from inside the model folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.paths import ModelPaths
from opssat.data import images
from opssat.data.preprocess import Preprocessing, PreprocessOptions
from opssat.judge import decisions, html_report, rehearsal_report, report
from opssat.judge.confidences import NOT_CLASSIFIED, ranked, read_preprocessing
from opssat.onboard import flight


def preprocessing_of(result: report.ModeResult) -> str:
    """The preprocessing a CSV was made with: confidences.csv is ground,
    confidences_onboard.csv on-board; a CSV passed by name is judged by its name."""
    if result.mode in images.PREPROCESS_MODES:
        return result.mode
    stem = result.csv_path.stem
    # flight: SmartCam's own resizer, which onboard reproduces
    return "onboard" if result.mode == flight.MODE or "onboard" in stem or \
        flight.MODE in stem else "ground"


def input_seen(result: report.ModeResult) -> Preprocessing:
    """What the model of a CSV saw: its sidecar's record, else its mode's defaults."""
    recorded = read_preprocessing(result.csv_path)
    return recorded or PreprocessOptions(preprocessing_of(result)).preprocessing()


def _row_card(result: report.ModeResult, row: int, source: Path | None, pairs: dict, page: Path,
              modes: Sequence[str], others: Sequence[tuple[report.ModeResult, int]] = (),
              item: tuple[str, decisions.Item] | None = None) -> str:
    """An image's card: thumbnail, model input(s), expected label and top-3 of each mode
    (and the decision buttons of ``item``, (id, decision item), when given)."""
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
    if item is not None:
        caption += decisions.controls(*item, conf.labels)
    return html_report.card(body, caption, {"conf": f"{top:.6f}", "name": name}, classes)


def _ranking(result: report.ModeResult, row: int, expected: str, named: bool) -> str:
    """Top-3 of one mode, tagged when wrong or below the threshold."""
    probabilities = result.confidences.probabilities[row]
    top = ranked(probabilities, result.confidences.labels, 3)
    tags = ""
    if top[0][0] != expected:
        tags += '<span class="tag">misclassified</span>'
    if top[0][1] < result.performance.threshold:
        tags += '<span class="tag low">below threshold</span>'
    title = f"{html_report.esc(result.mode)} top-3" if named else "top-3"
    return html_report.top_k(top, expected, f"{title} {tags}")


_SORTS = [("confidence ↑", "conf", 1), ("confidence ↓", "conf", -1), ("name", "name", 1)]


def _flagged_rows(result: report.ModeResult) -> list[int]:
    """The rows of the misclassified or below-threshold gallery."""
    conf, perf = result.confidences, result.performance
    top1 = conf.top1  # a property that ranks every row: read it once
    return [row for row in range(perf.images)
            if top1[row] != conf.expected[row] or conf.probabilities[row].max() < perf.threshold]


def _decision_items(index: int, result: report.ModeResult, all_dir: Path | None,
                    items: dict[str, decisions.Item]) -> list[tuple[str, decisions.Item] | None]:
    """The decision (id, item) of each row of the misclassified or below-threshold gallery
    whose image is in data/all (named there as relabel.py takes it, suggesting the mode's
    top-1), else None; ``items`` collects them."""
    conf = result.confidences
    found: list[tuple[str, decisions.Item] | None] = [None] * len(conf.filenames)
    top1 = conf.top1  # a property that ranks every row: read it once
    for row in _flagged_rows(result) if all_dir is not None else []:
        name, expected = conf.filenames[row], conf.expected[row]
        path = html_report.locate_image(name, expected, [all_dir])
        if path is None or path.parent.parent != all_dir:
            continue
        item_id = f"d{index}-{row}"
        items[item_id] = decisions.Item(f"{path.parent.name}/{path.name}", expected, top1[row])
        found[row] = (item_id, items[item_id])
    return found


def _decision_parts(model: str, results: Sequence[report.ModeResult],
                    items: dict[str, decisions.Item]) -> tuple[list[str], str]:
    """The bar above the page and the data block below it (nothing without items)."""
    if not items:
        return [], ""
    labels = results[0].confidences.labels
    texts = [r.csv_path.read_text(encoding="utf-8", errors="replace") for r in results]
    key = decisions.run_key(model, "report", texts)
    return ([decisions.toolbar(labels), decisions.howto(model)],
            decisions.data_block(key, labels, items))


def _confusion_html(index: int, result: report.ModeResult, cards: list[str]) -> list[str]:
    """The top-1 confusion matrix; each cell links to a panel of its images."""
    conf, perf = result.confidences, result.performance
    position = {label: i for i, label in enumerate(conf.labels)}
    cells: dict[tuple[int, int], list[str]] = {}
    top1 = conf.top1  # a property that ranks every row: read it once
    for row, card in enumerate(cards):
        key = (position[conf.expected[row]], position[top1[row]])
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
                    f'<section class="cell" id="{anchor}"><h3>{esc(result.mode)}: expected '
                    f"{esc(label)}, predicted {esc(perf.labels[c])} ({count} images) "
                    f'<a href="#confusion-{index}">close</a></h3>'
                    + html_report.gallery(f"{anchor}-gallery", cells.get((r, c), []))
                    + "</section>")
        rows.append(f"<tr><th>{esc(label)}</th>{''.join(tds)}</tr>")
    table = (f'<table class="confusion" id="confusion-{index}" data-mode="{esc(result.mode)}">'
             f"<tr><th>{esc(report.CONFUSION_CORNER)}</th>{head}</tr>{''.join(rows)}</table>")
    return [table, *panels]


@dataclass
class _Page:
    """What every HTML section needs besides the report: where the page is, each mode's
    preprocessing, the image file of each CSV row and the URLs written for each file."""

    path: Path
    preprocessing: list[str]  # per mode
    sources: list[list[Path | None]]  # per mode, per row
    pairs: dict[Path, html_report.Pair]
    all_dir: Path | None = None  # data/all: its images in the galleries take decisions
    items: dict[str, decisions.Item] = field(default_factory=dict)  # filled by _mode_html


def _write_images(rep: report.Report, page: Path, roots: Sequence[Path],
                  outputs: atomic.OutputSet | None, all_dir: Path | None) -> _Page:
    """Find every row's image and write the thumbnails and model inputs the page shows:
    each mode's input, and both modes' for an image whose top-1 differs between them."""
    seen = [input_seen(r) for r in rep.modes]
    modes = [preprocessing.name for preprocessing in seen]
    files = html_report.ImageFiles(page, inputs=dict(zip(modes, seen, strict=True)))
    sources: list[list[Path | None]] = []
    for result, mode in zip(rep.modes, modes, strict=True):
        conf = result.confidences
        found = [html_report.locate_image(n, e, roots)
                 for n, e in zip(conf.filenames, conf.expected, strict=True)]
        for source in found:
            if source is not None:
                files.want(source, [mode])
        sources.append(found)
    for compared in rep.comparisons:
        a, b = compared.first, compared.second
        for i, _ in compared.differing:
            if sources[a][i] is not None:
                files.want(sources[a][i], [modes[a], modes[b]])
    return _Page(page, modes, sources, files.write(outputs), all_dir)


# --- sections: each gets the report and the page, and returns its HTML parts ----------


def _title(rep: report.Report, page: _Page) -> list[str]:
    esc = html_report.esc
    body = [f"<h1>Performance of model <code>{esc(rep.model)}</code></h1>", "<nav>"]
    if len(rep.modes) >= 2:
        body.append('<a href="#compare">modes side by side</a>')
    body += [f'<a href="#mode-{i}">{esc(r.mode)}</a>' for i, r in enumerate(rep.modes)]
    return body + [
        '<a href="#plots">plots</a>' if rep.plots else "", "</nav>",
        '<p class="muted">Main figures: the top-1 label of every test image, whatever its '
        'confidence. The "at threshold" figures count the images whose top-1 confidence '
        "reaches the threshold: SmartCam deletes the others on board; what it downlinks "
        "also depends on labels_keep and the models after this one (rehearse.py runs "
        "SmartCam's own app). Each image is shown as a thumbnail "
        "(click for the original) beside the model's input as its preprocessing made it.</p>"]


def _comparison(rep: report.Report, page: _Page) -> list[str]:
    """The modes side by side, then for each compared pair its agreement and the images
    whose top-1 differs."""
    esc = html_report.esc
    body = []
    if len(rep.modes) >= 2:
        body += ['<h2 id="compare">Modes side by side</h2>',
                 html_report.table(["figure", *(r.mode for r in rep.modes)],
                                   report.comparison_rows(rep.modes))]
    for number, compared in enumerate(rep.comparisons):
        first, second = rep.pair(compared)
        a, b = compared.first, compared.second
        body.append(f"<p>{esc(report.agreement_line([first, second], compared.agreement))}</p>")
        body.append(f"<h3>Images whose top-1 differs, {esc(first.mode)} vs "
                    f"{esc(second.mode)} ({len(compared.differing)})</h3>")
        inputs = [page.preprocessing[a], page.preprocessing[b]]
        cards = [_row_card(first, i, page.sources[a][i], page.pairs, page.path, inputs,
                           [(second, j)]) for i, j in compared.differing]
        gallery = "differ" if number == 0 else f"differ-{number}"
        body += [html_report.sort_buttons(gallery, _SORTS[2:]),
                 html_report.gallery(gallery, cards)]
    return body


def _per_mode(rep: report.Report, page: _Page) -> list[str]:
    return [part for index in range(len(rep.modes)) for part in _mode_html(rep, page, index)]


def _mode_html(rep: report.Report, page: _Page, index: int) -> list[str]:
    """One mode's figures, its clickable confusion matrix and its gallery of
    misclassified and below-threshold images."""
    esc = html_report.esc
    result = rep.modes[index]
    perf = result.performance
    body = [f'<h2 id="mode-{index}">{esc(report.mode_title(result))}</h2>',
            html_report.table(["label", "correct / total", "sensitivity"],
                              report.sensitivity_rows(perf)),
            f"<p>{esc(report.accuracy_line(perf))}</p>",
            html_report.table(["label", "precision", "recall", "F1"], report.prf_rows(perf)),
            '<ul class="figures">' + "".join(f"<li>{esc(line)}</li>"
                                             for line in report.figure_lines(perf)) + "</ul>",
            "<h3>Confusion matrix, top-1</h3>",
            '<p class="muted">Rows expected, columns predicted; click a count to see its '
            "images.</p>"]
    found = _decision_items(index, result, page.all_dir, page.items)
    cards = [_row_card(result, row, source, page.pairs, page.path, [page.preprocessing[index]],
                       item=found[row])
             for row, source in enumerate(page.sources[index])]
    body += _confusion_html(index, result, cards)
    body += [f"<h3>Confusion matrix at threshold {perf.threshold:.2f} ({NOT_CLASSIFIED} = "
             "below threshold)</h3>",
             html_report.table([report.CONFUSION_CORNER, *perf.labels, NOT_CLASSIFIED],
                               report.confusion_rows(perf.labels, perf.confusion_at_threshold)),
             "<h3>Threshold trade-off</h3>",
             html_report.table(report.THRESHOLD_HEADER, report.threshold_rows(perf)),
             f"<p>{esc(report.suggestion_line(perf))}</p>"]
    flagged = _flagged_rows(result)
    gallery = f"gallery-{index}"
    return body + [f"<h3>Misclassified or below threshold {perf.threshold:.2f} "
                   f"({len(flagged)} of {perf.images})</h3>",
                   html_report.sort_buttons(gallery, _SORTS),
                   html_report.gallery(gallery, [cards[row] for row in flagged])]


def _plots(rep: report.Report, page: _Page) -> list[str]:
    if not rep.plots:
        return []
    esc = html_report.esc
    return ['<h2 id="plots">Plots</h2>',
            *(f'<img class="plot" loading="lazy" '
              f'src="{esc(html_report.relative_url(p, page.path))}" alt="{esc(p.stem)}">'
              for p in rep.plots)]


def _rehearsal(rep: report.Report, page: _Page) -> list[str]:
    return rehearsal_report.render_html(rep.rehearsal) if rep.rehearsal else []


#: report.html's sections, in order (see ``report.Report`` for adding one).
HTML_SECTIONS: tuple[Callable[[report.Report, _Page], list[str]], ...] = (
    _title, _comparison, _per_mode, _plots, _rehearsal)


def render_html(rep: report.Report, page: Path, roots: Sequence[Path],
                outputs: atomic.OutputSet | None = None, all_dir: Path | None = None) -> str:
    """report.html: report.md's figures, a clickable confusion matrix, the gallery of
    misclassified and below-threshold images, and the modes side by side; each of those
    images that is in ``all_dir`` (data/all) can be decided on (relabel.py's CSV). Writes
    the images it shows first (staged in ``outputs`` when given)."""
    written = _write_images(rep, page, roots, outputs, all_dir)
    body = [part for section in HTML_SECTIONS for part in section(rep, written)]
    bar, data = _decision_parts(rep.model, rep.modes, written.items)
    body[1:1] = bar
    return html_report.page(f"Performance of {rep.model}", [*body, data])


def html_outputs(paths: ModelPaths) -> list[Path]:
    """What write_html replaces: the page and its image folder."""
    return [paths.report_html, html_report.files_dir(paths.report_html)]


def write_html(paths: ModelPaths, rep: report.Report,
               outputs: atomic.OutputSet | None = None) -> Path:
    """report.html beside report.md, its images in report_files/ (both staged in
    ``outputs`` when given)."""
    page = paths.report_html
    text = render_html(rep, page, [paths.test_dir, paths.all_dir], outputs, paths.all_dir)
    atomic.write_text(page, text, outputs)
    return page
