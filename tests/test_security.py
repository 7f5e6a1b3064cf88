"""Issue 19, security: label names that try to leave their folder, symlinks out of
data/all, outside images and markup on the pages. Each refused command gives one
``error:`` line, no traceback, and leaves data/all and the folder around the model
exactly as they were (sha256 listings)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import one_error_line, run_script
from page_fixture import LABELS, make_model

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths, check_inside
from opssat.data import labels
from opssat.judge import html_report, report
from opssat.judge.confidences import load_confidences

TRAVERSAL = "../../../../tmp/opssat-escape"


def listing(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: a file's sha256, a symlink's target, '/' for a folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[rel] = "/"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def model(tmp_path: Path) -> ModelPaths:
    """repo/m/ with data/all, data/test, both CSVs and labels.txt, inside ``tmp_path``
    (the folder around the model, whose listing the tests compare)."""
    return make_model(tmp_path / "repo", per_label=3)


def test_the_label_rule() -> None:
    for bad in ["", ".", "..", "a/b", TRAVERSAL, "a:b", "50%", 'a"b', "a\\b", "a\x07b",
                "tab\there", "a\u200bb"]:
        assert labels.label_problem(bad), bad
        with pytest.raises(UserError, match="label"):
            labels.check_label(bad)
    for good in ["earth", "bad", "edge-2", "été", "<b>x<b>", "a b"]:
        assert labels.label_problem(good) is None, good
    with pytest.raises(UserError, match="'\\.\\./"):
        labels.validate_labels(["earth", TRAVERSAL])


def test_check_inside_resolves_symlinks_and_dotdot(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link").symlink_to(tmp_path / "out")
    check_inside(root, root / "in" / "x", root / "new" / "deeper" / "y", root)
    for escape in [root / "link" / "x", root / "in" / ".." / ".." / "out", Path("/etc/passwd")]:
        with pytest.raises(UserError, match="leads outside"):
            check_inside(root, escape)


# --- relabel: symlinked label folders and traversal labels ------------------------------


def _reviewed(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "reviewed.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("filename", "new_label"), *rows])
    return path


@pytest.mark.parametrize("direction", ["out", "in"])
def test_relabel_never_crosses_a_symlinked_label_folder(model: ModelPaths, tmp_path: Path,
                                                        direction: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stranger.png").write_bytes((model.all_dir / "bad").iterdir().__next__()
                                           .read_bytes())
    (model.all_dir / "evil").symlink_to(outside)
    first = sorted((model.all_dir / "bad").iterdir())[0].name
    rows = [(f"bad/{first}", "evil")] if direction == "out" else [("stranger.png", "bad")]
    before = listing(tmp_path)
    error = one_error_line(run_script("relabel.py", "m", _reviewed(tmp_path, rows),
                                      repo=model.root))
    assert "outside" in error and "nothing moved" in error, error
    assert listing(tmp_path) == {**before, "reviewed.csv": listing(tmp_path)["reviewed.csv"]}


def test_relabel_refuses_a_traversal_label(model: ModelPaths, tmp_path: Path) -> None:
    first = sorted((model.all_dir / "bad").iterdir())[0].name
    reviewed = _reviewed(tmp_path, [(f"bad/{first}", TRAVERSAL)])
    for labels_txt in ["bad\nearth\nedge\n", f"bad\nearth\nedge\n{TRAVERSAL}\n"]:
        model.labels_file.write_text(labels_txt)
        before = listing(tmp_path)
        error = one_error_line(run_script("relabel.py", "m", reviewed, repo=model.root))
        assert "label" in error and TRAVERSAL in error, error
        assert listing(tmp_path) == before
    assert not Path("/tmp/opssat-escape").exists()


# --- labelling and packaging: labels.txt is the source ----------------------------------


def _hostile_labels(model: ModelPaths, extra: str) -> None:
    model.labels_file.write_text("".join(f"{x}\n" for x in [*LABELS[:2], extra]))
    model.tflite_model.write_bytes(b"not read: the labels are refused first")


@pytest.mark.parametrize("script", ["batch_label_images.py", "label_image.py",
                                    pytest.param("package_smartcam.py", marks=pytest.mark.slow)])
def test_traversal_labels_are_refused_before_anything_is_written(model: ModelPaths,
                                                                 tmp_path: Path,
                                                                 script: str) -> None:
    _hostile_labels(model, TRAVERSAL)
    image = next((model.test_dir / "bad").iterdir())
    args = {"batch_label_images.py": ["m"],
            "label_image.py": ["-i", image, "-n", "m", "-e", TRAVERSAL],
            "package_smartcam.py": ["m"]}[script]
    before = listing(tmp_path)
    error = one_error_line(run_script(script, *args, repo=model.root))
    assert TRAVERSAL in error and "label" in error, error
    assert listing(tmp_path) == before
    assert not Path("/tmp/opssat-escape").exists()


@pytest.mark.slow
def test_latin1_label_file_is_one_line(model: ModelPaths, tmp_path: Path) -> None:
    latin = tmp_path / "labels_latin1.txt"
    latin.write_bytes("bad\nété\nedge\n".encode("latin-1"))
    model.tflite_model.write_bytes(b"x")
    before = listing(tmp_path)
    error = one_error_line(run_script("package_smartcam.py", "m", "--label_file", latin,
                                      repo=model.root))
    assert "not UTF-8" in error and str(latin) in error, error
    assert listing(tmp_path) == before


# --- pages: outside images, link encoding, markup ---------------------------------------


def test_pages_show_only_images_inside_the_model_folder(model: ModelPaths,
                                                        tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    shutil.copy(next((model.all_dir / "bad").iterdir()), outside)
    roots = [model.test_dir, model.all_dir]
    for name in [str(outside), "../../../secret.png", "bad/../../../../secret.png"]:
        assert html_report.locate_image(name, "bad", roots) is None, name
    (model.all_dir / "linked").symlink_to(tmp_path)
    assert html_report.locate_image("linked/secret.png", "linked", roots) is None
    inside = next((model.test_dir / "bad").iterdir())
    assert html_report.locate_image(f"bad/{inside.name}", "bad", roots) == model.test_dir / \
        "bad" / inside.name


def test_links_to_originals_are_url_encoded(tmp_path: Path) -> None:
    page = tmp_path / "classification" / "report.html"
    url = html_report.relative_url(tmp_path / "data" / "bad" / "a%b#c?d e.png", page)
    assert url == "../data/bad/a%25b%23c%3Fd%20e.png"


#: Markup planted in every outside text; it sets data-pwned on <body> if it ever runs.
PAYLOAD = "<img src=x onerror=document.body.dataset.pwned=1>"


def _markup_model(tmp_path: Path) -> tuple[ModelPaths, Path]:
    """A model whose labels, file names, CSV name and CSV folder carry markup."""
    paths = make_model(tmp_path / "repo", per_label=3)
    hostile = {"bad": f"bad{PAYLOAD}", "earth": "earth<svg onload=document.body.dataset.pwned=1>"}
    text = paths.confidences_csv("ground").read_text(encoding="utf-8")
    for old, new in hostile.items():
        text = text.replace(old, new)
        for top in (paths.test_dir, paths.all_dir):
            (top / old).rename(top / new)
    for label_dir in paths.test_dir.iterdir():
        first = sorted(label_dir.iterdir())[0]
        renamed = first.with_name(f"{PAYLOAD}{first.name}")
        first.rename(renamed)
        (paths.all_dir / label_dir.name / first.name).rename(
            paths.all_dir / label_dir.name / renamed.name)
        text = text.replace(f"/{first.name}", f"/{renamed.name}")
    folder = tmp_path / f"csvs{PAYLOAD}"
    folder.mkdir()
    csv_path = folder / f"{PAYLOAD}.csv"
    csv_path.write_text(text, encoding="utf-8")
    paths.confidences_csv("ground").unlink()
    paths.confidences_csv("onboard").unlink()
    return paths, csv_path


def test_report_md_shows_outside_text_literally(tmp_path: Path) -> None:
    paths, csv_path = _markup_model(tmp_path)
    text = report.render_markdown(report.build("m", [(csv_path.stem, csv_path)], 0.7, 0.95))
    assert "<img" not in text and "<script" not in text
    assert "&lt;img src=x onerror=document.body.dataset.pwned=1&gt;" in text


@pytest.mark.slow
def test_page_escapes_outside_text_and_allows_only_its_own_script(tmp_path: Path) -> None:
    paths, csv_path = _markup_model(tmp_path)
    proc = run_script("calc_perf.py", "m", "--csv", csv_path, repo=paths.root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = paths.report_html.read_text(encoding="utf-8")
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'\">", text), text[:600]
    assert PAYLOAD not in text and "<script>document" not in text
    assert text.count("<script>") == 1
    names = load_confidences(csv_path).filenames
    assert any(PAYLOAD in name for name in names)  # the fixture did plant them


class Elements(HTMLParser):
    """Every element's tag and attributes, as a browser's DOM dump lists them."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def _review_page(paths: ModelPaths) -> Path:
    from opssat.judge import review

    conf = load_confidences(paths.confidences_csv("ground"))
    source = review.Source(paths.confidences_csv("ground"), "ground", "test set")
    suspects = [review.Suspect(row, name, html_report.locate_image(
        name, conf.expected[row], [paths.all_dir, paths.test_dir]), conf.expected[row],
        conf.labels[-1], 0.1) for row, name in enumerate(conf.filenames)]
    review.write_review(paths, review.Review(source, conf, suspects, [PAYLOAD]))
    return paths.review_html


