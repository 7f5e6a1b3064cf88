"""train_record.json: one typed record, written and read by opssat.train.record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opssat.core.errors import UserError
from opssat.train.options import PathOptions
from opssat.train.record import TrainRecord, read_record, record_path, sha256_tree, versions


def a_record() -> TrainRecord:
    return TrainRecord(
        options={"train_epochs": 2}, backbone={"name": "tiny"}, labels=["a", "b"],
        class_counts={"all": {"a": 3, "b": 2}}, class_weights={"a": 1.0, "b": 1.5},
        training_files_sha256="0" * 64, skipped_files=[], stages=[{"name": "head"}],
        history={"loss": [0.9, 0.5]}, epochs_run=2, best_epoch=2,
        best_epoch_metrics={"loss": 0.5}, validation_accuracy=None,
        tflite_validation_accuracy={"none": None}, feature_cache={"used": False},
        versions=versions(), fit_time_s=1.5, wall_time_s=3.0, finished="2026-01-01T00:00:00",
        outputs={"m.tflite": "f" * 64})


def test_written_record_reads_back_the_same(tmp_path: Path):
    path = tmp_path / "train_record.json"
    path.write_text(a_record().to_json())
    assert read_record(path) == a_record()
    keys = list(json.loads(path.read_text()))
    assert keys[0] == "options" and keys[-1] == "outputs" and "fit_time_s" in keys


def test_unknown_keys_are_ignored_and_a_broken_record_is_one_error(tmp_path: Path):
    path = tmp_path / "train_record.json"
    path.write_text(json.dumps({**json.loads(a_record().to_json()), "later": 1}))
    assert read_record(path) == a_record()
    path.write_text('{"options": {}}')
    with pytest.raises(UserError, match="not a readable training record"):
        read_record(path)
    with pytest.raises(UserError, match="not a readable training record"):
        read_record(tmp_path / "missing.json")


def test_record_goes_beside_the_first_output_unless_named():
    assert record_path(PathOptions(tflite_output_file="out/m.tflite")) == Path(
        "out/train_record.json")
    assert record_path(PathOptions(saved_model_dir="s/model")) == Path("s/train_record.json")
    assert record_path(PathOptions(tflite_output_file="out/m.tflite",
                                   record_file="r.json")) == Path("r.json")


def test_tree_hash_covers_names_and_contents(tmp_path: Path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a").write_bytes(b"1")
    first = sha256_tree(folder)
    (folder / "sub" / "a").rename(folder / "sub" / "b")
    assert sha256_tree(folder) != first
    assert sha256_tree(folder / "sub" / "b") != sha256_tree(folder)
    assert versions()["numpy"] != "not installed"
