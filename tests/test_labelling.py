"""Labelling: the queue's ranking and bursts, suggest_labels.py, relabel.py moving files
out of data/unlabelled (and --undo putting them back), the refusal of a bad decision
CSV, and the decision data a page carries (inert, whatever the names hold)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error_line, run_script, write_image

from opssat.core.paths import ModelPaths
from opssat.data import relabel
from opssat.judge import decisions, html_report, queue

LABELS = ["bad", "earth", "edge"]
#: bad, earth, edge as the tiny classifier sees them (red, green, blue), some mixed.
COLOURS = {"bad": (220, 30, 30), "earth": (30, 220, 30), "edge": (30, 30, 220)}


def stamp(ms: int, tag: str = "") -> str:
    return f"img_msec_{ms}_{tag}.png"


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the ranking ------------------------------------------------------------------------


def test_margin_and_entropy_rank_the_unsure_first() -> None:
    probs = np.asarray([[0.98, 0.01, 0.01], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33],
                        [0.6, 0.4, 0.0]])
    assert np.allclose(queue.margins(probs), [0.97, 0.05, 0.01, 0.2])
    files = [Path(stamp(ms)) for ms in (0, 10**6, 2 * 10**6, 3 * 10**6)]  # 4 bursts
    assert queue.order(files, probs, "margin") == [2, 1, 3, 0]
    assert queue.order(files, probs, "entropy") == [2, 1, 3, 0]
    # margin and entropy disagree: a two-way tie against a three-way spread
    split_two = np.asarray([[0.5, 0.5, 0.0], [0.5, 0.3, 0.2]])
    assert queue.order(files[:2], split_two, "margin") == [0, 1]
    assert queue.order(files[:2], split_two, "entropy") == [1, 0]


def test_a_burst_is_queued_once_by_its_least_sure_member() -> None:
    # three thumbnails 5 s apart, one an hour later, one without a time
    files = [Path(stamp(1_600_000_000_000 + d)) for d in (0, 5_000, 10_000, 3_600_000)]
    files.append(Path("untimed.png"))
    probs = np.asarray([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.8, 0.1, 0.1],
                        [0.7, 0.2, 0.1], [0.99, 0.005, 0.005]])
    found = queue.bursts(files, probs)
    assert [b.rows for b in found] == [[1, 2, 0], [3], [4]]
    assert [b.size for b in found] == [3, 1, 1]
    assert queue.order(files, probs) == [1, 3, 4]
    apart = queue.bursts(files, probs, group_seconds=1)
    assert [b.rows[0] for b in apart] == [1, 3, 2, 0, 4]


# --- relabel.py with data/unlabelled ---------------------------------------------------------


@pytest.fixture
def model(repo_root: Path) -> ModelPaths:
    """data/all with one image per label, data/unlabelled with a burst of three and two
    single images."""
    paths = ModelPaths("m", repo_root)
    for label, colour in COLOURS.items():
        write_image(paths.all_dir / label / stamp(1_500_000_000_000 + len(label), label), colour)
    for i, ms in enumerate([0, 4_000, 8_000, 900_000, 1_800_000]):
        write_image(paths.unlabelled_dir / stamp(1_600_000_000_000 + ms, f"u{i}"),
                    COLOURS[LABELS[i % 3]], seed=i)
    paths.labels_file.write_text("".join(f"{x}\n" for x in LABELS))
    return paths


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([relabel.REVIEWED_COLUMNS, *rows])
    return path


def test_relabel_moves_unlabelled_files_and_undo_puts_them_back(model: ModelPaths,
                                                                 tmp_path: Path) -> None:
    data = model.data_dir
    before = tree(data)
    names = sorted(p.name for p in model.unlabelled_dir.iterdir())
    csv_path = write_rows(tmp_path / "reviewed.csv", [(f"../unlabelled/{names[0]}", "earth"),
                                                      (names[3], "bad")])  # a bare name too
    done = run_script("relabel.py", "m", csv_path, repo=model.root)
    assert done.returncode == 0, done.stderr
    assert f"../unlabelled/{names[0]} -> earth/{names[0]}" in done.stdout
    assert "stale" in done.stdout and "split_data.py m 20 --force" in done.stdout
    moved = {f"unlabelled/{names[0]}": f"all/earth/{names[0]}",
             f"unlabelled/{names[3]}": f"all/bad/{names[3]}"}
    after = tree(data)
    assert after.pop("relabel_log.csv")
    assert after == {moved.get(k, k): v for k, v in before.items()}
    journal = relabel.read_journal(model.relabel_log)
    assert {(r["from"], r["to"]) for r in journal} == {
        (f"../unlabelled/{names[0]}", f"earth/{names[0]}"),
        (f"../unlabelled/{names[3]}", f"bad/{names[3]}")}
    undone = run_script("relabel.py", "m", "--undo", repo=model.root)
    assert undone.returncode == 0, undone.stderr
    assert tree(data) == {**before, "relabel_log.csv": tree(data)["relabel_log.csv"]}


BAD_DECISIONS = {
    "unknown_label": ([("../unlabelled/{u0}", "earth"), ("../unlabelled/{u1}", "sky")],
                      "line 3: unknown label 'sky'"),
    "unknown_file": ([("../unlabelled/{u0}", "earth"), ("../unlabelled/nope.png", "bad")],
                     "nope.png not found"),
    "duplicate_row": ([("../unlabelled/{u0}", "earth"), ("{u0}", "bad")], "listed twice"),
    "outside": ([("../training/{u0}", "earth")], "is outside"),
    "ambiguous": ([("{u0}", "earth")], "write it as <label>/{u0} or ../unlabelled/{u0}"),
}


@pytest.mark.parametrize("case", sorted(BAD_DECISIONS))
def test_a_bad_decision_csv_is_refused_whole(model: ModelPaths, tmp_path: Path,
                                             case: str) -> None:
    names = sorted(p.name for p in model.unlabelled_dir.iterdir())
    rows, message = BAD_DECISIONS[case]
    rows = [(f.format(u0=names[0], u1=names[1]), label) for f, label in rows]
    message = message.format(u0=names[0])
    if case == "ambiguous":
        write_image(model.all_dir / "bad" / names[0], (9, 9, 9))
    before = tree(model.data_dir)
    error = one_error_line(run_script("relabel.py", "m", write_rows(tmp_path / "r.csv", rows),
                                      repo=model.root))
    assert message in error and "nothing moved" in error, error
    assert tree(model.data_dir) == before


def test_an_unlabelled_folder_that_leads_outside_is_refused(model: ModelPaths,
                                                            tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    model.unlabelled_dir.rename(outside)
    model.unlabelled_dir.symlink_to(outside)
    name = sorted(p.name for p in outside.iterdir())[0]
    error = one_error_line(run_script("relabel.py", "m", write_rows(
        tmp_path / "r.csv", [(f"../unlabelled/{name}", "earth")]), repo=model.root))
    assert "outside" in error, error
    assert (outside / name).is_file()


# --- suggest_labels.py -------------------------------------------------------------------


def test_suggest_labels_writes_the_queue_and_the_page(model: ModelPaths, make_tflite) -> None:
    tflite = make_tflite(labels=tuple(LABELS))
    # one unsure image: half red, half green
    write_image(model.unlabelled_dir / stamp(1_700_000_000_000, "mixed"), (150, 150, 20))
    (model.unlabelled_dir / "notes.jpg").write_text("not an image")
    done = run_script("suggest_labels.py", "m", "--model_file", tflite, "--label_file",
                      tflite.with_name("model_labels.txt"), "--preprocess", "ground",
                      "--no_progress", repo=model.root)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "notes.jpg" in done.stderr
    with model.unlabelled_queue_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == queue.QUEUE_COLUMNS
    assert len(rows) == 6 and rows[0]["filename"].endswith("_mixed.png")
    assert all(r["filename"].startswith("../unlabelled/") for r in rows)
    assert [float(r["margin"]) for r in rows[:1]] < [float(r["margin"]) for r in rows[1:2]]
    burst = [r for r in rows if r["burst_size"] == "3"]
    assert len(burst) == 3 and len({r["burst"] for r in burst}) == 1
    assert {r["suggested_label"] for r in rows if "_u0" in r["filename"]} == {"bad"}
    page = model.unlabelled_html.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="decisions-data">(.*?)</script>', page).group(1))
    assert len(data["items"]) == 4  # 6 images, one burst of 3
    assert sorted(len(i["members"]) for i in data["items"].values()) == [0, 0, 0, 2]
    assert html_report.SCRIPT_HASH in page
    assert not any(model.all_dir.glob("*/*_u*.png"))  # nothing moved


def test_suggest_labels_without_unlabelled_images_is_one_line(model: ModelPaths) -> None:
    error = one_error_line(run_script("suggest_labels.py", "m", repo=model.root))
    assert "tflite_model.tflite" in error  # no model yet
    for path in model.unlabelled_dir.iterdir():
        path.unlink()
    error = one_error_line(run_script("suggest_labels.py", "m", repo=model.root))
    assert "holds no files" in error
    error = one_error_line(run_script("suggest_labels.py", "m", "--rank", "luck",
                                      repo=model.root))
    assert "luck" in error


# --- what a page carries -------------------------------------------------------------------


MARKUP = "<img src=x onerror=alert(1)></script><script>alert(2)</script>&amp;"


def test_decision_data_is_inert_and_reads_back() -> None:
    item = decisions.Item(f"earth/{MARKUP}.png", "earth", MARKUP, (f"earth/b{MARKUP}.png",))
    block = decisions.data_block("m/review/0", ["earth", MARKUP], {"d0": item})
    inner = re.fullmatch(r'<script type="application/json" id="decisions-data">(.*)</script>',
                         block).group(1)
    assert "<" not in inner and ">" not in inner and "&" not in inner
    data = json.loads(inner)
    assert data["items"]["d0"]["suggested"] == MARKUP and data["labels"][1] == MARKUP
    assert data["columns"] == ["filename", "new_label"]
    buttons = decisions.controls("d0", item, ["earth", MARKUP])
    assert "<img" not in buttons and "<script" not in buttons
    assert html_report.esc(MARKUP) in buttons


def test_the_script_hash_survives_html_parsing() -> None:
    """A browser hashes the script as parsed: a carriage return (turned into a line feed)
    or a character encoded otherwise would make the page's own script refused."""
    assert "\r" not in html_report.SCRIPT and html_report.SCRIPT.isascii()
    assert "</script" not in html_report.SCRIPT.lower()
