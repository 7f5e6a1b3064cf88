"""The SmartCam package (opssat/uplink/package.py, package_smartcam.py): its files, config
snippet and checksums, refusals that keep the previous package, and the threshold
suggestion."""

from __future__ import annotations

import configparser
import csv
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import OPSSAT_LABELS as LABELS
from helpers import run_script, write_labels_file

from opssat.core.errors import UserError
from opssat.core.paths import model_paths
from opssat.judge import metrics
from opssat.judge.confidences import load_confidences
from opssat.onboard import smartcam
from opssat.uplink import package


def _model_dir(repo_root: Path, models, kind: str = "good", name: str = "demo") -> Path:
    """repo/<name>/ with a trained model's files, as training leaves them."""
    folder = repo_root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(models(kind), folder / "tflite_model.tflite")
    write_labels_file(folder, LABELS)
    return folder


def _run(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("package_smartcam.py", *args, repo=repo_root, timeout=120)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_check_only_exit_codes(repo_root, contract_models, tmp_path):
    write_labels_file(tmp_path, LABELS)
    good = tmp_path / "good.tflite"
    shutil.copy(contract_models("good"), good)
    bad = tmp_path / "bad.tflite"
    shutil.copy(contract_models("uint8"), bad)
    ok = _run(repo_root, "--check_only", str(good))  # labels.txt beside the file
    assert ok.returncode == 0, ok.stderr
    assert "OK: SmartCam can run this model" in ok.stdout
    refused = _run(repo_root, "--check_only", str(bad))
    assert refused.returncode == 1
    assert "FAIL  input" in refused.stdout and "uint8" in refused.stdout
    assert "Traceback" not in refused.stderr
    assert not any(repo_root.iterdir())


# --- the package -----------------------------------------------------------------------


@pytest.mark.slow
def test_good_model_packages_with_checksums_and_config(repo_root, contract_models):
    folder = _model_dir(repo_root, contract_models)
    result = _run(repo_root, "demo")
    assert result.returncode == 0, result.stderr
    written = folder / "smartcam" / "demo"
    assert sorted(p.name for p in written.iterdir()) == sorted(
        ["model.tflite", "labels.txt", "config_snippet.ini", "SHA256SUMS", "README.txt"])
    assert (written / "model.tflite").read_bytes() == contract_models("good").read_bytes()
    assert (written / "labels.txt").read_text().splitlines() == LABELS

    sums = (written / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == 4
    for line in sums:
        digest, name = line.split("  ")
        assert hashlib.sha256((written / name).read_bytes()).hexdigest() == digest
    if shutil.which("sha256sum"):
        check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=written,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr

    config = configparser.ConfigParser()  # read as SmartCam reads its config.ini
    config.read(written / "config_snippet.ini")
    section = "model_demo"
    assert config.sections() == [section]
    assert config.get(section, "demo.tflite_model") == "/home/exp1000/models/demo/model.tflite"
    assert config.get(section, "demo.labels") == "/home/exp1000/models/demo/labels.txt"
    assert json.loads(config.get(section, "demo.labels_keep")) == LABELS
    assert config.getint(section, "demo.input_height") == 224
    assert config.getint(section, "demo.input_width") == 224
    assert config.getfloat(section, "demo.input_mean") == 0.0
    assert config.getfloat(section, "demo.input_std") == 255.0
    assert config.getfloat(section, "demo.confidence_threshold") == pytest.approx(0.70)
    assert len(config[section]) == 8

    assert f"{written / 'model.tflite'} -> /home/exp1000/models/demo/model.tflite" in result.stdout
    assert f"{written / 'labels.txt'} -> /home/exp1000/models/demo/labels.txt" in result.stdout
    assert "[model_demo]" in result.stdout
    assert "no evaluation found" in result.stdout
    readme = (written / "README.txt").read_text()
    assert "/home/exp1000/models/demo/model.tflite" in readme and "= 0.7:" in readme
    assert [p.name for p in (folder / "smartcam").iterdir()] == ["demo"]


@pytest.mark.slow
def test_package_name_and_other_model_file(repo_root, contract_models):
    folder = _model_dir(repo_root, contract_models)
    shutil.copy(contract_models("good"), folder / "tflite_model_float16.tflite")
    result = _run(repo_root, "demo", "--name", "cloud_v2", "--model_file",
                  "tflite_model_float16.tflite", "--threshold", "0.8")
    assert result.returncode == 0, result.stderr
    written = folder / "smartcam" / "cloud_v2"
    config = configparser.ConfigParser()
    config.read(written / "config_snippet.ini")
    assert config.get("model_cloud_v2", "cloud_v2.tflite_model") == (
        "/home/exp1000/models/cloud_v2/model.tflite")
    assert config.getfloat("model_cloud_v2", "cloud_v2.confidence_threshold") == 0.8
    assert "given with --threshold" in result.stdout
    assert package.package_threshold(written) == 0.8


@pytest.mark.parametrize("name", ["a/b", "a b", "", "-x", ".x", "a:b", "../up", "a%b"])
def test_bad_package_names_are_refused(name):
    with pytest.raises(UserError, match="invalid"):
        package.check_package_name(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a/b", "a b"])
def test_bad_package_name_on_the_command_line(repo_root, contract_models, name):
    folder = _model_dir(repo_root, contract_models)
    result = _run(repo_root, "demo", f"--name={name}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid") and len(result.stderr.splitlines()) == 1
    assert not (folder / "smartcam").exists()


@pytest.mark.parametrize("name", ["demo", "cloud_detection", "v1.2-gray"])
def test_good_package_names_pass(name):
    assert package.check_package_name(name) == name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "labels", "reason"),
    [
        ("uint8", LABELS, "uint8"),
        ("size32", LABELS, "1x32x32x3"),
        ("good", [*LABELS, "cloud"], "4 labels"),
        ("good", ["bad", "bad", "edge"], "more than once"),
        ("flex", LABELS, "FlexCumprod"),
    ],
)
def test_refused_model_keeps_the_previous_package(repo_root, contract_models, kind, labels, reason):
    folder = _model_dir(repo_root, contract_models)
    paths = model_paths("demo")
    package.build_package(paths, "demo", paths.tflite_model, paths.labels_file)
    before = _snapshot(folder / "smartcam")
    shutil.copy(contract_models(kind), folder / "tflite_model.tflite")
    write_labels_file(folder, labels)
    result = _run(repo_root, "demo")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "refused" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr
    assert _snapshot(folder / "smartcam") == before


@pytest.mark.slow
def test_non_tflite_file_is_refused_and_nothing_written(repo_root, contract_models):
    folder = _model_dir(repo_root, contract_models)
    (folder / "tflite_model.tflite").write_text("<html>not a model</html>")
    result = _run(repo_root, "demo")
    assert result.returncode == 2
    assert "not a TFLite model" in result.stderr and "Traceback" not in result.stderr
    assert not (folder / "smartcam").exists()


def test_crash_while_writing_keeps_the_previous_package(repo_root, contract_models, monkeypatch):
    folder = _model_dir(repo_root, contract_models)
    paths = model_paths("demo")
    package.build_package(paths, "demo", paths.tflite_model, paths.labels_file, 0.9)
    before = _snapshot(folder / "smartcam")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(package, "sha256sums", crash)
    with pytest.raises(OSError):
        package.build_package(paths, "demo", paths.tflite_model, paths.labels_file, 0.5)
    assert _snapshot(folder / "smartcam") == before
    assert [p.name for p in (folder / "smartcam").iterdir()] == ["demo"]


# --- the threshold -----------------------------------------------------------------------

#: (top-1 probability, is it right): kept accuracy is 100% from 0.81 up, 6/7 at
#: 0.61..0.65 and 7/9 at 0.46..0.55 (the .x05 values keep clear of the 0.01 grid).
ROWS = [(0.985, True), (0.945, True), (0.905, True), (0.855, True), (0.805, False),
        (0.755, True), (0.655, True), (0.605, False), (0.555, True), (0.455, False)]


def _write_confidences(path: Path, rows: list[tuple[float, bool]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "time_ms", "predicted_label", "expected_label", *LABELS])
        for index, (top, right) in enumerate(rows):
            expected = LABELS[index % 3]
            predicted = expected if right else LABELS[(index + 1) % 3]
            probabilities = [(1 - top) / 2] * 3
            probabilities[LABELS.index(predicted)] = top
            writer.writerow([f"{expected}/img{index}.jpeg", "1.0",
                             predicted if top >= 0.7 else "n/a", expected, *probabilities])
    return path


@pytest.mark.parametrize(("target", "expected", "kept"),
                         [(0.95, 0.81, 4), (0.8, 0.61, 7), (0.7, 0.50, 9)])
def test_threshold_suggestion_matches_the_threshold_table(repo_root, target, expected, kept):
    paths = model_paths("demo")
    csv_path = _write_confidences(paths.confidences_csv("ground"), ROWS)
    advice = package.recommend_threshold(paths, target, LABELS)
    assert advice.threshold == pytest.approx(expected)
    assert advice.source == csv_path
    table = metrics.threshold_table(load_confidences(csv_path))
    from_table = metrics.suggest_threshold(
        [row for row in table if row.threshold >= package.MIN_SUGGESTED_THRESHOLD], target)
    assert advice.threshold == pytest.approx(from_table.threshold)
    assert advice.row.kept == kept == from_table.kept
    assert advice.row.kept_accuracy == from_table.kept_accuracy >= target


def test_threshold_never_suggested_below_one_half(repo_root):
    paths = model_paths("demo")
    csv_path = _write_confidences(paths.confidences_csv("ground"), ROWS)
    unfloored = metrics.suggest_threshold(
        metrics.threshold_table(load_confidences(csv_path)), 0.7)
    assert unfloored.threshold < 0.5
    assert package.recommend_threshold(paths, 0.7, LABELS).threshold == pytest.approx(0.5)


def test_unreachable_target_keeps_the_default(repo_root):
    paths = model_paths("demo")
    rows = [(0.985, False), *ROWS[1:]]  # the most confident image is wrong
    _write_confidences(paths.confidences_csv("ground"), rows)
    advice = package.recommend_threshold(paths, 0.95, LABELS)
    assert advice.threshold == smartcam.CONFIDENCE_THRESHOLD
    assert "no threshold" in advice.reason


@pytest.mark.slow
def test_onboard_evaluation_is_preferred_and_reported(repo_root, contract_models):
    folder = _model_dir(repo_root, contract_models)
    paths = model_paths("demo")
    _write_confidences(paths.confidences_csv("ground"), [(0.99, True)] * 10)
    onboard = _write_confidences(paths.confidences_csv("onboard"), ROWS)
    os.utime(folder / "tflite_model.tflite", (1, 1))  # the evaluations are newer
    result = _run(repo_root, "demo")
    assert result.returncode == 0, result.stderr
    assert "confidence_threshold 0.81" in result.stdout
    assert str(onboard) in result.stdout
    assert "passes the threshold on 40.0% of images (4), 100.0% correct" in result.stdout
    assert package.package_threshold(paths.smartcam_dir("demo")) == pytest.approx(0.81)
    assert "warning" not in result.stderr


def test_the_all_data_model_takes_its_threshold_from_the_split_models_test(repo_root):
    """The model trained on all of data/all has no held-out images: the test split's
    evaluation (made by the split model, the same recipe) is its evidence, stale only
    when the split model is newer than it."""
    paths = model_paths("demo")
    csv_path = _write_confidences(paths.confidences_csv("onboard"), ROWS)
    for model in (paths.tflite_model, paths.all_data.tflite_model):
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_bytes(b"tflite")
    os.utime(paths.tflite_model, (1, 1))  # evaluated after the split model was trained
    uplink = paths.all_data.tflite_model
    advice = package.recommend_threshold(paths, 0.95, LABELS, model_file=uplink)
    assert advice.threshold == pytest.approx(0.81)
    assert advice.source == csv_path and advice.warnings == []
    assert "the split model's test images" in advice.reason
    os.utime(csv_path, (0, 0))  # now the split model is newer than its evaluation
    advice = package.recommend_threshold(paths, 0.95, LABELS, model_file=uplink)
    assert len(advice.warnings) == 1 and str(paths.tflite_model) in advice.warnings[0]
    advice = package.recommend_threshold(paths, 0.95, LABELS, model_file=paths.tflite_model)
    assert "split model" not in advice.reason


def test_evaluation_of_other_labels_is_ignored(repo_root):
    paths = model_paths("demo")
    _write_confidences(paths.confidences_csv("ground"), ROWS)
    advice = package.recommend_threshold(paths, 0.95, ["cloud", "earth", "edge"])
    assert advice.threshold == smartcam.CONFIDENCE_THRESHOLD
    assert advice.warnings and "ignoring" in advice.warnings[0]


@pytest.mark.slow
def test_threshold_out_of_range_is_refused(repo_root, contract_models):
    _model_dir(repo_root, contract_models)
    result = _run(repo_root, "demo", "--threshold", "1.5")
    assert result.returncode == 2 and "between 0 and 1" in result.stderr
    assert not (repo_root / "demo" / "smartcam").exists()


def test_threshold_advice_says_whether_it_reads_calibrated_probabilities(repo_root):
    paths = model_paths("demo")
    _write_confidences(paths.confidences_csv("ground"), ROWS)
    assert "calibrat" not in package.recommend_threshold(paths, 0.95, LABELS).reason
    paths.train_record.write_text(json.dumps(
        {"temperature": {"T": 1.42, "fitted_on": "given (--temperature)"}}))
    reason = package.recommend_threshold(paths, 0.95, LABELS).reason
    assert "reads calibrated probabilities (temperature T = 1.420, given" in reason
    paths.train_record.write_text(json.dumps({"temperature": {"T": 1.0, "fitted_on": "off"}}))
    assert "as trained" in package.recommend_threshold(paths, 0.95, LABELS).reason
