"""Defects a hostile new user found: read-only model folders, --quarantine on a
read-only data/all, file names that are not UTF-8, odd CSVs for calc_perf, a zero
--input_std, Ctrl-C after training, and names with characters the rules refuse.

Read-only folders do not stop root, so when the tests run as root the scripts run
as ``nobody`` (setpriv) in a sandbox that user owns.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROJECT, write_image

from opssat.core import cli
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.judge.infer import label_test_set
from opssat.train import dataset, make_image_classifier, trainer
from opssat.uplink import package

LABELS = ["red", "green", "blue"]
COLOURS = {"red": (220, 25, 25), "green": (25, 220, 25), "blue": (25, 25, 220)}
NOBODY = 65534
BAD_NAME = os.fsdecode(b"img_\xff\xfe.jpg")  # not UTF-8: Python keeps the bytes as surrogates
SHOWN = "img_\\xff\\xfe.jpg"


# --- a sandbox an unprivileged user can work in ----------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A folder outside pytest's root-only tmp tree, with home and caches for the user."""
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot drop privileges")
    if os.geteuid() == 0 and not _nobody_can_run_python():
        pytest.skip(f"user nobody cannot run {sys.executable} in {PROJECT} "
                    "(a parent folder is closed to other users)")
    base = Path(tempfile.mkdtemp(prefix="opssat-hostile-"))
    base.chmod(0o755)
    for sub in ("home", "cache", "repo"):
        (base / sub).mkdir()
    yield base
    for path in [base, *base.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(base)


def _nobody_can_run_python() -> bool:
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups", sys.executable, "-c", "import opssat"],
                           cwd=PROJECT, capture_output=True, timeout=60)
    return probe.returncode == 0


def run_unprivileged(base: Path, *cmd: str | Path, timeout: int = 120
                     ) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the project folder as a user that read-only folders stop."""
    env = {**os.environ, "OPSSAT_REPO": str(base / "repo"), "HOME": str(base / "home"),
           "OPSSAT_CACHE_DIR": str(base / "cache"), "MPLCONFIGDIR": str(base / "home")}
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run([*prefix, *map(str, cmd)], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def give_to_user(base: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(base)], check=True)


def read_only(*folders: Path, recursive: bool = False) -> None:
    for folder in folders:
        for path in [folder, *(folder.rglob("*") if recursive else ())]:
            mode = path.stat().st_mode
            path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def model(sandbox: Path, make_tflite) -> ModelPaths:
    """repo/m: the tiny colour model, images in data/all and data/test, an evaluation."""
    paths = ModelPaths("m", sandbox / "repo")
    paths.model_dir.mkdir()
    paths.tflite_model.write_bytes(make_tflite().read_bytes())
    paths.labels_file.write_text("".join(f"{x}\n" for x in LABELS))
    for label, colour in COLOURS.items():
        for seed in range(3):
            write_image(paths.all_dir / label / f"img_{label}_{seed}.jpg", colour, seed=seed)
        write_image(paths.test_dir / label / f"img_{label}.jpg", colour)
    paths.training_dir.mkdir()
    label_test_set(paths, progress=False)
    give_to_user(sandbox)
    return paths


# --- 1. a read-only model folder ---------------------------------------------------------

SCRIPTS = {
    "split_data": ["split_data.py", "m", "20", "--force"],
    "make_sample_data": ["make_sample_data.py", "m", "--force", "--count", "10"],
    # train.sh's trainer, as train.sh runs it (bash cannot run the shared .venv's python
    # as nobody here, since it links into /root).
    "train": ["-m", "opssat.train.make_image_classifier", "--model", "m", "--train_epochs", "1"],
    "batch_label_images": ["batch_label_images.py", "m", "--no_progress"],
    "calc_perf": ["calc_perf.py", "m"],
    "package_smartcam": ["package_smartcam.py", "m"],
    "label_image": ["label_image.py", "-i", "{image}", "-n", "m", "-e", "red"],
}


#: Scripts that load TensorFlow, scikit-learn or matplotlib: seconds per run.
HEAVY_SCRIPTS = {"train", "calc_perf", "package_smartcam"}


def script_params(names) -> list:
    """``names`` as test parameters, the heavy scripts marked slow."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in HEAVY_SCRIPTS else name
            for name in names]


