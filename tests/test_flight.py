"""Running SmartCam's own binaries (opssat.onboard.flight): finding a build, batch labelling as
mode ``flight`` and the package's flight check. Tests that run the binaries need
../shared/smartcam_runtime (and, for armhf, qemu-user with the armhf C/C++ runtime)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT, one_error_line, run_script, shared_dir
from test_calc_perf import ROWS, csv_text

from opssat.core.paths import model_paths
from opssat.data import images, sample
from opssat.judge import infer
from opssat.judge.contract import ContractError
from opssat.onboard import flight
from opssat.uplink import package

RUNTIME_DIR = shared_dir("smartcam_runtime")
LABELS = ["bad", "earth", "edge"]

needs_binaries = pytest.mark.skipif(
    not (RUNTIME_DIR / "k8").is_dir(),
    reason=f"SmartCam's binaries are not in {RUNTIME_DIR}")
needs_armhf = pytest.mark.skipif(
    not (RUNTIME_DIR / "armhf").is_dir() or flight.armhf_problem() is not None,
    reason=f"SmartCam's armhf build cannot run here: {flight.armhf_problem()}")


def bundled(count: int) -> list[Path]:
    files = [p for folder in images.label_folders(sample.REAL_SAMPLE_DIR)
             for p in images.list_files(folder)]
    return files[:: max(1, len(files) // count)][:count]


def model_with_tests(repo_root: Path, make_tflite, count: int = 6):
    """repo/m/ with a 224x224 float model, its labels and ``count`` bundled test images."""
    return install_model(repo_root, make_tflite(labels=LABELS, size=224), count)


def install_model(repo_root: Path, model: Path, count: int):
    """repo/m/ with ``model`` (labels LABELS) and ``count`` bundled test images."""
    paths = model_paths("m", repo_root)
    paths.model_dir.mkdir()
    shutil.copy(model, paths.tflite_model)
    paths.labels_file.write_text("".join(f"{label}\n" for label in LABELS))
    for path in bundled(count):
        target = paths.test_dir / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return paths


# --- finding the binaries ---------------------------------------------------------------


def test_library_names_are_mangled_as_bazel_does():
    assert flight.solib_name("tensorflow/lite/c/libc_api.so") == \
        "libtensorflow_Slite_Sc_Slibc_Uapi.so"
    assert flight.solib_name("external/ruy/ruy/libctx.so") == \
        "libexternal_Sruy_Sruy_Slibctx.so"


def test_the_flag_wins_over_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(flight.ENV_VAR, str(tmp_path / "env"))
    assert flight.smartcam_dir(tmp_path / "flag") == tmp_path / "flag"
    assert flight.smartcam_dir(None) == tmp_path / "env"
    monkeypatch.delenv(flight.ENV_VAR)
    assert flight.smartcam_dir(None) is None


def test_a_folder_without_smartcam_says_what_it_expected(tmp_path):
    with pytest.raises(flight.UserError, match="not found: pass --smartcam_dir"):
        flight.Runtime(tmp_path / "missing")
    with pytest.raises(flight.UserError, match=r"home/exp1000/bin/k8/tensorflow/lite/c/"
                       "image_classifier"):
        flight.Runtime(tmp_path)
    with pytest.raises(flight.UserError, match="unknown SmartCam build"):
        flight.Runtime(tmp_path, "arm64")


def test_a_clone_layout_is_found(tmp_path):
    classifier = tmp_path / "clone" / flight.BIN_DIR / "k8" / flight.CLASSIFIER
    classifier.parent.mkdir(parents=True)
    classifier.write_bytes(b"")
    assert flight.Runtime(tmp_path / "clone").bin_dir == (classifier.parents[3]).resolve()


def test_batch_labelling_with_smartcam_needs_the_binaries(repo_root, make_tflite, monkeypatch):
    monkeypatch.delenv(flight.ENV_VAR, raising=False)
    paths = model_with_tests(repo_root, make_tflite, count=1)
    proc = run_script("batch_label_images.py", "m", "--runtime", "smartcam", repo=repo_root)
    assert "--smartcam_dir" in one_error_line(proc)
    assert not paths.confidences_csv(flight.MODE).exists()


# --- with SmartCam's binaries --------------------------------------------------------


@pytest.mark.slow
@needs_binaries
def test_flight_gives_litert_answers_for_a_float_model(make_tflite):
    model = make_tflite(labels=LABELS, size=224)
    files = bundled(4)
    with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR), model, LABELS) as classifier:
        result = infer.compare_runtimes(classifier, files)
        with pytest.raises(images.UnreadableImageError, match="SmartCam's resizer"):
            classifier.load(Path(__file__))
    assert result.agreeing == 4 and result.differing == []
    assert result.largest_difference < 1e-5
    assert all(ms > 0 for ms in result.flight_ms)


@pytest.mark.slow
@needs_binaries
def test_batch_label_images_runtime_smartcam_writes_mode_flight(repo_root, make_tflite):
    paths = model_with_tests(repo_root, make_tflite)
    env = {flight.ENV_VAR: str(RUNTIME_DIR)}
    proc = run_script("batch_label_images.py", "m", "--runtime", "smartcam", "--no_progress",
                      repo=repo_root, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    csv_path = paths.confidences_csv(flight.MODE)
    assert csv_path.name == "confidences_flight.csv"
    with csv_path.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert len(rows) == 1 + 6
    local = run_script("batch_label_images.py", "m", "--preprocess", "onboard",
                       "--threshold", "0", "--no_progress", repo=repo_root)
    assert local.returncode == 0, local.stderr[-2000:]
    assert paths.classified_dir(flight.MODE).is_dir()
    assert not paths.confidences_csv("ground").exists()


@pytest.mark.slow
@needs_binaries
def test_package_runs_the_flight_check_on_the_test_images(repo_root, make_tflite):
    model_with_tests(repo_root, make_tflite, count=3)
    proc = run_script("package_smartcam.py", "m", "--smartcam_dir", RUNTIME_DIR,
                      repo=repo_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pass  flight   SmartCam's k8 build gives LiteRT's top-1 on 3/3 test images" \
        in proc.stdout


@needs_binaries
def test_package_refuses_a_model_whose_top1_differs_and_names_the_images(
        repo_root, make_tflite, monkeypatch):
    paths = model_with_tests(repo_root, make_tflite, count=2)

    def disagreeing(classifier, files, names, progress=False):
        litert = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], np.float32)
        return infer.RuntimeComparison(LABELS, names, litert, litert[::-1].copy(), [1.0, 1.0])

    monkeypatch.setattr(infer, "compare_runtimes", disagreeing)
    with pytest.raises(ContractError) as refused:
        package.build_package(paths, "m", paths.tflite_model, paths.labels_file,
                              runtime=flight.Runtime(RUNTIME_DIR))
    message = str(refused.value)
    assert "SmartCam differs from LiteRT on 2 of 2 images" in message
    assert "SmartCam earth, LiteRT bad" in message
    assert not paths.smartcam_dir("m").exists()


@pytest.mark.slow
@needs_binaries
@needs_armhf
def test_the_flight_build_under_qemu_agrees_with_k8(make_tflite):
    model = make_tflite(labels=LABELS, size=224)
    files = bundled(2)
    answers = {}
    for arch in flight.ARCHES:
        with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR, arch), model,
                                     LABELS) as classifier:
            answers[arch] = np.array([classifier.classify_file(p)[0] for p in files])
    assert np.abs(answers["k8"] - answers["armhf"]).max() < 1e-3


# --- calc_perf with a third mode, flight ------------------------------------------------


@pytest.mark.slow
def test_calc_perf_shows_flight_beside_ground_and_onboard(repo_root):
    paths = model_paths("m", repo_root)
    paths.classification_dir.mkdir(parents=True)
    paths.confidences_csv().write_text(csv_text())
    paths.confidences_csv("onboard").write_text(csv_text())
    flown = list(ROWS)
    flown[1] = ("bad/2.jpg", "bad", (0.1, 0.1, 0.8))  # SmartCam's runtime says edge
    paths.confidences_csv(flight.MODE).write_text(csv_text(flown))
    proc = run_script("calc_perf.py", "m", "--json", repo=repo_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert list(out["modes"]) == ["ground", "onboard", "flight"]
    assert out["flight_agreement"]["matched"] == 10 and out["flight_agreement"]["agreeing"] == 9
    text = run_script("calc_perf.py", "m", repo=repo_root).stdout
    assert "top-1 agreement onboard vs flight: 9 / 10" in text
    page = paths.report_html.read_text(encoding="utf-8")
    assert "Images whose top-1 differs, onboard vs flight (1)" in page
    assert 'data-name="bad/2.jpg"' in page or "bad/2.jpg" in page


@pytest.mark.slow
def test_crossval_flight_mode_needs_the_binaries(repo_root, monkeypatch):
    monkeypatch.delenv(flight.ENV_VAR, raising=False)
    model_paths("m", repo_root).all_dir.mkdir(parents=True)
    proc = run_script("crossval.py", "m", "--modes", "onboard,flight", repo=repo_root)
    assert "--modes flight runs SmartCam's own binaries: pass --smartcam_dir" in \
        one_error_line(proc)


def test_a_tie_is_no_difference():
    litert = np.array([[0.40, 0.40, 0.20], [0.6, 0.3, 0.1]], np.float32)
    flown = np.array([[0.35, 0.45, 0.20], [0.3, 0.6, 0.1]], np.float32)
    compared = infer.RuntimeComparison(LABELS, ["tie.jpeg", "real.jpeg"], litert, flown,
                                       [1.0, 1.0])
    assert compared.differing == ["real.jpeg: SmartCam earth, LiteRT bad"]
    assert compared.agreeing == 1


@pytest.mark.slow
@needs_binaries
def test_every_variant_train_sh_exports_agrees_in_the_binaries(tiny_hub, repo_root):
    """train.sh on the bundled sample with every --quantize (a tiny backbone, not Lite0,
    to stay fast), then every bundled image through SmartCam's k8 build."""
    paths = model_paths("m", repo_root)
    assert run_script(PROJECT / "create_dirs.sh", "m", repo=repo_root).returncode == 0
    made = run_script("make_sample_data.py", "m", "--real", repo=repo_root)
    assert made.returncode == 0, made.stderr[-2000:]
    trained = run_script(PROJECT / "train.sh", "m", "3", "--tfhub_module", tiny_hub,
                         "--train_preprocess", "onboard", "--validation_split", "0",
                         "--quantize", "int8", "--quantize", "dynamic", "--quantize", "float16",
                         "--image_dir", paths.all_dir, repo=repo_root, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads(paths.train_record.read_text())
    assert record["target_runtime"].startswith("TensorFlow Lite 2.5.0")
    files = bundled(200)
    labels = paths.labels_file.read_text().split()
    for quantization in ("none", "float16", "dynamic", "int8"):
        model = paths.tflite_model if quantization == "none" else \
            paths.tflite_variant(quantization)
        with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR), model, labels) as classifier:
            result = infer.compare_runtimes(classifier, files)
        assert len(result.names) == len(files) == 123
        assert result.differing == [], (quantization, result.differing)


