"""The toolkit's HTML pages (calc_perf's report.html, review_labels' review.html):
one style, one way to show an image, and the small files beside each page.

A page must open offline, fast, for a few thousand images: every image is a
small file in ``<page>_files/`` (a colour thumbnail and the model's input as
the chosen preprocessing made it, both lazily loaded), the style and the few
lines of JavaScript are inline, and nothing comes from a network. Files of the
previous run are reused while their source image is unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from opssat.core import atomic
from opssat.data import images
from opssat.data.preprocess import Preprocessing, PreprocessOptions
from opssat.onboard import smartcam

#: Longest side of the colour thumbnail shown beside the model's input.
THUMBNAIL_SIZE = 160
#: How many decodes run at once while a page's files are written.
WORKERS = min(4, os.cpu_count() or 1)

STYLE = """
:root { --fg: #1d2433; --muted: #5b6475; --line: #d6dbe4; --bg: #f6f7fa; --accent: #1f5fbf;
        --bad: #b3261e; --low: #8a5a00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg);
       margin: 0 auto; padding: 1rem 1.5rem 4rem; max-width: 1400px; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
nav a { margin-right: 1rem; }
a { color: var(--accent); }
.muted { color: var(--muted); }
table { border-collapse: collapse; margin: .4rem 0 1rem; background: #fff; }
th, td { border: 1px solid var(--line); padding: .25rem .6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.confusion td a { display: block; text-decoration: none; font-weight: 600; }
table.confusion td.diag { background: #e7f0ff; }
table.confusion td.off[data-count]:not([data-count="0"]) { background: #fdecea; }
ul.figures { padding-left: 1.2rem; }
img.plot { max-width: 100%; background: #fff; border: 1px solid var(--line); margin: .4rem 0; }
.cell { display: none; background: #fff; border: 2px solid var(--accent); padding: .6rem 1rem;
        margin: 1rem 0; }
.cell:target { display: block; }
.tools { margin: .4rem 0; }
.more { font: inherit; margin: .5rem 0; padding: .15rem .6rem; cursor: pointer; }
.tools button { font: inherit; margin-right: .3rem; padding: .15rem .6rem; cursor: pointer; }
.gallery { display: flex; flex-wrap: wrap; gap: .6rem; }
.card { margin: 0; padding: .4rem; background: #fff; border: 1px solid var(--line);
        border-radius: 4px; width: min-content; }
.card.wrong { border-color: var(--bad); }
.card.low:not(.wrong) { border-color: var(--low); }
.pair { display: flex; gap: .3rem; }
.pair figure { margin: 0; text-align: center; font-size: 11px; color: var(--muted); }
.pair img { width: 120px; height: 120px; object-fit: contain; background: #000;
            display: block; }
.card figcaption { font-size: 12px; margin-top: .3rem; overflow-wrap: anywhere; }
.card .name { font-weight: 600; }
.card ol { margin: .2rem 0 0; padding-left: 1.2rem; }
.card li.hit { font-weight: 600; }
.card .missing { width: 120px; height: 120px; display: flex; align-items: center;
                 justify-content: center; background: #eee; color: var(--bad); }
.tag { display: inline-block; padding: 0 .35rem; border-radius: 3px; font-size: 11px;
       color: #fff; background: var(--bad); margin-right: .2rem; }
.tag.low { background: var(--low); }
.tag.diff { background: var(--accent); }
.decisions-bar { position: sticky; top: 0; z-index: 2; background: #fff; padding: .4rem .6rem;
                 border: 1px solid var(--line); margin: .6rem 0; }
.decisions-bar button { font: inherit; padding: .15rem .6rem; cursor: pointer; }
.decide { margin-top: .3rem; font-size: 12px; }
.decide button { font: inherit; margin: .1rem .15rem .1rem 0; padding: 0 .35rem; cursor: pointer; }
.decide button.chosen { background: var(--accent); color: #fff; }
.decide .decision { font-weight: 600; color: var(--accent); min-height: 1.2em; }
.card { scroll-margin-top: 5rem; }
.card.current { outline: 3px solid var(--accent); outline-offset: 1px; }
.card.decided { background: #eef4ff; }
"""

#: The pages' one script, allowed by its hash. Galleries: their cards wait in a
#: <template> (inert: nothing in it loads) and come out PAGE at a time, a cell's when
#: it is opened; "show all" and sorting bring out the rest. A sort button has
#: data-target (the gallery's id), data-key (a data-* attribute of the cards) and
#: data-dir (1 or -1). Decisions (the second part; its data and buttons come from
#: ``decisions``): on a page with a decisions-data block each card can be decided by
#: click or key, the decisions stay in local storage and download as relabel.py's
#: CSV. Outside text is only ever set as textContent.
SCRIPT = """
(function () {
  var PAGE = 60;
  function fill(gallery, all) {
    var template = document.getElementById(gallery.id + '-cards');
    if (!template) return;
    var cards = template.content.children;
    var count = all ? cards.length : Math.max(0, PAGE - gallery.children.length);
    var batch = document.createDocumentFragment();
    while (count-- > 0 && cards.length) batch.appendChild(cards[0]);
    gallery.appendChild(batch);
    document.dispatchEvent(new Event('opssat-filled'));
    var more = document.querySelector('button[data-more="' + gallery.id + '"]');
    if (more) {
      more.hidden = cards.length === 0;
      more.textContent = 'show all (' + cards.length + ' more)';
    }
  }
  function openTarget() {
    var target = location.hash && document.getElementById(location.hash.slice(1));
    if (target) target.querySelectorAll('.gallery').forEach(function (g) { fill(g, false); });
  }
  window.opssatShowAll = function () {
    document.querySelectorAll('.gallery').forEach(function (g) { fill(g, true); });
  };
  document.addEventListener('click', function (event) {
    var more = event.target.closest('button[data-more]');
    if (more) { fill(document.getElementById(more.dataset.more), true); return; }
    var button = event.target.closest('button[data-target]');
    if (!button) return;
    var gallery = document.getElementById(button.dataset.target);
    fill(gallery, true);
    var key = button.dataset.key, dir = Number(button.dataset.dir);
    var cards = Array.prototype.slice.call(gallery.children);
    cards.sort(function (a, b) {
      var x = a.dataset[key], y = b.dataset[key];
      var nx = parseFloat(x), ny = parseFloat(y);
      return dir * (isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny);
    });
    cards.forEach(function (card) { gallery.appendChild(card); });
  });
  window.addEventListener('hashchange', openTarget);
  document.querySelectorAll('.gallery').forEach(function (g) {
    if (!g.closest('.cell')) fill(g, false);
  });
  openTarget();
})();
""" + """
(function () {
  var block = document.getElementById('decisions-data');
  if (!block) return;
  var info = JSON.parse(block.textContent);
  var storeKey = 'opssat-decisions/' + info.key;
  var state = {decisions: {}, history: []};
  try {
    var saved = JSON.parse(localStorage.getItem(storeKey) || 'null');
    if (saved && saved.decisions && saved.history) state = saved;
  } catch (e) { /* no storage (private mode): decisions last until the page closes */ }
  var current = null;
  var own = Object.prototype.hasOwnProperty;
  function save() {
    try { localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) { /* see above */ }
  }
  function itemOf(el) { return info.items[el.dataset.item]; }
  function filesOf(el) {
    var item = itemOf(el), box = el.querySelector('input[data-burst]');
    return box && box.checked ? [item.file].concat(item.members) : [item.file];
  }
  function shown() {
    return Array.prototype.filter.call(document.querySelectorAll('.decide'),
                                       function (el) { return el.offsetParent !== null; });
  }
  function setCurrent(el, still) {
    if (current) current.closest('.card').classList.remove('current');
    current = el;
    if (!el) return;
    var card = el.closest('.card');
    card.classList.add('current');
    if (!still) card.scrollIntoView({block: 'nearest'});
  }
  function move(step) {
    var list = shown(), at = list.indexOf(current);
    if (at < 0) { setCurrent(list[0] || null); return; }
    if (at + step >= list.length) {
      var gallery = current.closest('.gallery');
      var more = gallery && document.querySelector('button[data-more="' + gallery.id + '"]');
      if (more && !more.hidden) { more.click(); list = shown(); }
    }
    var next = list[at + step];
    if (next) setCurrent(next);
  }
  function describe(item, label) {
    if (label === undefined) return '';
    if (label === '') return 'left unlabelled';
    return label === item.current ? 'keep ' + label : '\\u2192 ' + label;
  }
  function render() {
    document.querySelectorAll('.decide').forEach(function (el) {
      var item = itemOf(el);
      var label = own.call(state.decisions, item.file) ? state.decisions[item.file] : undefined;
      el.querySelector('.decision').textContent = describe(item, label);
      el.closest('.card').classList.toggle('decided', label !== undefined);
      el.querySelectorAll('button').forEach(function (b) {
        var value = b.dataset.choice === 'accept' ? item.suggested :
          b.dataset.choice === 'keep' ? item.current : info.labels[Number(b.dataset.index)];
        b.classList.toggle('chosen', label !== undefined && value === label);
      });
    });
    var files = {}, decided = 0, rows = 0;
    Object.keys(info.items).forEach(function (id) {
      var item = info.items[id];
      [item.file].concat(item.members).forEach(function (f) { files[f] = true; });
    });
    Object.keys(files).forEach(function (f) {
      if (own.call(state.decisions, f)) { decided += 1; if (state.decisions[f] !== '') rows += 1; }
    });
    document.getElementById('decisions-count').textContent =
      decided + ' of ' + Object.keys(files).length + ' decided (' + rows + ' row' +
      (rows === 1 ? '' : 's') + ' in ' + info.csv_name + ')';
  }
  function decide(el, label) {
    var before = {};
    filesOf(el).forEach(function (f) {
      before[f] = own.call(state.decisions, f) ? state.decisions[f] : null;
      state.decisions[f] = label;
    });
    state.history.push({item: el.dataset.item, before: before});
    save();
    render();
    setCurrent(el);
    move(1);
  }
  function undo() {
    var last = state.history.pop();
    if (!last) return;
    Object.keys(last.before).forEach(function (f) {
      if (last.before[f] === null) delete state.decisions[f];
      else state.decisions[f] = last.before[f];
    });
    save();
    render();
    var el = document.querySelector('.decide[data-item="' + CSS.escape(last.item) + '"]');
    if (el && el.offsetParent !== null) setCurrent(el);
  }
  function cell(value) {
    return /[",\\r\\n]/.test(value) ? '"' + value.replace(/"/g, '""') + '"' : value;
  }
  function download() {
    var lines = [info.columns.join(',')];
    Object.keys(state.decisions).sort().forEach(function (f) {
      if (state.decisions[f] !== '') lines.push(cell(f) + ',' + cell(state.decisions[f]));
    });
    var blob = new Blob([lines.join('\\n') + '\\n'], {type: 'text/csv'});
    var link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = info.csv_name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 1000);
  }
  function choose(el, button) {
    var item = itemOf(el), choice = button.dataset.choice;
    decide(el, choice === 'accept' ? item.suggested : choice === 'keep' ? item.current :
      info.labels[Number(button.dataset.index)]);
  }
  document.addEventListener('click', function (event) {
    if (event.target.closest('#decisions-download')) { download(); return; }
    if (event.target.closest('#decisions-undo')) { undo(); return; }
    var el = event.target.closest('.decide');
    var button = event.target.closest('.decide button');
    if (el && button) choose(el, button);
    else if (el) setCurrent(el);
  });
  document.addEventListener('keydown', function (event) {
    var target = event.target, key = event.key;
    if (event.altKey || event.metaKey || target.isContentEditable ||
        /^(TEXTAREA|SELECT)$/.test(target.tagName) ||
        (target.tagName === 'INPUT' && target.type !== 'checkbox')) return;
    if (event.ctrlKey) {
      if (key === 'z') { undo(); event.preventDefault(); }
      return;
    }
    var el = current && current.offsetParent !== null ? current : null;
    var number = /^[1-9]$/.test(key) ? Number(key) : 0;
    if (key === 'u') undo();
    else if (key === 'n' || key === 'ArrowRight') move(el ? 1 : 0);
    else if (key === 'p' || key === 'ArrowLeft') move(el ? -1 : 0);
    else if (!el) return;
    else if (key === 'a') decide(el, itemOf(el).suggested);
    else if (key === 'k') decide(el, itemOf(el).current);
    else if (key === 'b' && el.querySelector('input[data-burst]')) {
      el.querySelector('input[data-burst]').click();
    } else if (number && number <= info.labels.length) decide(el, info.labels[number - 1]);
    else return;
    event.preventDefault();
  });
  document.addEventListener('opssat-filled', render);
  render();
  setCurrent(shown()[0] || null, true);  // no scrolling before the reader asks
})();
"""


#: The page's own script, allowed by its hash: the policy has no 'unsafe-inline', so a
#: script or event handler that slipped into a page could not run.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
       f"script-src '{SCRIPT_HASH}'")


def esc(value: object) -> str:
    """Text from outside (file names, labels, CSV names, paths) made inert in HTML."""
    return html.escape(str(value), quote=True)


def files_dir(page: Path) -> Path:
    """``report.html`` -> ``report_files/``: the folder of a page's images."""
    return page.with_name(f"{page.stem}_files")


def locate_image(name: str, expected: str, roots: Sequence[Path]) -> Path | None:
    """The image a CSV row names: ``<root>/<name>``, else ``<root>/<expected>/<basename>``
    (test CSVs name ``label/file``, out-of-fold CSVs a bare file name). Only files
    inside a root count (symlinks resolved): an absolute or ``../`` name in a CSV
    never brings an outside file onto a page."""
    base = Path(name).name
    for root in roots:
        inside = root.resolve()
        for candidate in (root / name, root / expected / base):
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                continue
            if candidate.is_file() and inside in resolved.parents:
                return candidate
    return None


@dataclass(frozen=True)
class Pair:
    """Page-relative URLs of one image's thumbnail and model inputs (mode -> URL);
    ``None`` where the image could not be decoded."""

    thumbnail: str | None
    inputs: dict[str, str | None]


class ImageFiles:
    """Writes the thumbnail and model inputs of every image a page shows into
    ``<page>_files/``: staged, then swapped in whole, reusing unchanged files.

    An input is asked for by a name: a preprocessing given in ``inputs`` (what a
    CSV's sidecar says its model saw), else a mode with ``onboard_channels``."""

    def __init__(self, page: Path, onboard_channels: int = smartcam.ONBOARD_CHANNELS,
                 inputs: Mapping[str, Preprocessing] | None = None) -> None:
        self.page = page
        self.folder = files_dir(page)
        self.onboard_channels = onboard_channels
        self.inputs = dict(inputs or {})
        self._wanted: dict[Path, set[str]] = {}

    def want(self, source: Path, modes: Iterable[str]) -> None:
        """Ask for ``source``'s thumbnail and its input in each named preprocessing."""
        self._wanted.setdefault(source, set()).update(modes)

    def preprocessing(self, name: str) -> Preprocessing:
        """The preprocessing an input name stands for."""
        if name in self.inputs:
            return self.inputs[name]
        return PreprocessOptions(name, self.onboard_channels).preprocessing()

    def _key(self, source: Path) -> str:
        stat = source.stat()
        text = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def _input_name(self, key: str, preprocessing: Preprocessing) -> str:
        mode = preprocessing.mode
        channels = preprocessing.onboard_channels if mode == "onboard" else ""
        version = hashlib.sha1(f"{key}|{preprocessing.identity}".encode()).hexdigest()[:20]
        return f"{version}_{mode}{channels}.png"

    def _make(self, staged: Path, source: Path, modes: tuple[str, ...]) -> Pair:
        key = self._key(source)
        rel = self.folder.name
        names = {"thumbnail": f"{key}.jpg",
                 **{m: self._input_name(key, self.preprocessing(m)) for m in modes}}
        done: dict[str, str | None] = {}
        for what, name in names.items():
            previous = self.folder / name
            try:
                if previous.is_file():
                    shutil.copy2(previous, staged / name)
                elif what == "thumbnail":
                    _write_thumbnail(source, staged / name)
                else:
                    _write_input(source, self.preprocessing(what), staged / name)
                done[what] = f"{rel}/{name}"
            except images.UnreadableImageError:
                done[what] = None
        return Pair(done.pop("thumbnail"), done)

    def write(self, outputs: atomic.OutputSet | None = None) -> dict[Path, Pair]:
        """Write every wanted file (one task per source, so no two threads write the
        same file); return source -> its URLs. Call once, before the page. With
        ``outputs`` the folder is staged there, to be committed with the page."""
        wanted = [(source, tuple(sorted(modes))) for source, modes in self._wanted.items()]
        if outputs is not None:
            staged = outputs.stage(self.folder)
            staged.mkdir()
            return self._write_into(staged, wanted)
        with atomic.staged_dir(self.folder) as staged:
            return self._write_into(staged, wanted)

    def _write_into(self, staged: Path, wanted: list[tuple[Path, tuple[str, ...]]]
                    ) -> dict[Path, Pair]:
        with ThreadPoolExecutor(WORKERS) as pool:
            pairs = list(pool.map(lambda item: self._make(staged, *item), wanted))
        return {source: pair for (source, _), pair in zip(wanted, pairs, strict=True)}


def _write_thumbnail(source: Path, target: Path) -> None:
    img = images.open_rgb(source)
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    img.save(target, format="JPEG", quality=85)


def _write_input(source: Path, preprocessing: Preprocessing, target: Path) -> None:
    """The model's input, lossless; one channel when the three are equal (gray)."""
    pixels = images.load_pixels(source, preprocessing)
    if np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0],
                                                                         pixels[..., 2]):
        Image.fromarray(pixels[..., 0], mode="L").save(target, format="PNG")
    else:
        Image.fromarray(pixels, mode="RGB").save(target, format="PNG")


# --- page parts -------------------------------------------------------------


def page(title: str, body: Sequence[str]) -> str:
    """A whole page: inline style and script, nothing from a network."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No request may leave the machine, whatever a future edit adds.
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        "<noscript><p>This page shows its images with JavaScript: allow it for this file."
        "</p></noscript>",
        *body,
        f"<script>{SCRIPT}</script>",
        "</body></html>",
        "",
    ])


def table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """A plain table of already-formatted text cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def sort_buttons(gallery_id: str, keys: Sequence[tuple[str, str, int]]) -> str:
    """Buttons that sort a gallery: (caption, data-* key of the cards, 1 or -1)."""
    buttons = "".join(
        f'<button type="button" data-target="{esc(gallery_id)}" data-key="{esc(key)}" '
        f'data-dir="{direction}">{esc(caption)}</button>' for caption, key, direction in keys)
    return f'<div class="tools">sort: {buttons}</div>'


def _image(url: str | None, caption: str, link: str | None = None) -> str:
    if url is None:
        inner = '<div class="missing">cannot decode</div>'
    else:
        inner = f'<img loading="lazy" decoding="async" src="{esc(url)}" alt="{esc(caption)}">'
        inner = f'<a href="{esc(link or url)}">{inner}</a>'
    return f"<figure>{inner}<figcaption>{esc(caption)}</figcaption></figure>"


def image_pair(pair: Pair | None, original: str | None, modes: Sequence[str]) -> str:
    """The thumbnail (linking to the original) beside the model input of each mode."""
    if pair is None:
        return '<div class="pair"><div class="missing">file not found</div></div>'
    parts = [_image(pair.thumbnail, "thumbnail", original)]
    parts += [_image(pair.inputs.get(mode), f"model input ({mode})") for mode in modes]
    return f'<div class="pair">{"".join(parts)}</div>'


def top_k(ranked: Sequence[tuple[str, float]], expected: str, caption_html: str = "") -> str:
    """The top-k labels and confidences, the expected label in bold, under a caption
    given as HTML."""
    items = "".join(
        f'<li{" class=hit" if label == expected else ""}>{esc(label)} {conf:.3f}</li>'
        for label, conf in ranked)
    head = f"<div>{caption_html}</div>" if caption_html else ""
    return f"{head}<ol>{items}</ol>"


def gallery(gallery_id: str, cards: Sequence[str]) -> str:
    """A gallery: the cards wait in an inert template and the script shows them a
    page at a time, so a page with thousands of images opens fast."""
    gid = esc(gallery_id)
    return (f'<div class="gallery" id="{gid}"></div>'
            f'<template id="{gid}-cards">{"".join(cards)}</template>'
            f'<button type="button" class="more" data-more="{gid}" hidden>show all</button>')


def card(body: str, caption: str, data: dict[str, str], classes: Sequence[str] = ()) -> str:
    """One image's box in a gallery; ``data`` becomes data-* attributes (sort keys)."""
    attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in data.items())
    cls = " ".join(["card", *classes])
    return f'<figure class="{cls}"{attrs}>{body}<figcaption>{caption}</figcaption></figure>'


def relative_url(target: Path, page: Path) -> str:
    """``target`` as a URL relative to ``page``'s folder (links to original images),
    percent-encoded so that names with ``%``, ``#`` or ``?`` still work."""
    return urllib.parse.quote(Path(os.path.relpath(target, page.parent)).as_posix(),
                              safe="/", errors="surrogateescape")
