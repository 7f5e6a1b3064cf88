"""The flight rehearsal (rehearse.py, opssat/uplink/rehearsal.py): SmartCam's own smartcam.py
run over the test thumbnails with the package plugged in. Needs ../shared/opssat-smartcam
(assemble.sh) and ../shared/smartcam_runtime; every test that runs SmartCam is slow."""

from __future__ import annotations

import configparser
import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import OPSSAT_LABELS as LABELS
from helpers import PROJECT, one_error_line, run_script, shared_dir, write_labels_file

from opssat.core.paths import model_paths
from opssat.judge import rehearsal_report as rr
from opssat.onboard import flight
from opssat.uplink import package, rehearsal_runner

APP = shared_dir("opssat-smartcam")
RUNTIME = shared_dir("smartcam_runtime")
pytestmark = pytest.mark.skipif(
    not (APP / "assemble.sh").is_file() or not (RUNTIME / "k8").is_dir(),
    reason=f"SmartCam's app or runtime not found ({APP}, {RUNTIME})")
SAMPLE = PROJECT / "sample_data" / "opssat_real"


def brightness_model_bytes() -> bytes:
    """A 224x224 float model whose answer follows the image's brightness: bright 'bad',
    middle 'earth', dark 'edge', with confidences spread over the thresholds tested."""
    import tensorflow as tf
    import tf_keras

    from opssat.train import export

    inputs = tf_keras.Input((224, 224, 3))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf_keras.layers.Dense(3, activation="softmax")
    model = tf_keras.Model(inputs, dense(pooled))
    kernel = np.tile(np.array([[10.0, 0.0, -10.0]], np.float32) / 3, (3, 1))
    dense.set_weights([kernel, np.array([-4.0, 0.0, 3.0], np.float32)])
    rng = np.random.default_rng(0)

    def calibration():
        for _ in range(2):
            yield rng.random((1, 224, 224, 3), dtype=np.float32)

    return export.tflite_bytes(model, "none", calibration, tf.float32)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone as assemble.sh lays it out."""
    dest = tmp_path_factory.mktemp("smartcam") / "clone"
    subprocess.run([str(APP / "assemble.sh"), str(dest)], check=True, capture_output=True)
    return dest


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return brightness_model_bytes()


def _images(per_label: int) -> list[tuple[str, Path]]:
    return [(label, path) for label in LABELS
            for path in sorted((SAMPLE / label).iterdir())[:per_label]]


@pytest.fixture
def demo(repo_root: Path, model_bytes: bytes):
    """repo/demo with the model, 2 test thumbnails per label, data/all, and its package."""
    paths = model_paths("demo")
    paths.model_dir.mkdir()
    paths.tflite_model.write_bytes(model_bytes)
    write_labels_file(paths.model_dir, LABELS)
    for label, path in _images(2):
        for folder in (paths.test_dir, paths.all_dir):
            (folder / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / label / path.name)
    package.build_package(paths, "demo", paths.tflite_model, paths.labels_file, 0.5)
    return paths


def _rehearse(repo_root: Path, clone: Path, *args, env=None, timeout=240):
    return run_script("rehearse.py", *args, "--smartcam_dir", clone, repo=repo_root, env=env,
                      timeout=timeout)


def _rows(paths) -> list[dict]:
    with open(paths.rehearsal_csv, newline="") as handle:
        return list(csv.DictReader(handle))


def _config(clone: Path, tmp_path: Path, **sections) -> Path:
    """The clone's config.dev.ini with ``sections``' keys changed."""
    parser = configparser.ConfigParser()
    parser.read(clone / "home/exp1000/config.dev.ini")
    for name, values in sections.items():
        if not parser.has_section(name):
            parser.add_section(name)
        parser[name].update(values)
    path = tmp_path / "config.ini"
    with open(path, "w") as handle:
        parser.write(handle)
    return path


def _demo_section(demo, **changes: str) -> dict[str, str]:
    """The package's own [model_demo] section with ``changes`` (keys without 'demo.')."""
    parser = configparser.ConfigParser()
    parser.read(demo.smartcam_dir("demo") / package.CONFIG_SNIPPET_FILE)
    return {**parser["model_demo"], **{f"demo.{k}": v for k, v in changes.items()}}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_runner_sets_only_the_two_constants():
    source = "DEBUG = False\nDEBUG_ARCH = 'armhf'\nBASE = 1 if not DEBUG else 2\n"
    namespace: dict = {}
    exec(compile(rehearsal_runner.debug_module(source, "s.py", "k8"), "s.py", "exec"), namespace)
    assert (namespace["DEBUG"], namespace["DEBUG_ARCH"], namespace["BASE"]) == (True, "k8", 2)
    with pytest.raises(SystemExit):
        rehearsal_runner.debug_module("DEBUG = False\n", "s.py", "k8")


