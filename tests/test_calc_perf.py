"""calc_perf.py and opssat.judge.metrics on a small fixed CSV whose figures are worked
out by hand here (kappa and balanced accuracy from their definitions)."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script
from PIL import Image

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.judge import metrics
from opssat.judge.confidences import load_confidences

LABELS = ["bad", "earth", "edge"]
HEADER = "filename,time_ms,predicted_label,expected_label,bad,earth,edge"
#: (file, expected, probabilities bad/earth/edge). Top-1 and its confidence:
#:  1-4 bad:   bad .9, bad .8, earth .6 (wrong), bad .5
#:  5-7 earth: earth .95, earth .75, edge .65 (wrong)
#:  8-10 edge: edge .85, earth .55 (wrong), edge .4
ROWS = [
    ("bad/1.jpg", "bad", (0.9, 0.05, 0.05)),
    ("bad/2.jpg", "bad", (0.8, 0.1, 0.1)),
    ("bad/3.jpg", "bad", (0.3, 0.6, 0.1)),
    ("bad/4.jpg", "bad", (0.5, 0.25, 0.25)),
    ("earth/5.jpg", "earth", (0.025, 0.95, 0.025)),
    ("earth/6.jpg", "earth", (0.125, 0.75, 0.125)),
    ("earth/7.jpg", "earth", (0.1, 0.25, 0.65)),
    ("edge/8.jpg", "edge", (0.05, 0.1, 0.85)),
    ("edge/9.jpg", "edge", (0.25, 0.55, 0.2)),
    ("edge/10.jpg", "edge", (0.3, 0.3, 0.4)),
]
#: Top-1 confusion matrix, rows expected, columns predicted (bad, earth, edge).
CONFUSION = [[3, 1, 0], [0, 2, 1], [0, 1, 2]]


def csv_text(rows=ROWS, threshold: float = 0.7) -> str:
    lines = [HEADER]
    for name, expected, probs in rows:
        best = max(range(3), key=lambda i: probs[i])
        predicted = LABELS[best] if probs[best] >= threshold else "n/a"
        lines.append(f"{name},1.5,{predicted},{expected},{','.join(map(str, probs))}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def model(repo_root: Path) -> ModelPaths:
    paths = ModelPaths("m", repo_root)
    paths.classification_dir.mkdir(parents=True)
    paths.confidences_csv().write_text(csv_text())
    return paths


def run_perf(repo_root: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return run_script("calc_perf.py", *args, repo=repo_root, timeout=120)


def hand_figures() -> dict[str, Fraction]:
    """Every figure from the confusion matrix and the definitions, as exact fractions."""
    n = sum(map(sum, CONFUSION))
    rows = [sum(r) for r in CONFUSION]
    cols = [sum(c) for c in zip(*CONFUSION, strict=True)]
    diag = [CONFUSION[i][i] for i in range(3)]
    recall = [Fraction(diag[i], rows[i]) for i in range(3)]
    precision = [Fraction(diag[i], cols[i]) for i in range(3)]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall, strict=True)]
    observed = Fraction(sum(diag), n)
    chance = sum(Fraction(rows[i] * cols[i], n * n) for i in range(3))
    kappa = (observed - chance) / (1 - chance)
    return {"accuracy": observed, "balanced": sum(recall) / 3, "kappa": kappa,
            "macro_f1": sum(f1) / 3, "recall": recall, "precision": precision, "f1": f1}


def test_hand_figures_are_the_worked_example():
    figures = hand_figures()
    assert figures["accuracy"] == Fraction(7, 10)
    assert figures["balanced"] == Fraction(25, 36)  # (3/4 + 2/3 + 2/3) / 3
    assert figures["kappa"] == Fraction(37, 67)  # (70 - 33) / (100 - 33)
    assert figures["macro_f1"] == Fraction(44, 63)  # (6/7 + 4/7 + 2/3) / 3
    assert figures["precision"] == [1, Fraction(1, 2), Fraction(2, 3)]


@pytest.mark.slow
def test_json_figures_equal_hand_computed(model: ModelPaths):
    proc = run_perf(model.root, "m", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    ground = out["modes"]["ground"]
    hand = hand_figures()
    assert ground["images"] == 10 and ground["correct"] == 7
    assert ground["accuracy"] == pytest.approx(float(hand["accuracy"]))
    assert ground["balanced_accuracy"] == pytest.approx(float(Fraction(25, 36)))
    assert ground["kappa"] == pytest.approx(float(Fraction(37, 67)))
    assert ground["competition_score"] == pytest.approx(float(Fraction(30, 67)))
    assert ground["macro_f1"] == pytest.approx(float(Fraction(44, 63)))
    assert ground["confusion"] == CONFUSION
    assert ground["confusion_at_threshold"] == [[2, 0, 0, 2], [0, 2, 0, 1], [0, 0, 1, 2]]
    for i, stats in enumerate(ground["per_label"]):
        assert stats["label"] == LABELS[i]
        assert stats["total"] == sum(CONFUSION[i]) and stats["correct"] == CONFUSION[i][i]
        assert stats["sensitivity"] == pytest.approx(float(hand["recall"][i]))
        assert stats["precision"] == pytest.approx(float(hand["precision"][i]))
        assert stats["f1"] == pytest.approx(float(hand["f1"][i]))
    # At 0.70 five images are kept (.9 .8 .95 .75 .85), all right.
    assert ground["kept"] == 5 and ground["coverage"] == pytest.approx(0.5)
    assert ground["kept_accuracy"] == pytest.approx(1.0)
    assert ground["mean_time_ms"] == pytest.approx(1.5)
    # ECE by hand, bins (0.3, 0.4] .. (0.9, 1]: |conf - acc| weighted by images:
    # .4 right .6; .5 right .5; .6 .55 wrong 2 x .575; .65 wrong .65; .8 .75 right
    # 2 x .225; .9 .85 right 2 x .125; .95 right .05 -> 3.65 / 10.
    assert ground["ece"] == pytest.approx(0.365)
    probs = np.array([r[2] for r in ROWS])
    right = probs[np.arange(10), [LABELS.index(r[1]) for r in ROWS]]
    assert ground["nll"] == pytest.approx(-np.mean(np.log(right)))
    table = {row["threshold"]: row for row in ground["threshold_table"]}
    assert len(table) == 100 and min(table) == 0.0 and max(table) == 0.99
    assert table[0.0]["kept"] == 10 and table[0.0]["kept_accuracy"] == pytest.approx(0.7)
    assert table[0.6]["kept"] == 7 and table[0.6]["kept_accuracy"] == pytest.approx(5 / 7)
    assert table[0.65]["kept"] == 6 and table[0.65]["kept_accuracy"] == pytest.approx(5 / 6)
    assert table[0.96]["kept"] == 0 and table[0.96]["kept_accuracy"] is None
    # 0.65 still keeps the wrong .65 image: 0.66 is the lowest with accuracy >= 0.95.
    assert ground["suggested"]["threshold"] == pytest.approx(0.66)
    assert ground["suggested"]["kept"] == 5
    assert out["agreement"] is None
    assert Path(out["report"]) == model.report_md
    assert Path(out["report_html"]) == model.report_html


@pytest.mark.slow
def test_text_output_has_original_table_and_figures(model: ModelPaths):
    proc = run_perf(model.root, "m", "--target_accuracy", "0.8")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "bad 3 / 4 0.750" in lines
    assert "earth 2 / 3 0.667" in lines
    assert any(line.startswith("total accuracy: 7 / 10 = 0.700") for line in lines)
    assert "bad 1.000 0.750 0.857" in lines  # precision, recall, F1
    assert f"Cohen's kappa: {37 / 67:.3f}" in out
    assert f"{30 / 67:.3f}" in out
    assert "at threshold 0.70: kept 5 / 10 (50.0 %), accuracy of kept 1.000" in out
    assert "lowest threshold with accuracy >= 0.800: 0.61" in out
    assert "expected \\ predicted bad earth edge n/a" in lines
    assert "bad 2 0 0 2" in lines
    assert "calibration: ECE 0.365" in out


@pytest.mark.slow
def test_report_and_plots_are_written(model: ModelPaths):
    proc = run_perf(model.root, "m")
    assert proc.returncode == 0, proc.stderr
    report = model.report_md.read_text()
    assert "Cohen's kappa" in report and "| bad | 3 / 4 | 0.750 |" in report
    for name in ("confusion_matrix", "threshold_curve", "confidence_histograms",
                 "reliability_diagram"):
        png = model.plot_png(name)
        assert f"({png.name})" in report
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size[0] > 100
    # The page beside report.md: the same figures and plots; these CSV rows name
    # no image file, so each card says so rather than showing a broken image.
    page = model.report_html.read_text()
    assert f"page:   {model.report_html}" in proc.stdout
    assert "Cohen&#x27;s kappa" in page and "3 / 4" in page
    assert all(f'src="{model.plot_png(n).name}"' in page
               for n in ("confusion_matrix", "threshold_curve", "confidence_histograms",
                         "reliability_diagram"))
    assert page.count("file not found") == 10 + 5  # every row in its cell, 5 in the gallery
    assert "<img" in page and "report_files/" not in page


@pytest.mark.slow
def test_both_modes_side_by_side_with_agreement(model: ModelPaths):
    onboard = list(ROWS)
    onboard[0] = ("bad/1.jpg", "bad", (0.1, 0.8, 0.1))  # top-1 changes: bad -> earth
    onboard[4] = ("earth/5.jpg", "earth", (0.1, 0.2, 0.7))  # earth -> edge
    onboard.pop()  # edge/10.jpg only in ground
    model.confidences_csv("onboard").write_text(csv_text(onboard))
    proc = run_perf(model.root, "m", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["modes"]) == {"ground", "onboard"}
    assert out["modes"]["onboard"]["correct"] == 4  # 7 - 2 changed - 1 dropped (right)
    assert out["agreement"] == {"matched": 9, "agreeing": 7, "share": pytest.approx(7 / 9),
                                "only_first": 1, "only_second": 0}
    text = run_perf(model.root, "m").stdout
    assert "modes side by side" in text and "ground vs onboard: 7 / 9" in text
    assert model.plot_png("confusion_matrix_onboard").is_file()


@pytest.mark.slow
def test_csv_option_reads_that_file(model: ModelPaths, tmp_path: Path):
    other = tmp_path / "elsewhere.csv"
    other.write_text(csv_text(ROWS[:4]))
    out = json.loads(run_perf(model.root, "m", "--csv", other, "--json").stdout)
    assert list(out["modes"]) == ["elsewhere"]
    assert out["modes"]["elsewhere"]["images"] == 4


def test_metrics_api_threshold_helpers(model: ModelPaths):
    conf = load_confidences(model.confidences_csv())
    assert conf.labels == LABELS and len(conf.filenames) == 10
    assert conf.predicted[2] == "n/a" and conf.top1[2] == "earth"
    rows = metrics.threshold_table(conf, [0.0, 0.5, 0.7, 0.99])
    assert [(r.threshold, r.kept) for r in rows] == [(0.0, 10), (0.5, 9), (0.7, 5), (0.99, 0)]
    assert rows[1].kept_share == pytest.approx(0.9)
    assert rows[1].kept_accuracy == pytest.approx(6 / 9)
    assert metrics.suggest_threshold(rows, 0.9).threshold == 0.7
    assert metrics.suggest_threshold(rows, 0.7).threshold == 0.0
    assert metrics.suggest_threshold(rows[:2], 0.9) is None


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_csv", "missing_column", "unknown_expected",
                                  "unknown_predicted", "not_a_number", "no_rows",
                                  "bad_target", "missing_model_dir", "not_utf8", "above_one",
                                  "below_zero", "nan"])
def test_bad_input_is_one_line(model: ModelPaths, case: str):
    csv_path = model.confidences_csv()
    args = ["m"]
    text = csv_text()
    if case == "missing_csv":
        csv_path.unlink()
    elif case == "missing_column":
        csv_path.write_text("\n".join(",".join(line.split(",")[:2] + line.split(",")[3:])
                                      for line in text.splitlines()))
    elif case == "unknown_expected":
        csv_path.write_text(text.replace(",bad,0.9", ",purple,0.9"))
    elif case == "unknown_predicted":
        csv_path.write_text(text.replace("1.5,bad,bad", "1.5,purple,bad", 1))
    elif case == "not_a_number":
        csv_path.write_text(text.replace("0.9,", "high,", 1))
    elif case == "no_rows":
        csv_path.write_text(HEADER + "\n")
    elif case == "bad_target":
        args += ["--target_accuracy", "95"]
    elif case == "missing_model_dir":
        args = ["other"]
    elif case == "not_utf8":
        csv_path.write_bytes(text.replace("bad/1.jpg", "bad/\xe9t\xe9.jpg").encode("latin-1"))
    elif case == "above_one":
        csv_path.write_text(text.replace("0.9,0.05,0.05", "1.7,0.05,0.05"))
    elif case == "below_zero":
        csv_path.write_text(text.replace("0.8,0.1,0.1", "0.8,-0.1,0.1"))
    elif case == "nan":
        csv_path.write_text(text.replace("0.8,0.1,0.1", "0.8,nan,0.1"))
    proc = run_perf(model.root, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    expected = {
        "missing_csv": "run batch_label_images.py", "missing_column": "predicted_label",
        "unknown_expected": "purple", "unknown_predicted": "purple",
        "not_a_number": "high", "no_rows": "no images", "bad_target": "--target_accuracy",
        "missing_model_dir": "create_dirs", "not_utf8": "not UTF-8",
        "above_one": "line 2: a confidence is not a number from 0 to 1",
        "below_zero": "line 3: a confidence is not a number from 0 to 1",
        "nan": "line 3: a confidence is not a number from 0 to 1",
    }[case]
    assert expected in lines[0]
    assert not model.report_md.exists()


def test_load_confidences_errors_are_user_errors(tmp_path: Path):
    with pytest.raises(UserError, match="batch_label_images.py first"):
        load_confidences(tmp_path / "none.csv")
    only_fixed = tmp_path / "fixed.csv"
    only_fixed.write_text("filename,time_ms,predicted_label,expected_label\na.jpg,1,n/a,x\n")
    with pytest.raises(UserError, match="no label columns"):
        load_confidences(only_fixed)


@pytest.mark.slow
def test_a_utf8_bom_is_read_like_plain_utf8(model: ModelPaths):
    plain = load_confidences(model.confidences_csv())
    model.confidences_csv().write_bytes(b"\xef\xbb\xbf" + csv_text().encode("utf-8"))
    with_bom = load_confidences(model.confidences_csv())
    assert with_bom.filenames == plain.filenames and with_bom.labels == LABELS
    proc = run_perf(model.root, "m", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["modes"]["ground"]["accuracy"] == pytest.approx(0.7)