def _dump_dom(page: Path, profile: Path) -> str:
    from test_report_html import browse, find_browser

    browser = find_browser()
    if browser is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium)")
    run = browse(browser, profile, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert "<body" in run.stdout, run.stderr[-2000:]
    return run.stdout


@pytest.mark.slow
def test_no_injected_markup_is_live_in_chromium(tmp_path: Path) -> None:
    # The check can fail: a page that shows the payload raw runs it.
    control = tmp_path / "control.html"
    control.write_text(f"<!DOCTYPE html><html><body><p>{PAYLOAD}</p></body></html>")
    assert re.search(r"<body[^>]*data-pwned", _dump_dom(control, tmp_path / "p0"))
    # ... and with the page's policy even a raw payload stays dead.
    policed = tmp_path / "policed.html"
    policed.write_text(html_report.page("t", [f"<p>{PAYLOAD}</p>"]))
    assert not re.search(r"<body[^>]*data-pwned", _dump_dom(policed, tmp_path / "p1"))

    paths, csv_path = _markup_model(tmp_path)
    proc = run_script("calc_perf.py", "m", "--csv", csv_path, repo=paths.root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shutil.copy(csv_path, paths.confidences_csv("ground"))
    for number, page in enumerate([paths.report_html, _review_page(paths)]):
        dom = _dump_dom(page, tmp_path / f"profile{number}")
        assert not re.search(r"<body[^>]*data-pwned", dom), page
        # No injected element, in the page or its galleries' templates: no <img src=x>,
        # no <svg>, no <script> but the page's, no inline handler anywhere.
        elements = Elements()
        elements.feed(dom)
        assert not [e for e in elements.found if e[0] == "img" and ("src", "x") in e[1]]
        assert not [e for e in elements.found if e[0] == "svg"]
        # The page's one script, and its decisions' data as inert JSON when it takes decisions.
        scripts = [dict(e[1]) for e in elements.found if e[0] == "script"]
        assert len([s for s in scripts if s.get("type") != "application/json"]) == 1
        assert len(scripts) - 1 <= 1
        assert not [e for e in elements.found if any(k.startswith("on") for k, _ in e[1])]
        # The page's own script ran (allowed by its hash): it moved cards into galleries.
        assert re.search(r'<div class="gallery" id="[^"]+"><figure class="card', dom), page
        assert "&lt;img src=x onerror" in dom  # the planted text is shown as text


@pytest.mark.parametrize("folder", [pytest.param("classification", marks=pytest.mark.slow),
                                    "review"])
def test_outputs_through_a_symlinked_folder_are_refused(model: ModelPaths, tmp_path: Path,
                                                        folder: str) -> None:
    outside = tmp_path / "outside"
    if folder == "classification":  # the CSVs stay readable through the link
        shutil.move(model.data_dir / folder, outside)
    else:
        outside.mkdir()
    (model.data_dir / folder).symlink_to(outside)
    script = "calc_perf.py" if folder == "classification" else "review_labels.py"
    before = listing(tmp_path)
    error = one_error_line(run_script(script, "m", repo=model.root, timeout=300))
    assert "leads outside" in error, error
    assert listing(tmp_path) == before
