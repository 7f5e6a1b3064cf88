"""report.html against the CSVs it shows, and in a real browser (headless Chromium):
every image loads, the confusion-matrix counts match the CSV, sorting works."""

from __future__ import annotations

import base64
import collections
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from page_fixture import LABELS, make_model
from PIL import Image

from opssat.core.paths import ModelPaths
from opssat.data import images
from opssat.judge import html_report, report, report_page, report_plots
from opssat.judge.confidences import load_confidences


class PageParser(HTMLParser):
    """Collects what the tests compare with the CSV: confusion cells, cell panels,
    galleries and every URL the page loads or links to."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str, str], int] = {}
        self.cards: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self._mode: str | None = None
        self._containers: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and "confusion" in (a.get("class") or ""):
            self._mode = a["data-mode"]
        if tag == "td" and "data-count" in a and self._mode is not None:
            self.cells[(self._mode, a["data-expected"], a["data-predicted"])] = int(
                a["data-count"])
        if tag in ("section", "div", "template"):
            # A gallery's cards wait in the template "<gallery id>-cards".
            self._containers.append((a.get("id") or "").removesuffix("-cards") or None)
        if tag == "figure" and "card" in (a.get("class") or "").split():
            container = next(c for c in reversed(self._containers) if c)
            self.cards[container].append(a)
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a":
            self.links.append(a["href"])
        if tag in ("script", "link", "iframe"):
            self.scripts.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._mode = None
        if tag in ("section", "div", "template"):
            self._containers.pop()


def write_report(paths: ModelPaths, plots: bool = False) -> tuple[list[report.ModeResult], Path]:
    """What calc_perf writes (plots only when asked: they take seconds)."""
    csvs = [(mode, paths.confidences_csv(mode)) for mode in images.PREPROCESS_MODES]
    rep = report.build(paths.name, csvs, 0.7, 0.95)
    if plots:
        rep.plots = report_plots.write_plots(paths, rep.modes)
    report.write_report(paths, rep)
    return rep.modes, report_page.write_html(paths, rep)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[ModelPaths, list[report.ModeResult], Path]:
    """One page for the tests that only read it."""
    paths = make_model(tmp_path_factory.mktemp("repo"))
    results, html_path = write_report(paths, plots=True)
    return paths, results, html_path


def parse(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_page_matches_the_csvs(page) -> None:
    paths, results, html_path = page
    assert html_path == paths.report_html
    parsed = parse(html_path)
    for index, mode in enumerate(images.PREPROCESS_MODES):
        conf = load_confidences(paths.confidences_csv(mode))
        # The confusion matrix, counted here from the CSV rows themselves.
        counted = collections.Counter(zip(conf.expected, conf.top1, strict=True))
        for expected in LABELS:
            for predicted in LABELS:
                assert parsed.cells[(mode, expected, predicted)] == counted[(expected, predicted)]
                cell = (f"cell-{index}-{LABELS.index(expected)}-{LABELS.index(predicted)}"
                        "-gallery")
                names = sorted(c["data-name"] for c in parsed.cards.get(cell, []))
                assert names == sorted(n for n, e, t in zip(conf.filenames, conf.expected,
                                                            conf.top1, strict=True)
                                       if (e, t) == (expected, predicted))
        # The gallery: exactly the misclassified and below-threshold images.
        flagged = {n for n, e, t, p in zip(conf.filenames, conf.expected, conf.top1,
                                           conf.top1_confidence, strict=True)
                   if e != t or p < 0.7}
        assert flagged and len(flagged) < len(conf.filenames)
        gallery = parsed.cards[f"gallery-{index}"]
        assert {c["data-name"] for c in gallery} == flagged
        for card in gallery:
            row = conf.filenames.index(card["data-name"])
            assert float(card["data-conf"]) == pytest.approx(conf.top1_confidence[row], abs=1e-6)
    # Side by side: the images whose top-1 differs between the modes.
    ground, onboard = (load_confidences(paths.confidences_csv(m))
                       for m in images.PREPROCESS_MODES)
    top = dict(zip(onboard.filenames, onboard.top1, strict=True))
    differ = {n for n, t in zip(ground.filenames, ground.top1, strict=True) if top[n] != t}
    assert differ
    assert {c["data-name"] for c in parsed.cards["differ"]} == differ


def test_page_is_offline_and_shows_the_model_input(page) -> None:
    paths, _, html_path = page
    parsed = parse(html_path)
    text = html_path.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert all(not s.get("src") and not s.get("href") for s in parsed.scripts)
    for url in parsed.images + [u for u in parsed.links if not u.startswith("#")]:
        assert (html_path.parent / url).is_file(), url
    assert all('loading="lazy"' in tag for tag in re.findall(r"<img [^>]*>", text))
    # Each image's model input is exactly what the preprocessing function made.
    source = paths.test_dir / "edge" / sorted(os.listdir(paths.test_dir / "edge"))[0]
    inputs = {m: [u for u in parsed.images if u.endswith(f"_{m}.png") or
                  u.endswith(f"_{m}1.png")] for m in images.PREPROCESS_MODES}
    for mode, urls in inputs.items():
        expected = images.load_pixels(source, images.Preprocessing(mode=mode))
        shown = [np.asarray(Image.open(html_path.parent / u).convert("RGB")) for u in urls]
        assert any(np.array_equal(s, expected) for s in shown), mode
    assert not np.array_equal(images.load_pixels(source, images.Preprocessing(mode="ground")),
                              images.load_pixels(source, images.Preprocessing(mode="onboard")))


def test_rerun_reuses_the_image_files(repo_root: Path) -> None:
    paths = make_model(repo_root, per_label=2)
    _, html_path = write_report(paths)
    folder = html_path.with_name("report_files")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    one = next(iter(before))
    write_report(paths)
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert after.keys() == before.keys()
    assert after[one] == before[one]  # copied with its time, not made again
    assert not list(html_path.parent.glob(".report_files*"))  # no staging left behind


# --- in a real browser -------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

#: Runs in the page once everything has loaded; writes its findings into the DOM.
CHECK_SCRIPT = """
<script>
window.addEventListener('load', function () {
  var shownFirst = document.images.length;
  window.opssatShowAll();
  var images = Array.prototype.slice.call(document.images);
  Promise.all(images.map(function (img) {
    return img.complete ? null : new Promise(function (done) {
      img.addEventListener('load', done);
      img.addEventListener('error', done);
    });
  })).then(function () {
    var broken = images.filter(function (img) {
      return !(img.complete && img.naturalWidth > 0);
    }).map(function (img) { return img.getAttribute('src'); });
    var cells = Array.prototype.map.call(
      document.querySelectorAll('table.confusion td[data-count]'), function (td) {
        var link = td.querySelector('a');
        var panel = link ? document.querySelector(link.getAttribute('href')) : null;
        return {mode: td.closest('table').dataset.mode, expected: td.dataset.expected,
                predicted: td.dataset.predicted, shown: Number(td.textContent.trim()),
                cards: panel ? panel.querySelectorAll('.card').length : 0};
      });
    document.querySelector('button[data-target="gallery-0"][data-dir="-1"]').click();
    var order = Array.prototype.map.call(document.getElementById('gallery-0').children,
                                         function (card) { return Number(card.dataset.conf); });
    var out = document.createElement('pre');
    out.id = 'check-result';
    out.textContent = JSON.stringify({shown_first: shownFirst, images: images.length,
                                      broken: broken, cells: cells, order: order});
    document.body.appendChild(out);
  });
});
</script>
"""


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_page_in_headless_chromium(page, tmp_path: Path) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run does it)")
    paths, _, html_path = page
    # A copy beside the page (same relative URLs) that loads every image at once
    # instead of lazily, and reports what it finds.
    text = html_path.read_text(encoding="utf-8").replace('loading="lazy"', 'loading="eager"')
    checked = html_path.with_name("report_check.html")
    # The page allows only its own script (by hash); allow the check script's too.
    check = re.search(r"<script>(.*)</script>", CHECK_SCRIPT, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(check.encode()).digest()).decode()
    text = text.replace(html_report.SCRIPT_HASH, f"{html_report.SCRIPT_HASH}' 'sha256-{digest}")
    checked.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    run = browse(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom",
                 checked.as_uri())
    found = re.search(r'<pre id="check-result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"no result from the page: {run.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] > 50
    assert 0 < result["shown_first"] < result["images"]  # cells wait until opened
    assert result["broken"] == []
    for index, mode in enumerate(images.PREPROCESS_MODES):
        conf = load_confidences(paths.confidences_csv(mode))
        counted = collections.Counter(zip(conf.expected, conf.top1, strict=True))
        cells = [c for c in result["cells"] if c["mode"] == mode]
        assert len(cells) == len(LABELS) ** 2
        for cell in cells:
            assert cell["shown"] == counted[(cell["expected"], cell["predicted"])], cell
            assert cell["cards"] == cell["shown"], cell
        if index == 0:
            assert len(result["order"]) > 1
            assert result["order"] == sorted(result["order"], reverse=True)
    shot = tmp_path / "report.png"
    browse(browser, tmp_path / "profile", "--window-size=1280,1600", f"--screenshot={shot}",
           html_path.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000
    with Image.open(shot) as img:
        assert img.size == (1280, 1600)