def test_a_model_without_a_package_or_clone_is_one_line(repo_root, tmp_path):
    from opssat.uplink import rehearsal

    model_paths("plain").model_dir.mkdir()
    with pytest.raises(rehearsal.UserError, match="run package_smartcam.py plain first"):
        rehearsal.find_package("plain")
    with pytest.raises(rehearsal.UserError, match="pass --smartcam_dir"):
        rehearsal.find_clone(None, "k8")
    with pytest.raises(rehearsal.UserError, match="no home/exp1000/smartcam.py"):
        rehearsal.find_clone(_fake_runtime_only(tmp_path), "k8")


def _fake_runtime_only(tmp_path: Path) -> Path:
    """A folder with SmartCam's k8 programs but no smartcam.py."""
    folder = tmp_path / "runtime_only"
    (folder / "home/exp1000/bin").mkdir(parents=True)
    (folder / "home/exp1000/bin/k8").symlink_to(RUNTIME / "k8")
    return folder


@pytest.mark.slow
def test_rehearsal_agrees_with_flight_mode_and_counts_what_smartcam_kept(repo_root, clone, demo):
    before = _snapshot(demo.all_dir)
    script = clone / "home/exp1000/smartcam.py"
    original = script.read_bytes()
    proc = _rehearse(repo_root, clone, "demo")
    assert proc.returncode == 0, proc.stderr[-2000:]
    flight_run = run_script("batch_label_images.py", "demo", "--runtime", "smartcam",
                            "--smartcam_dir", clone, "--threshold", "0.5", repo=repo_root)
    assert flight_run.returncode == 0, flight_run.stderr[-2000:]
    with open(demo.confidences_csv(flight.MODE), newline="") as handle:
        flight_rows = {Path(r["filename"]).name: r for r in csv.DictReader(handle)}
    rows = _rows(demo)
    summary = json.loads(demo.rehearsal_summary.read_text())
    assert len(rows) == 6 and summary["rows"] == 6
    for row in rows:
        source = Path(summary["files"][row["file"]]).name
        expected = flight_rows[source]
        answer = json.loads(row["answers"])["demo"]
        assert max(abs(answer[k] - float(expected[k])) for k in LABELS) <= 1e-6
        assert max(answer, key=answer.get) == max(LABELS, key=lambda k: float(expected[k]))
    kept = {label: n for label, n in summary["kept_per_label"].items()}
    assert kept == summary["toground_per_label"]
    assert sum(kept.values()) == sum(r["outcome"] == rr.KEPT for r in rows)
    assert "Flight rehearsal" not in proc.stderr and "kept per label" in proc.stdout
    assert _snapshot(demo.all_dir) == before and script.read_bytes() == original


def _expected_outcome(answer: dict, threshold: float, keep: list[str]) -> str:
    """What SmartCam's code decides for one model: below the threshold or a label not in
    labels_keep deletes the image."""
    top = max(answer, key=answer.get)
    if answer[top] < threshold:
        return rr.BELOW_THRESHOLD
    return rr.KEPT if top in keep else rr.NOT_KEPT


@pytest.mark.slow
@pytest.mark.parametrize(("threshold", "keep"), [("0.65", ["bad", "earth", "edge"]),
                                                 ("0.6", ["edge"])])