@pytest.mark.slow
@needs_binaries
def test_a_calibrated_ensemble_runs_in_the_k8_build_as_in_litert(tiny_hub, repo_root):
    """--temperature folded into the dense layers and --ensemble_seeds 2 (one graph that
    averages two members' softmax outputs): SmartCam's k8 build gives LiteRT's
    probabilities within 1e-4 on bundled images."""
    paths = model_paths("m", repo_root)
    assert run_script(PROJECT / "create_dirs.sh", "m", repo=repo_root).returncode == 0
    assert run_script("make_sample_data.py", "m", "--real", repo=repo_root).returncode == 0
    trained = run_script(PROJECT / "train.sh", "m", "2", "--tfhub_module", tiny_hub,
                         "--train_preprocess", "onboard", "--validation_split", "0",
                         "--temperature", "1.7", "--ensemble_seeds", "2",
                         "--image_dir", paths.all_dir, repo=repo_root, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads(paths.train_record.read_text())
    assert record["temperature"] == {"T": 1.7, "fitted_on": "given (--temperature)"}
    assert record["ensemble_seeds"] == [42, 43]
    labels = paths.labels_file.read_text().split()
    with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR), paths.tflite_model,
                                 labels) as classifier:
        result = infer.compare_runtimes(classifier, bundled(12))
    assert len(result.names) == 12 and result.differing == []
    assert result.largest_difference < 1e-4


