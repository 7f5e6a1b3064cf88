"""The runtime judge (opssat/judge/agreement.py) and every entry point that reads SmartCam's
answers, fed by fake SmartCam folders whose ``image_classifier`` prints a chosen answer:
flat, all ones, NaN, 1e308 or one fixed vector. Each is refused with one line naming the
cause, and nothing is written. With SmartCam's real k8 build, TensorFlow's default
per-channel int8 model is refused by the flight comparison itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import OPSSAT_LABELS, one_error_line, run_script, shared_dir
from test_flight import bundled, install_model
from test_security import listing

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.judge import agreement, infer
from opssat.judge.contract import check_contract
from opssat.onboard import flight
from opssat.uplink import package

LABELS = OPSSAT_LABELS
RUNTIME_DIR = shared_dir("smartcam_runtime")
needs_binaries = pytest.mark.skipif(not (RUNTIME_DIR / "k8").is_dir(),
                                    reason=f"SmartCam's binaries are not in {RUNTIME_DIR}")

#: What each fake image_classifier prints, and a word its refusal must contain.
ANSWERS = {
    "flat": ('{"bad": 0.333, "earth": 0.333, "edge": 0.333}', "same confidence"),
    "ones": ('{"bad": 1.0, "earth": 1.0, "edge": 1.0}', "sum to 3.0000"),
    "nan": ('{"bad": nan, "earth": 0.5, "edge": 0.5}', "answered nan for 'bad'"),
    "NaN": ('{"bad": 0.5, "earth": NaN, "edge": 0.5}', "answered nan for 'earth'"),
    "huge": ('{"bad": 1e308, "earth": 0.0, "edge": 0.0}', "outside [0, 1]"),
    "fixed": ('{"bad": 0.7, "earth": 0.2, "edge": 0.1}', "same answer (bad 0.7"),
}


def fake_smartcam(folder: Path, answer: str) -> Path:
    """A SmartCam clone whose resizer copies the image and whose classifier prints
    ``answer`` whatever the image."""
    build = folder / "k8"
    for program, script in (
        (flight.RESIZER, '#!/bin/sh\ncp "$2" "${12}"\n'),
        (flight.CLASSIFIER, f"#!/bin/sh\ncat <<'EOF'\n{answer}\nEOF\n"),
    ):
        path = build / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
    return folder


def model_with_tests(repo_root: Path, model: Path, count: int = 4) -> ModelPaths:
    return install_model(repo_root, model, count)


# --- the judge itself ---------------------------------------------------------------


def test_an_honest_answer_passes_and_each_broken_one_is_named():
    assert agreement.answer_problem([0.7, 0.2, 0.1], LABELS) is None
    assert agreement.answer_problem([0.336, 0.344, 0.32], LABELS) is None  # int8 steps
    assert "nan" in agreement.answer_problem([np.nan, 0.5, 0.5], LABELS)
    assert "inf" in agreement.answer_problem([np.inf, 0.0, 0.0], LABELS)
    assert "outside [0, 1]" in agreement.answer_problem([1e308, 0.0, 0.0], LABELS)
    assert "outside [0, 1]" in agreement.answer_problem([-0.2, 0.6, 0.6], LABELS)
    assert "sum to 3.0000" in agreement.answer_problem([1.0, 1.0, 1.0], LABELS)
    assert "2 confidences" in agreement.answer_problem([0.5, 0.5], LABELS)


def test_answers_that_do_not_depend_on_the_image_are_refused():
    flat = np.full((24, 3), 0.332031)
    assert "same confidence (0.332031) on every one of the 24" in \
        agreement.constant_answers_problem(flat, LABELS)
    fixed = np.tile([0.7, 0.2, 0.1], (5, 1))
    assert "same answer (bad 0.7, earth 0.2, edge 0.1)" in \
        agreement.constant_answers_problem(fixed, LABELS)
    varied = fixed.copy()
    varied[2] = [0.1, 0.8, 0.1]
    assert agreement.constant_answers_problem(varied, LABELS) is None
    assert agreement.constant_answers_problem(fixed[:1], LABELS) is None  # one image
    with pytest.raises(UserError, match="same answer"):
        agreement.check(fixed, LABELS)


def test_agreement_needs_the_top1_and_the_probabilities():
    names = ["a", "b", "c"]
    reference = np.array([[0.7, 0.2, 0.1], [0.40, 0.40, 0.20], [0.2, 0.5, 0.3]])
    close = reference + np.array([[-0.03, 0.02, 0.01], [-0.05, 0.05, 0], [0, 0, 0]])
    assert agreement.compare(reference, close, LABELS, names).problem is None
    drifted = reference.copy()
    drifted[2] = [0.2, 0.5 - 2 * agreement.BOUND, 0.3 + 2 * agreement.BOUND]  # top-1 flips
    drifted[0] = [0.7 - 1.5 * agreement.BOUND, 0.2 + 1.5 * agreement.BOUND, 0.1]  # same top-1
    judged = agreement.compare(reference, drifted, LABELS, names)
    assert judged.differing[0].startswith("a: bad ")
    assert judged.differing[1] == "c: SmartCam edge, LiteRT earth"
    assert "differs from LiteRT on 2 of 3 images" in judged.problem
    flat = np.full((3, 3), 1 / 3)
    assert "same confidence" in agreement.compare(reference, flat, LABELS, names).problem
    # The old judge: the first label wins a flat answer's tie, so 'a' agreed.
    assert infer.RuntimeComparison(LABELS, names, reference, flat, [1.0] * 3).problem


# --- every entry point, with fake runtimes -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(ANSWERS))
def test_package_refuses_every_broken_answer(kind, repo_root, tmp_path, contract_models):
    answer, cause = ANSWERS[kind]
    fake = fake_smartcam(tmp_path / "fake", answer)
    paths = model_with_tests(repo_root, contract_models("good"))
    before = listing(repo_root)
    proc = run_script("package_smartcam.py", "m", "--smartcam_dir", fake, repo=repo_root)
    error = one_error_line(proc)
    assert "flight" in error and cause in error, error
    assert "FAIL  flight" in proc.stdout and "OK" not in proc.stdout
    assert listing(repo_root) == before and not paths.smartcam_dir("m").exists()
    checked = run_script("package_smartcam.py", "--check_only", contract_models("good"),
                         "--label_file", paths.labels_file, "--smartcam_dir", fake)
    assert checked.returncode == 1 and cause in checked.stdout, checked.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(ANSWERS))
def test_batch_labelling_refuses_every_broken_answer(kind, repo_root, tmp_path,
                                                     contract_models):
    answer, cause = ANSWERS[kind]
    fake = fake_smartcam(tmp_path / "fake", answer)
    paths = model_with_tests(repo_root, contract_models("good"))
    before = listing(repo_root)
    proc = run_script("batch_label_images.py", "m", "--runtime", "smartcam",
                      "--smartcam_dir", fake, repo=repo_root)
    error = one_error_line(proc)
    assert cause in error and "SmartCam's k8 build" in error, error
    assert "RuntimeWarning" not in proc.stderr
    assert listing(repo_root) == before
    assert not paths.confidences_csv(flight.MODE).exists()


def test_the_resizer_failing_on_every_image_is_a_named_failure(repo_root, tmp_path,
                                                               contract_models):
    fake = fake_smartcam(tmp_path / "fake", ANSWERS["fixed"][0])
    (fake / "k8" / flight.RESIZER).write_text("#!/bin/sh\necho 'stbi: corrupt JPEG' >&2\n"
                                              "exit 1\n")
    paths = model_with_tests(repo_root, contract_models("good"), count=2)
    report = check_contract(paths.tflite_model, paths.labels_file)
    package.check_in_flight(report, paths, flight.Runtime(fake))
    assert report.problems and "corrupt JPEG" in report.problems[-1], report.format()
    assert "REFUSED: 1 problem(s)" in report.format()


def test_check_only_without_a_model_runs_the_flight_check_on_the_sample(tmp_path,
                                                                        contract_models):
    fake = fake_smartcam(tmp_path / "fake", ANSWERS["flat"][0])
    labels = tmp_path / "labels.txt"
    labels.write_text("bad\nearth\nedge\n")
    proc = run_script("package_smartcam.py", "--check_only", contract_models("good"),
                      "--label_file", labels, "--smartcam_dir", fake)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "FAIL  flight" in proc.stdout, proc.stdout
    assert "same confidence" in proc.stdout


# --- with SmartCam's real k8 build ----------------------------------------------------


@pytest.mark.slow
@needs_binaries
def test_a_per_channel_int8_model_is_refused_by_the_flight_comparison(tmp_path):
    """TensorFlow's default int8 conversion (dense weights per channel, which the static
    tfl2.5 check refuses too) is refused by the comparison on its own; every export of
    the toolkit passes it."""
    from test_tflite25 import SIZE, brightness_classifier, calibration, tensorflow_default

    from opssat.train import export

    def judged(data: bytes, name: str) -> infer.RuntimeComparison:
        model = tmp_path / f"{name}.tflite"
        model.write_bytes(data)
        with flight.FlightClassifier(flight.Runtime(RUNTIME_DIR), model, LABELS,
                                     (SIZE, SIZE)) as classifier:
            return infer.compare_runtimes(classifier, bundled(8))

    refused = judged(tensorflow_default(brightness_classifier(), "int8"), "per_channel")
    assert refused.problem is not None
    for quantization in export.QUANTIZATIONS:
        for hidden in (0, 64):
            result = judged(export.tflite_bytes(brightness_classifier(hidden), quantization,
                                                calibration), f"{quantization}_{hidden}")
            assert result.problem is None, (quantization, hidden, result.problem)


def test_flight_answers_with_printf_specials_are_read():
    proc = type("Proc", (), {"stdout": json.dumps({"bad": 0.5}).replace("0.5", "-nan"),
                             "stderr": "", "returncode": 0})()
    classifier = flight.FlightClassifier.__new__(flight.FlightClassifier)
    classifier.labels = ["bad"]
    assert np.isnan(classifier._parse(proc)[0])


@pytest.mark.parametrize("kind", ["flat", "nan", "fixed"])
def test_crossval_flight_mode_refuses_broken_answers(kind, tmp_path, contract_models):
    from opssat.judge.infer import judge_variants

    fake = fake_smartcam(tmp_path / "fake", ANSWERS[kind][0])
    with pytest.raises(UserError, match="SmartCam's k8 build \\(float32\\)") as refused:
        judge_variants({"float32": contract_models("good")}, ["bad", "earth", "edge"],
                       bundled(3), [flight.MODE], 1, flight.Runtime(fake))
    assert ANSWERS[kind][1] in str(refused.value)


def test_calc_perf_refuses_a_flight_csv_of_flat_answers(repo_root):
    from opssat.core.paths import model_paths
    from opssat.judge import confidences

    paths = model_paths("m", repo_root)
    paths.classification_dir.mkdir(parents=True)
    rows = [confidences.header(LABELS)] + [
        confidences.row(f"bad/{n}.jpg", 1.0, "n/a", "bad", np.full(3, 0.332031))
        for n in range(4)]
    paths.confidences_csv(flight.MODE).write_text(
        "".join(",".join(map(str, row)) + "\n" for row in rows))
    before = listing(repo_root)
    error = one_error_line(run_script("calc_perf.py", "m", repo=repo_root))
    assert "confidences_flight.csv gives every label the same confidence" in error, error
    assert listing(repo_root) == before


def _rehearsal_with(answers: list[dict[str, float]]):
    from opssat.judge import rehearsal_report
    from opssat.uplink import rehearsal

    rows = [{"file": f"img_{i}.png", "answers": json.dumps({"demo": answer}),
             "reason": "", "outcome": "kept"} for i, answer in enumerate(answers)]
    report = rehearsal_report.Rehearsal(rows, {"chain": ["demo", "kmeans_imgseg"]})
    return rehearsal.Result(None, [], report)


def test_a_rehearsal_with_flat_or_nan_answers_is_a_failure():
    from opssat.uplink import rehearsal

    honest = [{"bad": 0.1, "earth": 0.8, "edge": 0.1}, {"bad": 0.7, "earth": 0.2, "edge": 0.1}]
    assert rehearsal.failure(_rehearsal_with(honest)) is None
    flat = [{"bad": 0.332031, "earth": 0.332031, "edge": 0.332031}] * 2
    assert "do not depend on the image" in rehearsal.failure(_rehearsal_with(flat))
    nan = [honest[0], {"bad": float("nan"), "earth": 0.5, "edge": 0.5}]
    assert "not a number" in rehearsal.failure(_rehearsal_with(nan))


def test_crossval_warns_when_flight_differs_from_onboard(tmp_path, contract_models, capsys):
    """Valid, image-dependent answers that are not LiteRT's: a fake runtime that answers
    by the image's place in the run."""
    from opssat.judge.infer import judge_variants
    from opssat.train import crossval

    fake = fake_smartcam(tmp_path / "fake", "")
    (fake / "k8" / flight.CLASSIFIER).write_text(
        '#!/bin/sh\ncase "$1" in *input_1.jpeg) echo \'{"bad": 0.9, "earth": 0.05, '
        '"edge": 0.05}\';;\n*) echo \'{"bad": 0.05, "earth": 0.05, "edge": 0.9}\';; esac\n')
    models = {"float32": contract_models("good")}
    files = bundled(3)
    answers = judge_variants(models, ["bad", "earth", "edge"], files, ["onboard", flight.MODE], 1,
                             flight.Runtime(fake))
    crossval._warn_where_flight_differs(answers, models, files)
    assert "warning: float32: SmartCam differs from LiteRT on" in capsys.readouterr().err