def test_threshold_and_labels_keep_decide_as_smartcam_says(repo_root, clone, demo, tmp_path,
                                                           threshold, keep):
    section = _demo_section(demo, labels_keep=json.dumps(keep), confidence_threshold=threshold)
    config = _config(clone, tmp_path, model_demo=section)
    proc = _rehearse(repo_root, clone, "demo", "--config", config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcomes = []
    for row in _rows(demo):
        expected = _expected_outcome(json.loads(row["answers"])["demo"], float(threshold), keep)
        got = rr.KEPT if row["outcome"] == rr.KEPT else row["reason"]
        assert got == expected, row
        outcomes.append(got)
    assert len(set(outcomes)) >= 2, outcomes  # the images do not all go the same way


@pytest.mark.slow
def test_a_chain_to_kmeans_reports_cloud_cover_labels(repo_root, clone, demo, tmp_path):
    section = _demo_section(demo, labels_keep=json.dumps(["earth:kmeans_imgseg", "bad", "edge"]),
                            confidence_threshold="0.4")
    config = _config(clone, tmp_path, model_demo=section,
                     model_kmeans_imgseg={"kmeans_imgseg.confidence_threshold": "0.0"})
    proc = _rehearse(repo_root, clone, "demo", "--config", config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    chained = [r for r in _rows(demo) if r["chain"].startswith("demo:earth>")]
    assert chained, _rows(demo)
    for row in chained:
        assert row["chain"].split(">")[1].startswith("kmeans_imgseg:")
        assert row["final_label"].startswith(("cloudy_", "features")), row
        assert "kmeans_imgseg" in json.loads(row["answers"])
    summary = json.loads(demo.rehearsal_summary.read_text())
    assert summary["chain"] == ["demo", "kmeans_imgseg"]
    assert any(k.startswith("cloudy_") for k in summary["toground_per_label"])


@pytest.mark.slow
def test_a_routing_typo_is_one_line_before_running(repo_root, clone, demo, tmp_path):
    section = _demo_section(demo, labels_keep=json.dumps(["earth:Demo2"]))
    config = _config(clone, tmp_path, model_demo=section, model_demo2={"demo2.bin_model": "x"})
    line = one_error_line(_rehearse(repo_root, clone, "demo", "--config", config))
    assert "[model_Demo2]" in line and "case-sensitive" in line
    assert not demo.rehearsal_dir.exists()
    del section["demo.input_std"]
    config = _config(clone, tmp_path, model_demo=section)
    assert "lacks demo.input_std" in one_error_line(
        _rehearse(repo_root, clone, "demo", "--config", config))


@pytest.mark.slow
def test_thumbnails_off_and_a_small_quota_are_one_line(repo_root, clone, demo, tmp_path):
    config = _config(clone, tmp_path, conf={"downlink_thumbnails": "no"})
    assert "classifies nothing" in one_error_line(
        _rehearse(repo_root, clone, "demo", "--config", config))
    config = _config(clone, tmp_path, conf={"quota_toGround": "10"})
    assert "quota_toGround = 10 KB" in one_error_line(
        _rehearse(repo_root, clone, "demo", "--config", config))


@pytest.mark.slow
def test_a_model_smartcam_cannot_load_is_one_line(repo_root, clone, demo):
    (demo.smartcam_dir("demo") / "model.tflite").write_bytes(b"not a model")
    assert "fails SmartCam's contract" in one_error_line(_rehearse(repo_root, clone, "demo"))


def _broken_clone(clone: Path, tmp_path: Path, program: Path, script: str | None) -> Path:
    """A copy of ``clone`` whose k8 ``program`` is ``script`` (or missing when None)."""
    copy = tmp_path / "broken"
    shutil.copytree(clone, copy, symlinks=True)
    k8 = copy / "home/exp1000/bin/k8"
    k8.unlink()
    shutil.copytree(RUNTIME / "k8", k8, copy_function=os.symlink)
    (k8 / program).unlink()
    if script is not None:
        (k8 / program).write_text(script)
        (k8 / program).chmod(0o755)
    return copy


@pytest.mark.slow
def test_a_classifier_failing_on_board_is_one_line_and_recorded(repo_root, clone, demo, tmp_path):
    broken = _broken_clone(clone, tmp_path, flight.CLASSIFIER,
                           "#!/bin/sh\necho 'ERROR: Could not open model' >&2\nexit 1\n")
    line = one_error_line(_rehearse(repo_root, broken, "demo"))
    assert "failed on all 6 images" in line and "only its log" in line
    assert {r["reason"] for r in _rows(demo)} == {rr.CLASSIFIER_ERROR}


@pytest.mark.slow
def test_a_hanging_or_missing_program_is_one_line(repo_root, clone, demo, tmp_path):
    hanging = _broken_clone(clone, tmp_path, flight.CLASSIFIER, "#!/bin/sh\nsleep 600\n")
    line = one_error_line(_rehearse(repo_root, hanging, "demo", "--timeout", "8"))
    assert "did not finish within 8 s" in line
    shutil.rmtree(tmp_path / "broken")
    missing = _broken_clone(clone, tmp_path, flight.RESIZER, None)
    assert "lacks resizer/resize" in one_error_line(_rehearse(repo_root, missing, "demo"))


@pytest.mark.slow
def test_a_missing_smartcam_package_is_one_line(repo_root, clone, demo, tmp_path):
    fake = tmp_path / "hide" / "ephem"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ephem'\", name='ephem')\n")
    line = one_error_line(_rehearse(repo_root, clone, "demo",
                                    env={"PYTHONPATH": str(tmp_path / "hide")}))
    assert "lacks the package 'ephem'" in line and "requirements.txt" in line


@pytest.mark.slow
@pytest.mark.skipif(flight.armhf_problem() is not None or not (RUNTIME / "armhf").is_dir(),
                    reason=f"SmartCam's armhf build cannot run here: {flight.armhf_problem()}")
def test_armhf_rehearsal_under_qemu(repo_root, clone, demo, tmp_path):
    few = tmp_path / "few"
    for label, path in _images(1)[:2]:
        (few / label).mkdir(parents=True)
        shutil.copy(path, few / label / path.name)
    proc = _rehearse(repo_root, clone, "demo", "--arch", "armhf", "--images", few, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(demo)
    assert len(rows) == 2 and all(json.loads(r["answers"]).get("demo") for r in rows)


@pytest.mark.slow
def test_images_smartcam_never_reached_are_rows_and_a_warning(repo_root, clone, demo, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("empty_1.jpeg", "empty_2.jpeg"):  # SmartCam makes an empty thumbnail
        (folder / name).write_bytes(b"")
    for _, path in _images(1):
        shutil.copy(path, folder / path.name)
    config = _config(clone, tmp_path, conf={"max_error_count": "1"})
    proc = _rehearse(repo_root, clone, "demo", "--images", folder, "--config", config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(demo)
    assert len(rows) == 5 and all(row["true_label"] == "" for row in rows)
    assert rr.RESIZER_FAILED in {row["reason"] for row in rows}
    unreached = [row for row in rows if row["outcome"] == rr.NOT_REACHED]
    assert unreached and all("maximum error count" in row["reason"] for row in unreached)
    assert f"SmartCam never reached {len(unreached)} image(s)" in proc.stderr


@pytest.mark.slow
def test_an_image_smartcam_retries_without_end_is_named(repo_root, clone, demo, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "broken.jpeg").write_bytes(b"not a jpeg")
    line = one_error_line(_rehearse(repo_root, clone, "demo", "--images", folder))
    assert "retries image broken without end" in line  # at once, not after the time limit


@pytest.mark.slow
def test_a_second_package_the_chain_never_reaches_is_one_line(repo_root, clone, demo):
    package.build_package(demo, "second", demo.tflite_model, demo.labels_file, 0.5)
    line = one_error_line(_rehearse(repo_root, clone, "demo", "demo/second"))
    assert "second not reached from the entry point demo" in line