@pytest.mark.slow
@needs_binaries
def test_exposure_features_and_two_rate_fine_tuning_run_in_the_k8_build(tiny_hub, repo_root):
    """--exposure_features adds comparisons, casts and means to the graph, fine-tuned with
    the head and backbone at two rates: the float and int8 files still give LiteRT's
    answers in SmartCam's k8 build."""
    paths = model_paths("m", repo_root)
    assert run_script(PROJECT / "create_dirs.sh", "m", repo=repo_root).returncode == 0
    assert run_script("make_sample_data.py", "m", "--real", repo=repo_root).returncode == 0
    trained = run_script(PROJECT / "train.sh", "m", "2", "--tfhub_module", tiny_hub,
                         "--train_preprocess", "onboard", "--validation_split", "0",
                         "--exposure_features", "--quantize", "int8",
                         "--image_dir", paths.all_dir, repo=repo_root, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "0.005 (head)" in trained.stdout
    record = json.loads(paths.train_record.read_text())
    assert record["options"]["exposure_features"] is True
    labels = paths.labels_file.read_text().split()
    for model in (paths.tflite_model, paths.tflite_variant("int8")):
        with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR), model, labels) as classifier:
            result = infer.compare_runtimes(classifier, bundled(12))
        assert len(result.names) == 12 and result.differing == [], model
