"""The original toolkit's command lines still run: label_image.py's short flags and
-n recording, batch_label_images.py <model> [labels_to_skip], train.sh <model> <epochs>."""

from __future__ import annotations

import csv
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import PROJECT, write_image

from opssat.core.paths import ModelPaths
from opssat.judge import confidences
from opssat.judge.confidences import load_confidences

LABELS = ["red", "green", "blue"]
COLOURS = {"red": (220, 25, 25), "green": (25, 220, 25), "blue": (25, 25, 220)}
GREY = (120, 110, 100)  # the tiny model's top-1 stays near 0.5 on it


def run(script: str, repo_root: Path, *args: str | Path) -> subprocess.Popen:
    env = {**os.environ, "OPSSAT_REPO": str(repo_root)}
    return subprocess.Popen([sys.executable, script, *map(str, args)], cwd=PROJECT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def call(script: str, repo_root: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return finish(run(script, repo_root, *args))


@pytest.fixture
def model(repo_root: Path, make_tflite) -> ModelPaths:
    """repo/m/ with the tiny colour model, one clear test image per label."""
    paths = ModelPaths("m", repo_root)
    paths.model_dir.mkdir()
    paths.tflite_model.write_bytes(make_tflite().read_bytes())
    paths.labels_file.write_text("".join(f"{x}\n" for x in LABELS))
    for label, colour in COLOURS.items():
        write_image(paths.test_dir / label / f"img_{label}.jpg", colour)
    return paths


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --- label_image.py --------------------------------------------------------------------


def test_short_flags_as_the_original(model: ModelPaths):
    done = call("label_image.py", model.model_dir.parent, "-i", model.test_dir / "red" /
                "img_red.jpg", "-m", model.tflite_model, "-l", model.labels_file, "-t", "0.5",
                "--input_mean", "0", "--input_std", "255", "--num_threads", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("red: ")
    assert not model.classification_dir.exists() or not any(model.classification_dir.iterdir())


def test_model_name_appends_a_row_and_copies_the_image(model: ModelPaths, tmp_path: Path):
    repo = model.model_dir.parent
    red = model.test_dir / "red" / "img_red.jpg"
    grey = write_image(tmp_path / "grey.png", GREY)
    first = call("label_image.py", repo, "-i", red, "-n", "m", "-e", "red")
    assert first.returncode == 0, first.stderr
    second = call("label_image.py", repo, "--image", grey, "--model_name", "m",
                  "--expected_label", "green", "--threshold", "0.9")
    assert second.returncode == 0, second.stderr

    rows = read_rows(model.confidences_csv())
    assert rows[0] == confidences.header(LABELS)
    assert [r[0] for r in rows[1:]] == ["red/img_red.jpg", "green/grey.png"]
    assert [r[2:4] for r in rows[1:]] == [["red", "red"], ["n/a", "green"]]
    assert (model.classified_dir() / "red" / "img_red.jpg").read_bytes() == red.read_bytes()
    assert (model.unclassified_dir() / "grey.png").read_bytes() == grey.read_bytes()
    conf = load_confidences(model.confidences_csv())  # calc_perf reads what was written
    assert conf.labels == LABELS and conf.expected == ["red", "green"]


def test_model_name_rows_match_batch_labelling(model: ModelPaths):
    repo = model.model_dir.parent
    batch = call("batch_label_images.py", repo, "m", "--no_progress")
    assert batch.returncode == 0, batch.stderr
    batch_rows = read_rows(model.confidences_csv())
    model.confidences_csv().unlink()
    for label in LABELS:
        done = call("label_image.py", repo, "-i", model.test_dir / label / f"img_{label}.jpg",
                    "-n", "m", "-e", label)
        assert done.returncode == 0, done.stderr
    single_rows = read_rows(model.confidences_csv())
    assert single_rows[0] == batch_rows[0]
    # Same file, labels and confidences; only the timing column differs.
    assert sorted(r[:1] + r[2:] for r in single_rows[1:]) == sorted(
        r[:1] + r[2:] for r in batch_rows[1:])


def test_two_concurrent_runs_append_one_row_each(model: ModelPaths):
    repo = model.model_dir.parent
    procs = [run("label_image.py", repo, "-i", model.test_dir / label / f"img_{label}.jpg",
                 "-n", "m", "-e", label) for label in ("red", "blue")]
    results = [finish(proc) for proc in procs]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    rows = read_rows(model.confidences_csv())
    assert rows[0] == confidences.header(LABELS)
    assert sorted(r[0] for r in rows[1:]) == ["blue/img_blue.jpg", "red/img_red.jpg"]
    assert all(len(r) == len(rows[0]) for r in rows)


def _append_many(csv_path: str, start: int, count: int) -> None:
    for n in range(start, start + count):
        confidences.append_row(Path(csv_path), LABELS, confidences.row(
            f"red/img_{n}.jpg", 1.0, "red", "red", [0.8, 0.1, 0.1]))


def test_the_lock_keeps_every_row_of_racing_writers(tmp_path: Path):
    csv_path = tmp_path / "classification" / "confidences.csv"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(csv_path), start, 100))
               for start in (0, 100, 200)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    rows = read_rows(csv_path)
    assert rows.count(confidences.header(LABELS)) == 1 and rows[0] == confidences.header(LABELS)
    assert sorted(r[0] for r in rows[1:]) == sorted(f"red/img_{n}.jpg" for n in range(300))
    assert len(load_confidences(csv_path).filenames) == 300


def test_a_csv_of_other_labels_is_refused(tmp_path: Path):
    csv_path = tmp_path / "confidences.csv"
    csv_path.write_text("filename,time_ms,predicted_label,expected_label,cat,dog\n")
    with pytest.raises(confidences.UserError, match="move it away"):
        confidences.append_row(csv_path, LABELS, ["x"] * 7)
    assert csv_path.read_text().count("\n") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["-n", "m"], "-e/--expected_label"),
    (["-n", "m", "-e", "purple"], "'purple' is not one of the model's labels"),
    (["-e", "red"], "only with -n"),
    (["-n", "nosuch", "-e", "red"], "create_dirs.sh nosuch"),
    (["-n", "m", "-e", "red", "-t", "1.5"], "-t/--threshold"),
])
def test_model_name_bad_input_is_one_line_and_writes_nothing(model: ModelPaths, args, message):
    done = call("label_image.py", model.model_dir.parent, "-i",
                model.test_dir / "red" / "img_red.jpg", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    assert not model.classification_dir.exists() or not any(model.classification_dir.iterdir())


# --- batch_label_images.py <model> [labels_to_skip] -----------------------------------


def test_batch_labels_to_skip(model: ModelPaths):
    repo = model.model_dir.parent
    done = call("batch_label_images.py", repo, "m", "green,blue", "--no_progress")
    assert done.returncode == 0, done.stderr
    assert [r[3] for r in read_rows(model.confidences_csv())[1:]] == ["red"]
    every = call("batch_label_images.py", repo, "m", "--no_progress")
    assert every.returncode == 0, every.stderr
    assert sorted(r[3] for r in read_rows(model.confidences_csv())[1:]) == sorted(LABELS)
    unknown = call("batch_label_images.py", repo, "m", "purple", "--no_progress")
    assert unknown.returncode == 0 and "purple" in unknown.stderr
    everything = call("batch_label_images.py", repo, "m", "red,green,blue", "--no_progress")
    assert everything.returncode == 2 and "labels to skip" in everything.stderr


# --- train.sh <model> <epochs> --------------------------------------------------------


@pytest.mark.parametrize("epochs", ["-3", "abc", "2.5", "true", "0", "", "1e3"])
def test_train_sh_refuses_bad_epochs(repo_root: Path, epochs: str):
    done = subprocess.run(["./train.sh", "m", epochs], cwd=PROJECT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "OPSSAT_REPO": str(repo_root)})
    assert done.returncode == 2
    assert done.stderr.startswith("error: epochs") and f"'{epochs}'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_sh_takes_whole_epochs(repo_root: Path):
    """A good epoch count gets past the check to the model folder check."""
    done = subprocess.run(["./train.sh", "nosuch", "3"], cwd=PROJECT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "OPSSAT_REPO": str(repo_root)})
    assert done.returncode == 2 and "epochs" not in done.stderr
    assert "create_dirs.sh nosuch" in done.stderr
