"""review_labels.py: cleanlab flags a planted label error, from the out-of-fold CSV
first and the test CSV otherwise, and writes the list and the page."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script
from page_fixture import LABELS, make_model, probabilities, write_csv, write_oof

from opssat.core.errors import UserError
from opssat.judge import review
from opssat.judge.confidences import load_confidences

PLANTED = "img_msec_1700000100000_1.png"  # the second bad image


def run_review(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("review_labels.py", *args, repo=root, timeout=300)


def test_cleanlab_flags_the_planted_error(repo_root: Path) -> None:
    paths = make_model(repo_root)
    write_oof(paths, PLANTED, "edge")
    result = review.review(paths)
    assert result.source.csv_path == paths.oof_csv("onboard")
    assert [(s.filename, s.given, s.suggested) for s in result.suspects] == [
        (f"bad/{PLANTED}", "bad", "edge")]
    assert result.suspects[0].path == paths.all_dir / "bad" / PLANTED
    assert result.suspects[0].score < 0.05


def test_nothing_flagged_without_a_planted_error(repo_root: Path) -> None:
    paths = make_model(repo_root)
    write_oof(paths, "no such file", "edge")
    assert review.review(paths).suspects == []


@pytest.mark.slow
def test_script_writes_the_list_and_the_page(repo_root: Path) -> None:
    paths = make_model(repo_root)
    write_oof(paths, PLANTED, "earth")
    run = run_review(repo_root, "m")
    assert run.returncode == 0, run.stderr
    assert f"probabilities: {paths.oof_csv('onboard')} (out-of-fold" in run.stdout
    with paths.label_issues_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["filename"], r["given_label"], r["suggested_label"]) for r in rows] == [
        (f"bad/{PLANTED}", "bad", "earth")]
    assert 0 <= float(rows[0]["score"]) < 0.05
    page = paths.review_html.read_text(encoding="utf-8")
    assert f"bad/{PLANTED}" in page and str(paths.oof_csv("onboard")) in page
    shown = [u.split('"')[0] for u in page.split('src="')[1:]]
    assert len(shown) == 2 and all((paths.review_dir / u).is_file() for u in shown)
    assert any(u.endswith("_onboard1.png") for u in shown)  # the source's preprocessing
    assert "http" not in "".join(shown)


def test_falls_back_to_the_test_csv_onboard_then_ground(repo_root: Path) -> None:
    paths = make_model(repo_root, per_label=8)
    # The on-board test CSV, with "n/a" predictions, and one image planted as another label.
    rng = np.random.default_rng(0)
    rows = []
    for i, label in enumerate(LABELS):
        for file in sorted(os.listdir(paths.test_dir / label)):
            if file == PLANTED:
                top, conf = LABELS.index("edge"), 0.99
            else:
                top, conf = i, 0.6 if file.endswith("_3.png") else 0.9
            rows.append((f"{label}/{file}", label, probabilities(rng, top, conf)))
    write_csv(paths.confidences_csv("onboard"), rows)
    assert "n/a" in load_confidences(paths.confidences_csv("onboard")).predicted
    result = review.review(paths)
    assert result.source.csv_path == paths.confidences_csv("onboard")
    assert result.source.kind == "test set"
    assert [s.filename for s in result.suspects] == [f"bad/{PLANTED}"]  # data/all's name
    paths.confidences_csv("onboard").unlink()
    assert review.find_source(paths).csv_path == paths.confidences_csv("ground")


def test_no_probabilities_is_one_line(repo_root: Path) -> None:
    paths = make_model(repo_root, per_label=1)
    for mode in ("ground", "onboard"):
        paths.confidences_csv(mode).unlink()
    with pytest.raises(UserError, match="no probabilities to review"):
        review.find_source(paths)
    run = run_review(repo_root, "m")
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("error: no probabilities")
    assert not paths.review_dir.exists()
