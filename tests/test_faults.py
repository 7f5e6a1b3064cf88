"""Issue 19, faults: a split that cannot replace its targets, crossval that cannot
write, full disks (a small tmpfs), read-only files, a torn confidences.csv, staging
left by killed runs, out-of-range values and messages that blame the wrong cause.
Each failing command gives one ``error:`` line, no traceback, and leaves data/all
and the folder around the model exactly as they were (sha256 listings)."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT, one_error_line, run_script, trainer_cli_error
from page_fixture import LABELS, make_model
from test_hostile import (
    give_to_user,
    run_unprivileged,
    sandbox,  # noqa: F401  (a fixture, asked for by name)
)
from test_security import listing

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import relabel, split
from opssat.data.relabel import JOURNAL_COLUMNS
from opssat.judge import confidences
from opssat.judge.infer import record_image
from opssat.train import crossval


@pytest.fixture
def model(tmp_path: Path) -> ModelPaths:
    return make_model(tmp_path / "repo", per_label=4)


def _split(model: ModelPaths) -> None:
    proc = run_script("split_data.py", "m", "25", "--force", repo=model.root)
    assert proc.returncode == 0, proc.stderr


# --- split: check every target before replacing any ---------------------------------------


@pytest.mark.parametrize("blocker", ["test symlink", "training file", "split.csv folder"])
def test_split_checks_every_target_before_replacing_any(model: ModelPaths, tmp_path: Path,
                                                        blocker: str) -> None:
    _split(model)
    if blocker == "test symlink":
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(model.test_dir, elsewhere)
        shutil.rmtree(model.test_dir)
        model.test_dir.symlink_to(elsewhere)
    elif blocker == "training file":
        shutil.rmtree(model.training_dir)
        model.training_dir.write_text("not a folder")
    else:
        model.split_csv.unlink()
        model.split_csv.mkdir()
    before = listing(tmp_path)
    error = one_error_line(run_script("split_data.py", "m", "40", "--force", "--seed", "7",
                                      repo=model.root))
    assert "move it away" in error and "nothing was changed" in error, error
    assert listing(tmp_path) == before


def test_split_never_leaves_an_image_on_both_sides(model: ModelPaths) -> None:
    _split(model)
    rows = list(csv.DictReader(model.split_csv.open()))
    sides = {(r["label"], Path(r["path"]).name): r["side"] for r in rows}
    for side, folder in (("training", model.training_dir), ("test", model.test_dir)):
        for path in folder.rglob("*.png"):
            assert sides[(path.parent.name, path.name)] == side


# --- crossval: writability before the first fold ----------------------------------------


@pytest.mark.slow
def test_crossval_checks_its_outputs_before_the_first_fold(model: ModelPaths,
                                                           tmp_path: Path) -> None:
    model.crossval_dir.write_text("a file where the crossval/ folder goes")
    before = listing(tmp_path)
    proc = run_script("crossval.py", "m", "--folds", "2", "--group_seconds", "0",
                      repo=model.root)
    error = one_error_line(proc)
    assert "crossval" in error and "not a folder" in error, error
    assert "fold 1" not in proc.stdout
    assert listing(tmp_path) == before


def test_crossval_says_when_no_fold_count_can_work() -> None:
    items = [(Path(f"img_msec_{1_600_000_000_000 + 1000 * k}_{k}.png"), "bad")
             for k in range(3)]
    items += [(Path(f"img_msec_{1_700_000_000_000 + 10**8 * k}_{k}.png"), "earth")
              for k in range(3)]
    with pytest.raises(UserError, match="no fold count can hold it out") as raised:
        crossval.plan_folds(items, folds=2)
    assert "--folds" not in str(raised.value)


# --- full disks ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs (a disk that can be filled), mounted for the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    with (disk / f"filler-{uuid.uuid4().hex}").open("wb", buffering=0) as handle:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC
    probe = disk / "probe"
    with pytest.raises(OSError), probe.open("wb", buffering=0) as handle:
        handle.write(b"x" * 8192)
    probe.unlink(missing_ok=True)


def _full_disk_model(disk: Path, tflite: Path | None = None) -> ModelPaths:
    model = make_model(disk / "repo", per_label=3)
    if tflite is not None:
        shutil.copy(tflite, model.tflite_model)
    return model


def _no_space(proc: subprocess.CompletedProcess) -> str:
    error = one_error_line(proc)
    assert "no space left" in error, error
    return error


def test_full_disk_split(small_disk: Path) -> None:
    model = _full_disk_model(small_disk)
    shutil.rmtree(model.test_dir)
    fill(small_disk)
    before = listing(small_disk)
    _no_space(run_script("split_data.py", "m", "25", repo=model.root))
    assert listing(small_disk) == before  # no staging left, no half split


@pytest.mark.slow
def test_full_disk_calc_perf(small_disk: Path) -> None:
    model = _full_disk_model(small_disk)
    fill(small_disk)
    before = listing(small_disk)
    _no_space(run_script("calc_perf.py", "m", repo=model.root, timeout=300))
    assert listing(small_disk) == before  # no plot, no page, no staging


def test_full_disk_relabel_and_undo(small_disk: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = _full_disk_model(small_disk)
    first = sorted((model.all_dir / "bad").iterdir())[0].name
    reviewed = tmp_path / "reviewed.csv"
    reviewed.write_text(f"filename,new_label\nbad/{first},earth\n")
    fill(small_disk)
    before = listing(small_disk)
    _no_space(run_script("relabel.py", "m", reviewed, repo=model.root))
    assert listing(small_disk) == before  # before the first journal write: no empty journal
    # The undo's first journal write on a full disk. (tmpfs has room left in the journal's
    # last page, so the disk is made full for that one write.)
    for filler in small_disk.glob("filler-*"):
        filler.unlink()
    assert run_script("relabel.py", "m", reviewed, repo=model.root).returncode == 0
    before = listing(small_disk)
    real = atomic.append_whole

    def full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])  # half a row reaches the disk, then it is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(model.relabel_log))

    monkeypatch.setattr(atomic, "append_whole", full)
    with pytest.raises(OSError) as raised:
        relabel.undo(model, *relabel.plan_undo(model))
    assert "no space left" in atomic.write_failure(raised.value)
    monkeypatch.undo()
    after = listing(small_disk)
    assert {k: v for k, v in after.items() if not k.endswith("relabel_log.csv")} == \
        {k: v for k, v in before.items() if not k.endswith("relabel_log.csv")}
    relabel.read_journal(model.relabel_log)  # still a whole journal


def test_full_disk_batch_labelling(small_disk: Path, make_tflite) -> None:
    model = _full_disk_model(small_disk, make_tflite(labels=tuple(LABELS)))
    fill(small_disk)
    before = listing(small_disk)
    _no_space(run_script("batch_label_images.py", "m", "--no_progress", repo=model.root))
    assert listing(small_disk) == before


# --- read-only files -----------------------------------------------------------------------


def test_read_only_relabel_journal(request: pytest.FixtureRequest) -> None:
    base = request.getfixturevalue("sandbox")
    model = make_model(base / "repo", per_label=3)
    first = sorted((model.all_dir / "bad").iterdir())[0].name
    reviewed = base / "reviewed.csv"
    reviewed.write_text(f"filename,new_label\nbad/{first},earth\n")
    model.relabel_log.write_text(",".join(JOURNAL_COLUMNS) + "\n")
    give_to_user(base)
    model.relabel_log.chmod(0o444)
    before = listing(base)
    error = one_error_line(run_unprivileged(base, sys.executable, "relabel.py", "m",
                                            reviewed))
    assert "read-only" in error and str(model.relabel_log) in error, error
    assert listing(base) == before


def test_read_only_confidences_csv_is_refused_before_the_copy(request: pytest.FixtureRequest,
                                                              make_tflite) -> None:
    base = request.getfixturevalue("sandbox")
    model = make_model(base / "repo", per_label=3)
    shutil.copy(make_tflite(labels=tuple(LABELS)), model.tflite_model)
    image = sorted((model.test_dir / "bad").iterdir())[0]
    give_to_user(base)
    model.confidences_csv().chmod(0o444)
    before = listing(base)
    error = one_error_line(run_unprivileged(base, sys.executable, "label_image.py", "-i", image,
                                            "-n", "m", "-e", "bad"))
    assert "read-only" in error and str(model.confidences_csv()) in error, error
    assert listing(base) == before


# --- appends to confidences.csv ------------------------------------------------------------


def _record(model: ModelPaths) -> None:
    """Record an image the CSV does not hold yet (a repeated one counts once)."""
    image = sorted((model.test_dir / "bad").iterdir())[0]
    fresh = shutil.copy(image, model.model_dir.parent / f"fresh_{image.name}")
    record_image(model, Path(fresh), "bad", np.array([0.9, 0.05, 0.05]), 1.0, LABELS, 0.7)


def test_a_torn_last_line_is_dropped_not_glued(model: ModelPaths,
                                               capsys: pytest.CaptureFixture) -> None:
    csv_path = model.confidences_csv()
    rows = len(confidences.load_confidences(csv_path).filenames)
    with csv_path.open("a") as handle:
        handle.write("edge/img_cut_off.png,2.5,ed")
    _record(model)
    loaded = confidences.load_confidences(csv_path)  # refuses a 13-field row
    assert len(loaded.filenames) == rows + 1 and "edge/img_cut_off.png" not in loaded.filenames
    assert "cut-off last line" in capsys.readouterr().err


def test_a_whole_last_row_without_newline_is_kept(model: ModelPaths) -> None:
    csv_path = model.confidences_csv()
    csv_path.write_text(csv_path.read_text().rstrip("\n"))
    rows = len(confidences.load_confidences(csv_path).filenames)
    _record(model)
    assert len(confidences.load_confidences(csv_path).filenames) == rows + 1


# --- staging left by killed runs -------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_staging_of_killed_runs_is_removed_by_the_next_run(model: ModelPaths) -> None:
    dead = _dead_pid()
    folder = model.classification_dir
    stale = [folder / f".confidences_onboard.csv.{dead}.abc123.tmp",
             folder / ".confidences_onboard.csv.k2j4h5ab.tmp",  # before pids were in the name
             folder / f".classified_onboard.{dead}.xyz.tmp",
             folder / f".report_files.{dead}.q1.tmp",
             folder / ".report.html.staging",
             model.data_dir / f".split-{dead}.w8.tmp",
             model.data_dir / ".split-a1b2c3d4"]  # before pids were in the name
    for path in stale:
        if path.name.startswith((".confidences", ".report.html")):
            path.write_text("left by a killed run")
        else:
            (path / "inside").mkdir(parents=True)
    alive = folder / f".confidences_onboard.csv.{os.getpid()}.live.tmp"
    alive.write_text("a live run's")
    with atomic.staged_file(model.confidences_csv("onboard")) as staged:
        staged.write_text(model.confidences_csv("onboard").read_text())
    with atomic.staged_dir(model.classified_dir("onboard")):
        pass
    outputs = atomic.OutputSet()
    outputs.stage(model.report_html)
    outputs.stage(folder / "report_files")
    outputs.discard()
    split.apply_split(split.plan_split(split.scan(model).readable, 25), model)
    assert [p for p in stale if p.exists()] == []
    assert alive.exists()


# --- bounds and messages ---------------------------------------------------------------


@pytest.mark.parametrize("script", ["batch_label_images.py", "label_image.py"])
def test_num_threads_is_bounded_before_any_work(model: ModelPaths, tmp_path: Path,
                                                script: str) -> None:
    model.tflite_model.write_bytes(b"not loaded: the bound is checked first")
    image = sorted((model.test_dir / "bad").iterdir())[0]
    args = ["m"] if script.startswith("batch") else ["-i", image, "-n", "m", "-e", "bad"]
    before = listing(tmp_path)
    error = one_error_line(run_script(script, *args, "--num_threads", "100000",
                                      repo=model.root))
    assert f"from 1 to {4 * os.cpu_count()}" in error, error
    assert listing(tmp_path) == before


def test_a_long_model_name_is_refused_by_its_length(tmp_path: Path) -> None:
    error = one_error_line(run_script("split_data.py", "a" * 300, "20", repo=tmp_path))
    assert "at most 100 characters" in error and "permission" not in error


def test_an_empty_opssat_repo_means_the_project_repo(tmp_path: Path) -> None:
    proc = run_script(PROJECT / "split_data.py", "no_such_model_xyz", "20",
                      env={"OPSSAT_REPO": ""},
                      cwd=tmp_path)
    error = one_error_line(proc)
    assert str(PROJECT / "repo" / "no_such_model_xyz") in error, error


def test_cross_device_quarantine_names_the_cause(small_disk: Path, tmp_path: Path) -> None:
    model = make_model(tmp_path / "repo", per_label=3)
    (model.all_dir / "bad" / "broken.png").write_bytes(b"not an image")
    model.quarantine_dir.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(model.quarantine_dir)], check=True)
    try:
        before = listing(model.all_dir)
        error = one_error_line(run_script("split_data.py", "m", "25", "--force",
                                          "--quarantine", repo=model.root))
        assert "another device" in error and "permission" not in error, error
        assert listing(model.all_dir) == before
    finally:
        subprocess.run(["umount", "-l", str(model.quarantine_dir)], check=False)


@pytest.mark.slow
def test_train_sh_takes_a_relative_opssat_repo_from_where_it_runs(tmp_path: Path) -> None:
    (tmp_path / "myrepo" / "m").mkdir(parents=True)
    proc = run_script(PROJECT / "train.sh", "m", "1", env={"OPSSAT_REPO": "myrepo"},
                      cwd=tmp_path, timeout=300)
    error = one_error_line(proc)
    assert "run ./create_dirs.sh" not in error, error
    assert str(tmp_path / "myrepo" / "m") in error, error


def test_a_failed_append_leaves_no_image_copy(model: ModelPaths, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def full(csv_path: Path, *_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(csv_path))

    monkeypatch.setattr(confidences, "append_row", full)
    before = listing(tmp_path)
    with pytest.raises(OSError):
        _record(model)
    assert listing(tmp_path) == before


def test_full_disk_single_image_labelling(small_disk: Path, make_tflite) -> None:
    model = _full_disk_model(small_disk, make_tflite(labels=tuple(LABELS)))
    image = sorted((model.test_dir / "bad").iterdir())[0]
    fill(small_disk)
    before = listing(small_disk)
    _no_space(run_script("label_image.py", "-i", image, "-n", "m", "-e", "bad",
                         repo=model.root))
    assert listing(small_disk) == before


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan"])
def test_assert_accuracy_at_least_is_bounded_before_training(tmp_path: Path, value: str) -> None:
    error = trainer_cli_error("--image_dir", str(tmp_path), "--assert_accuracy_at_least", value)
    assert "--assert_accuracy_at_least must be in [0, 1]" in error, error
