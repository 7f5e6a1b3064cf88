"""The decision pages as a person uses them, in headless Chromium driven by Playwright:
real clicks and key presses on review.html and unlabelled.html, decisions that survive a
reload, the downloaded reviewed.csv given to relabel.py, and --undo putting every file
back byte for byte. Planted markup in file and label names stays text."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script, write_image
from page_fixture import probabilities, write_photo

from opssat.core.paths import ModelPaths
from opssat.judge import review

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
#: A label and file names that would run script if they reached the page as markup.
MARKUP_LABEL = "<img src=x onerror=window.pwned=1>"
MARKUP_FILE = "<img src=y onerror=window.pwned=2>,x.png"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"no {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                              args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """One page in its own browser context, with what it logged and any dialog."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(accept_downloads=True)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda err: self.problems.append(f"error: {err}"))
        self.page.on("console", lambda msg: self.problems.append(f"console: {msg.text}"))
        self.page.on("dialog", lambda dialog: (self.problems.append(f"dialog: {dialog.message}"),
                                               dialog.dismiss()))
        self.page.goto(path.as_uri())

    def info(self) -> dict:
        return json.loads(self.page.text_content("#decisions-data"))

    def item_ids(self) -> list[str]:
        """The decidable cards in page order."""
        return self.page.eval_on_selector_all(".card .decide",
                                              "els => els.map(e => e.dataset.item)")

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)

    def click(self, item: str, selector: str) -> None:
        self.page.click(f'.decide[data-item="{item}"] {selector}')

    def counter(self) -> str:
        return self.page.text_content("#decisions-count")

    def download(self, target: Path) -> list[tuple[str, str]]:
        with self.page.expect_download() as download:
            self.page.click("#decisions-download")
        assert download.value.suggested_filename == "reviewed.csv"
        download.value.save_as(target)
        rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
        assert rows[0] == ["filename", "new_label"]
        return [tuple(r) for r in rows[1:]]

    def check_inert(self) -> None:
        assert self.problems == []
        assert self.page.evaluate("window.pwned") is None
        assert self.page.eval_on_selector_all("img[src=x], img[src=y]", "els => els.length") == 0


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "relabel_log.csv"}


def relabel_and_undo(root: Path, paths: ModelPaths, reviewed: Path,
                     expected: dict[str, str]) -> None:
    """relabel.py moves exactly ``expected`` (data/ relative path -> new one), --undo
    puts back every byte."""
    before = tree(paths.data_dir)
    done = run_script("relabel.py", "m", reviewed, repo=root)
    assert done.returncode == 0, done.stderr
    assert "stale" in done.stdout
    after = tree(paths.data_dir)
    assert after == {expected.get(k, k): v for k, v in before.items()}
    undone = run_script("relabel.py", "m", "--undo", repo=root)
    assert undone.returncode == 0, undone.stderr
    assert tree(paths.data_dir) == before


# --- review.html -------------------------------------------------------------------------


def suspects_model(root: Path, labels: list[str], planted: int, per_label: int = 10,
                   odd_name: str | None = None) -> ModelPaths:
    """data/all with ``per_label`` images per label and out-of-fold probabilities that
    call ``planted`` of them confidently another label; the review page written."""
    paths = ModelPaths("m", root)
    rng = np.random.default_rng(0)
    rows, count = [], 0
    for index, label in enumerate(labels):
        for k in range(per_label):
            name = f"img_msec_{1700000000000 + 100000 * (index * per_label + k)}_{k}.png"
            if odd_name and index == 0 and k == 0:
                name = odd_name
            write_photo(paths.all_dir / label / name, (60 * index, 90, 200 - 60 * index), k)
            if k < per_label // 2 and count < planted:
                count += 1
                rows.append((name, label, probabilities(rng, (index + 1) % 3, 0.99)))
            else:
                rows.append((name, label, probabilities(rng, index, float(rng.uniform(.8, .97)))))
    write_oof_csv(paths.oof_csv("onboard"), labels, rows)
    result = review.review(paths)
    assert len(result.suspects) == planted, [s.filename for s in result.suspects]
    review.write_review(paths, result)
    return paths