def command(name: str, paths: ModelPaths) -> list[str]:
    args = [a.replace("{image}", str(paths.test_dir / "red" / "img_red.jpg"))
            for a in SCRIPTS[name]]
    return [sys.executable, *args]


@pytest.mark.parametrize("script", script_params(SCRIPTS))
def test_read_only_model_folder_is_one_line_and_nothing_changes(model: ModelPaths, script):
    before = snapshot(model.model_dir)
    read_only(model.model_dir, recursive=True)
    done = run_unprivileged(model.root.parent, *command(script, model))
    line = one_error_line(done)
    assert "cannot write" in line and "read-only" in line
    assert "Epoch" not in done.stdout + done.stderr
    assert snapshot(model.model_dir) == before


@pytest.mark.parametrize("script", script_params(["split_data", "train", "package_smartcam"]))
def test_read_only_top_is_refused_before_the_work(model: ModelPaths, script):
    """Only repo/<model>/ itself is read-only: its own outputs (split.csv, the trained
    model, smartcam/) cannot be written, so nothing else is done first."""
    before = snapshot(model.model_dir)
    read_only(model.model_dir)
    done = run_unprivileged(model.root.parent, *command(script, model))
    line = one_error_line(done)
    assert f"{model.model_dir} is read-only" in line
    assert "Epoch" not in done.stdout + done.stderr
    assert snapshot(model.model_dir) == before


def test_read_only_top_still_lets_labelling_write_its_folder(model: ModelPaths):
    read_only(model.model_dir)
    done = run_unprivileged(model.root.parent, *command("batch_label_images", model))
    assert done.returncode == 0, done.stderr


# --- 2. --quarantine on a read-only data/all ---------------------------------------------


def test_quarantine_on_read_only_data_all_moves_nothing(model: ModelPaths):
    junk = model.all_dir / "red" / "notes.jpeg"
    junk.write_text("not an image")
    give_to_user(model.root.parent)
    before = snapshot(model.data_dir)
    read_only(model.all_dir, recursive=True)
    done = run_unprivileged(model.root.parent, sys.executable, "split_data.py", "m", "20",
                            "--force", "--quarantine")
    line = one_error_line(done)
    assert "cannot write" in line and str(junk) in line
    assert snapshot(model.data_dir) == before
    assert not model.quarantine_dir.exists()


def test_quarantine_moves_by_rename(model: ModelPaths):
    junk = model.all_dir / "red" / "notes.jpeg"
    junk.write_text("not an image")
    give_to_user(model.root.parent)
    done = run_unprivileged(model.root.parent, sys.executable, "split_data.py", "m", "20",
                            "--force", "--quarantine")
    assert done.returncode == 0, done.stderr
    assert not junk.exists()
    assert (model.quarantine_dir / "red" / "notes.jpeg").read_text() == "not an image"


# --- 3. file names that are not UTF-8 -----------------------------------------------------


def test_split_skips_a_non_utf8_name_with_a_warning(model: ModelPaths):
    write_image(model.all_dir / "red" / BAD_NAME, COLOURS["red"])
    give_to_user(model.root.parent)
    done = run_unprivileged(model.root.parent, sys.executable, "split_data.py", "m", "20",
                            "--force")
    assert done.returncode == 0, done.stderr
    assert f"skipped {model.all_dir / 'red' / SHOWN}" in done.stderr
    with model.split_csv.open(encoding="utf-8") as handle:
        listed = [row["path"] for row in csv.DictReader(handle)]
    assert len(listed) == 9 and all(p.isascii() for p in listed)
    copied = [p.name for p in model.training_dir.rglob("*.jpg")] + [
        p.name for p in model.test_dir.rglob("*.jpg")]
    assert BAD_NAME not in copied and len(copied) == 9
    again = run_unprivileged(model.root.parent, sys.executable, "split_data.py", "m", "20",
                             "--force")
    assert again.returncode == 0, again.stderr


