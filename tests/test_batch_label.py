"""batch_label_images.py end to end: CSV rows match the images, the threshold
fills unclassified/, re-runs replace outputs whole, bad input is one line and
data/test is never changed."""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

import pytest
from helpers import run_script, write_image

from opssat.core.paths import ModelPaths

LABELS = ["red", "green", "blue"]
COLOURS = {"red": (220, 25, 25), "green": (25, 220, 25), "blue": (25, 25, 220)}
GREY = (120, 110, 100)  # the tiny model's top-1 stays near 0.5 on it


def run_batch(repo_root: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return run_script("batch_label_images.py", *args, repo=repo_root, timeout=120)


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def model(repo_root: Path, make_tflite) -> ModelPaths:
    """repo/m/ with the tiny colour model, two clear images per label and one grey
    (low-confidence) image in red/."""
    paths = ModelPaths("m", repo_root)
    paths.model_dir.mkdir()
    tflite = make_tflite()
    paths.tflite_model.write_bytes(tflite.read_bytes())
    paths.labels_file.write_text("".join(f"{x}\n" for x in LABELS))
    for label, colour in COLOURS.items():
        for seed in range(2):
            write_image(paths.test_dir / label / f"img_{label}_{seed}.jpg", colour, seed=seed)
    write_image(paths.test_dir / "red" / "grey.png", GREY)
    return paths


def test_csv_columns_and_rows_match_images(model: ModelPaths):
    before = tree_hash(model.test_dir)
    proc = run_batch(model.root, "m")
    assert proc.returncode == 0, proc.stderr
    header, rows = read_csv(model.confidences_csv())
    assert header == ["filename", "time_ms", "predicted_label", "expected_label", *LABELS]
    assert sorted(r["filename"] for r in rows) == files_under(model.test_dir)
    for row in rows:
        assert row["expected_label"] == row["filename"].split("/")[0]
        assert float(row["time_ms"]) >= 0
        probs = [float(row[label]) for label in LABELS]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        if "grey" in row["filename"]:
            assert row["predicted_label"] == "n/a"
        else:
            assert row["predicted_label"] == row["expected_label"]
            assert max(probs) == float(row[row["expected_label"]])
    assert "images:       7" in proc.stdout
    assert "classified:   6" in proc.stdout
    assert "unclassified: 1" in proc.stdout
    assert str(model.confidences_csv()) in proc.stdout
    assert tree_hash(model.test_dir) == before


def test_threshold_sends_low_confidence_to_unclassified(model: ModelPaths):
    assert run_batch(model.root, "m").returncode == 0
    classified, unclassified = model.classified_dir(), model.unclassified_dir()
    assert files_under(unclassified) == ["grey.png"]
    for label in LABELS:
        assert files_under(classified / label) == [f"img_{label}_0.jpg", f"img_{label}_1.jpg"]
        for copy in (classified / label).iterdir():
            assert copy.read_bytes() == (model.test_dir / label / copy.name).read_bytes()

    assert run_batch(model.root, "m", "--threshold", "0").returncode == 0
    assert files_under(unclassified) == []
    assert "grey.png" in {p.name for p in classified.rglob("*")}
    _, rows = read_csv(model.confidences_csv())
    assert "n/a" not in {r["predicted_label"] for r in rows}

    assert run_batch(model.root, "m", "--threshold", "1").returncode == 0
    assert len(files_under(unclassified)) == 7
    assert files_under(classified) == []


def test_rerun_is_idempotent_and_drops_stale_outputs(model: ModelPaths):
    assert run_batch(model.root, "m").returncode == 0
    _, first = read_csv(model.confidences_csv())
    copies = files_under(model.classification_dir)
    stale = [model.classified_dir() / "red" / "stale.jpg", model.unclassified_dir() / "old.jpg"]
    for path in stale:
        path.write_bytes(b"from an earlier run")
    assert run_batch(model.root, "m").returncode == 0
    _, second = read_csv(model.confidences_csv())

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "time_ms"} for r in rows]

    assert strip(second) == strip(first)
    assert files_under(model.classification_dir) == copies
    assert not any(p.exists() for p in stale)
    leftovers = [p.name for p in model.classification_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_unreadable_images_are_listed_not_fatal(model: ModelPaths):
    (model.test_dir / "green" / "broken.jpg").write_bytes(b"not a jpeg at all")
    whole = write_image(model.root / "big.jpg", COLOURS["blue"], size=(300, 200)).read_bytes()
    (model.test_dir / "blue" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    write_image(model.test_dir / "loose.jpg", COLOURS["red"])
    proc = run_batch(model.root, "m")
    assert proc.returncode == 0, proc.stderr
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert "unreadable:   1" in proc.stdout
    _, rows = read_csv(model.confidences_csv())
    names = {r["filename"] for r in rows}
    assert "green/broken.jpg" not in names
    assert "loose.jpg" in proc.stderr and "ignored" in proc.stderr
    assert not any("loose" in name for name in names)
    assert "blue/cut.jpg" in names  # truncated JPEGs load, as on OPS-SAT


def test_onboard_mode_and_model_variant(model: ModelPaths, make_tflite):
    variant = make_tflite(quantization="dynamic", name="dyn")
    proc = run_batch(model.root, "m", "--preprocess", "onboard", "--onboard_channels", "3",
                     "--model_file", variant, "--num_threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert model.confidences_csv("onboard").is_file()
    assert not model.confidences_csv().exists()
    assert model.classified_dir("onboard").is_dir()
    _, rows = read_csv(model.confidences_csv("onboard"))
    clear = [r for r in rows if "grey" not in r["filename"]]
    assert all(r["predicted_label"] == r["expected_label"] for r in clear)


def test_failed_run_keeps_previous_outputs(model: ModelPaths):
    assert run_batch(model.root, "m").returncode == 0
    before = tree_hash(model.classification_dir)
    for path in model.test_dir.rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    test_before = tree_hash(model.test_dir)
    proc = run_batch(model.root, "m")
    assert proc.returncode != 0
    assert "error: none of the 7 images" in proc.stderr
    assert tree_hash(model.classification_dir) == before
    assert tree_hash(model.test_dir) == test_before


@pytest.mark.parametrize("case", [
    "missing_model", "missing_labels", "label_count", "not_tflite", "empty_test",
    "missing_test", "unknown_folder", "missing_model_dir", "bad_threshold", "bad_flag",
])
def test_bad_input_is_one_line(model: ModelPaths, case: str):
    args = ["m"]
    if case == "missing_model":
        model.tflite_model.unlink()
    elif case == "missing_labels":
        model.labels_file.unlink()
    elif case == "label_count":
        model.labels_file.write_text("red\ngreen\nblue\nyellow\n")
    elif case == "not_tflite":
        model.tflite_model.write_text("not a model")
    elif case == "empty_test":
        for path in model.test_dir.rglob("*.*"):
            path.unlink()
    elif case == "missing_test":
        for path in sorted(model.test_dir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        model.test_dir.rmdir()
    elif case == "unknown_folder":
        write_image(model.test_dir / "purple" / "p.jpg", (200, 0, 200))
    elif case == "missing_model_dir":
        args = ["nosuchmodel"]
    elif case == "bad_threshold":
        args += ["--threshold", "1.5"]
    elif case == "bad_flag":
        args += ["--preprocess", "sideways"]
    test_before = tree_hash(model.test_dir) if model.test_dir.exists() else {}
    proc = run_batch(model.root, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    expected = {
        "missing_model": "not found", "missing_labels": "not found", "label_count": "4 labels",
        "not_tflite": "not a TFLite model", "empty_test": "no images",
        "missing_test": "split_data.py", "unknown_folder": "purple",
        "missing_model_dir": "create_dirs", "bad_threshold": "--threshold",
        "bad_flag": "sideways",
    }[case]
    assert expected in lines[0]
    assert not model.confidences_csv().exists()
    assert (tree_hash(model.test_dir) if model.test_dir.exists() else {}) == test_before


def test_same_file_name_in_two_label_folders_keeps_both_copies(model: ModelPaths):
    write_image(model.test_dir / "red" / "same.jpg", COLOURS["red"])
    write_image(model.test_dir / "blue" / "same.jpg", COLOURS["red"], seed=3)
    assert run_batch(model.root, "m").returncode == 0
    red_copies = files_under(model.classified_dir() / "red")
    assert "red_same.jpg" in red_copies and "blue_same.jpg" in red_copies
    _, rows = read_csv(model.confidences_csv())
    assert {"red/same.jpg", "blue/same.jpg"} <= {r["filename"] for r in rows}