def write_oof_csv(path: Path, labels: list[str], rows: list[tuple[str, str, list[float]]]
                  ) -> None:
    """A confidences CSV (any label or file name, quoted as CSV needs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "time_ms", "predicted_label", "expected_label", *labels])
        for name, label, probs in rows:
            best = int(np.argmax(probs))
            writer.writerow([name, "2.5", labels[best] if probs[best] >= 0.7 else "n/a", label,
                             *map(repr, probs)])


def expected_moves(info: dict, decided: dict[str, str]) -> dict[str, str]:
    """data/-relative old -> new path of every decided file whose label changes."""
    moves = {}
    for item, label in decided.items():
        entry = info["items"][item]
        if label and label != entry["current"]:
            name = entry["file"].rsplit("/", 1)[1]
            old = "all/" + entry["file"] if entry["current"] else entry["file"][3:]
            moves[old] = f"all/{label}/{name}"
    return moves


def test_five_decisions_survive_a_reload_and_relabel_takes_them(browser, repo_root: Path,
                                                                tmp_path: Path) -> None:
    labels = ["bad", "earth", MARKUP_LABEL]
    paths = suspects_model(repo_root, labels, planted=7, per_label=8, odd_name=MARKUP_FILE)
    page = Page(browser, paths.review_html)
    info, items = page.info(), page.item_ids()
    assert len(items) == 7 and any(MARKUP_FILE in i["file"] for i in info["items"].values())
    page.click(items[0], 'button[data-choice="accept"]')        # click: accept
    page.keys("k", "3")                                         # keep; the third label
    page.click(items[3], 'button[data-index="0"]')              # click: bad
    page.keys("a", "2", "u")                                    # accept; earth, undone
    assert page.counter().startswith("5 of 7 decided")
    entry = [info["items"][i] for i in items]
    decided = {items[0]: entry[0]["suggested"], items[1]: entry[1]["current"],
               items[2]: labels[2], items[3]: "bad", items[4]: entry[4]["suggested"]}
    page.page.reload()
    assert page.counter().startswith("5 of 7 decided")
    assert page.page.eval_on_selector_all(".card.decided", "els => els.length") == 5
    shown_label = page.page.text_content(f'.decide[data-item="{items[2]}"] .decision')
    assert MARKUP_LABEL in shown_label  # as text
    rows = page.download(tmp_path / "reviewed.csv")
    assert sorted(rows) == sorted((info["items"][i]["file"], label)
                                  for i, label in decided.items())
    page.check_inert()
    relabel_and_undo(repo_root, paths, tmp_path / "reviewed.csv", expected_moves(info, decided))


def test_twenty_suspects_by_keyboard_alone(browser, repo_root: Path, tmp_path: Path) -> None:
    labels = ["bad", "earth", "edge"]
    paths = suspects_model(repo_root, labels, planted=20, per_label=14)
    page = Page(browser, paths.review_html)
    info, items = page.info(), page.item_ids()
    assert len(items) == 20
    decided: dict[str, str] = {}
    for number, item in enumerate(items):
        entry = info["items"][item]
        key = "akn123"[number % 6]
        page.keys(key)
        if key == "a":
            decided[item] = entry["suggested"]
        elif key == "k":
            decided[item] = entry["current"]
        elif key != "n":  # n: next, no decision
            decided[item] = labels[int(key) - 1]
    assert page.counter().startswith(f"{len(decided)} of 20 decided")
    rows = page.download(tmp_path / "reviewed.csv")
    assert sorted(rows) == sorted((info["items"][i]["file"], label)
                                  for i, label in decided.items())
    page.check_inert()
    moves = expected_moves(info, decided)
    assert 0 < len(moves) < 20
    relabel_and_undo(repo_root, paths, tmp_path / "reviewed.csv", moves)


# --- unlabelled.html ----------------------------------------------------------------------


def test_unlabelled_folder_to_data_all_and_back(browser, repo_root: Path, tmp_path: Path,
                                                make_tflite) -> None:
    paths = ModelPaths("m", repo_root)
    colours = {"bad": (220, 30, 30), "earth": (30, 220, 30), "edge": (30, 30, 220)}
    for label, colour in colours.items():
        write_image(paths.all_dir / label / f"known_{label}.png", colour)
    start = 1_600_000_000_000
    shots = {0: "bad", 3_000: "bad", 6_000: "earth",       # a burst of three
             900_000: "edge", 903_000: "earth",            # a burst of two
             2_000_000: "earth"}                           # alone
    for i, (ms, label) in enumerate(shots.items()):
        write_image(paths.unlabelled_dir / f"img_msec_{start + ms}_{i}.png",
                    tuple(int(c * 0.7 + 40) for c in colours[label]), seed=i)
    odd = paths.unlabelled_dir / MARKUP_FILE
    shutil.copy(paths.unlabelled_dir / f"img_msec_{start}_0.png", odd)
    tflite = make_tflite(labels=tuple(colours))
    done = run_script("suggest_labels.py", "m", "--model_file", tflite, "--label_file",
                      tflite.with_name("model_labels.txt"), "--preprocess", "ground",
                      "--no_progress", repo=repo_root)
    assert done.returncode == 0, done.stderr
    page = Page(browser, paths.unlabelled_html)
    info, items = page.info(), page.item_ids()
    assert sorted(len(info["items"][i]["members"]) for i in items) == [0, 0, 1, 2]
    decided: dict[str, str] = {}
    bursts_seen = 0
    for item in items:
        entry = info["items"][item]
        whole = [entry["file"], *entry["members"]]
        if entry["members"] and bursts_seen == 0:     # the whole burst takes the suggestion
            page.keys("a")
            decided.update(dict.fromkeys(whole, entry["suggested"]))
        elif entry["members"]:                        # this one image only: edge
            page.keys("b", "3")
            decided[entry["file"]] = "edge"
        elif MARKUP_FILE in entry["file"]:            # click: earth
            page.click(item, 'button[data-index="1"]')
        else:                                         # leave it unlabelled
            page.keys("k")
        if MARKUP_FILE in entry["file"]:
            decided[entry["file"]] = "earth"
        bursts_seen += bool(entry["members"])
    page.page.reload()
    rows = page.download(tmp_path / "reviewed.csv")
    assert sorted(rows) == sorted(decided.items())
    page.check_inert()
    moves = {f[3:]: f"all/{label}/{f.rsplit('/', 1)[1]}" for f, label in decided.items()}
    relabel_and_undo(repo_root, paths, tmp_path / "reviewed.csv", moves)
    assert any(paths.unlabelled_dir.iterdir())  # what was left unlabelled stays


# --- report.html -----------------------------------------------------------------------------


def test_report_page_galleries_take_decisions(browser, repo_root: Path, tmp_path: Path) -> None:
    from page_fixture import make_model

    from opssat.data import images
    from opssat.judge import report, report_page

    paths = make_model(repo_root, per_label=4)
    csvs = [(mode, paths.confidences_csv(mode)) for mode in images.PREPROCESS_MODES]
    report_page.write_html(paths, report.build(paths.name, csvs, 0.7, 0.95))
    page = Page(browser, paths.report_html)
    info = page.info()
    flagged = page.page.eval_on_selector_all("#gallery-0 .decide",
                                             "els => els.map(e => e.dataset.item)")
    assert flagged and page.item_ids()[0] == flagged[0]  # the first gallery comes first
    page.keys("1", "a")
    first, second = (info["items"][i] for i in flagged[:2])
    rows = page.download(tmp_path / "reviewed.csv")
    assert sorted(rows) == sorted({first["file"]: "bad", second["file"]: second["suggested"]}
                                  .items())
    assert all(f.split("/")[0] in ("bad", "earth", "edge") for f, _ in rows)  # data/all names
    page.check_inert()