def test_batch_labelling_skips_a_non_utf8_name(model: ModelPaths):
    write_image(model.test_dir / "red" / BAD_NAME, COLOURS["red"])
    give_to_user(model.root.parent)
    done = run_unprivileged(model.root.parent, sys.executable, "batch_label_images.py", "m",
                            "--no_progress")
    assert done.returncode == 0, done.stderr
    assert SHOWN in done.stderr and "not valid UTF-8" in done.stderr
    with model.confidences_csv().open(encoding="utf-8") as handle:
        assert len(list(csv.reader(handle))) == 1 + 3


def test_training_file_list_and_fingerprint_skip_a_non_utf8_name(tmp_path: Path, capsys):
    for label, colour in COLOURS.items():
        write_image(tmp_path / label / f"{label}.png", colour)
    write_image(tmp_path / "red" / BAD_NAME, COLOURS["red"])
    files = dataset.list_labelled_files(tmp_path)
    assert sorted(p.name for p in files.paths) == ["blue.png", "green.png", "red.png"]
    assert len(files.fingerprint()) == 64
    assert SHOWN in capsys.readouterr().err


def test_label_image_refuses_to_record_a_non_utf8_name(model: ModelPaths):
    image = write_image(model.root.parent / BAD_NAME, COLOURS["red"])
    give_to_user(model.root.parent)
    before = snapshot(model.classification_dir)
    done = run_unprivileged(model.root.parent, sys.executable, "label_image.py", "-i", image,
                            "-n", "m", "-e", "red")
    assert SHOWN in one_error_line(done)
    assert snapshot(model.classification_dir) == before
    plain = run_unprivileged(model.root.parent, sys.executable, "label_image.py", "-i", image,
                             "-m", model.tflite_model, "-l", model.labels_file)
    assert plain.returncode == 0 and plain.stdout.startswith("red: ")


# --- 6. --input_std 0 or nan ---------------------------------------------------------------


@pytest.mark.parametrize(("flag", "value"), [("--input_std", "0"), ("--input_std", "nan"),
                                             ("--input_std", "inf"), ("--input_mean", "nan")])
def test_label_image_refuses_a_scaling_that_gives_nan(model: ModelPaths, flag, value):
    done = run_unprivileged(model.root.parent, sys.executable, "label_image.py", "-i",
                            model.test_dir / "red" / "img_red.jpg", "-m", model.tflite_model,
                            "-l", model.labels_file, flag, value)
    assert flag in one_error_line(done)
    assert done.stdout == ""


# --- 7. Ctrl-C after training committed its outputs ----------------------------------------


def test_interrupt_after_the_work_names_what_is_in_place():
    code = ("import os, signal, time\n"
            "from opssat.core import cli\n"
            "cli.on_interrupt('the new model is in place (repo/m/tflite_model.tflite)')\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 130
    assert done.stderr.strip() == ("interrupted: the new model is in place "
                                   "(repo/m/tflite_model.tflite)")


def test_trainer_says_which_model_is_in_place_once_training_is_done(monkeypatch, capsys):
    said = []
    options = make_image_classifier.options_from_args(
        ["--image_dir", "x", "--tflite_output_file", "out/model.tflite"])
    fake = type("Result", (), {"validation_accuracy": 0.9, "best_epoch": 1,
                               "outputs": [Path("out/model.tflite")]})()
    monkeypatch.setattr(make_image_classifier, "options_from_args", lambda argv: options)
    monkeypatch.setattr(trainer, "train", lambda opts: fake)
    monkeypatch.setattr(cli, "on_interrupt", said.append)
    assert make_image_classifier.main([]) == 0
    assert said and "out/model.tflite" in said[0] and "in place" in said[0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- 8. names ------------------------------------------------------------------------------


def test_default_package_name_refusal_mentions_the_flag():
    with pytest.raises(UserError, match="pass --name"):
        package.package_name(None, "modèle")
    with pytest.raises(UserError) as given:
        package.package_name("modèle", "m")
    assert "--name" not in str(given.value)
    assert package.package_name(None, "m_1") == "m_1"

