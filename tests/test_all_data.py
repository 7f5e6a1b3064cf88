"""--all_data: the model to uplink trains on all of data/all into repo/<model>/all_data/,
the test split's model stays, and train_record.json names the images that trained it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import trainer_cli_error, write_image

from opssat.core.paths import ModelPaths
from opssat.data import sample
from opssat.train import make_image_classifier

COLOURS = {"bad": (230, 230, 230), "earth": (30, 160, 60), "edge": (20, 20, 200)}


def _model(root: Path) -> ModelPaths:
    paths = ModelPaths("m", root)
    for n, (label, colour) in enumerate(COLOURS.items()):
        for i in range(3):
            name = sample.file_name(1_600_000_000_000 + (n * 3 + i) * 3_600_000)
            write_image(paths.all_dir / label / name, colour, size=(40, 36), seed=i)
            if i < 2:
                write_image(paths.training_dir / label / name, colour, size=(40, 36), seed=i)
    return paths


def test_all_data_reads_data_all_and_writes_beside_the_split_model(repo_root: Path) -> None:
    paths = _model(repo_root)
    options = make_image_classifier.options_from_args(["--model", "m", "--all_data"])
    assert options.paths.image_dir == str(paths.all_dir)
    assert options.paths.tflite_output_file == str(paths.all_data.tflite_model)
    assert options.paths.record_file == str(paths.model_dir / "all_data" / "train_record.json")
    assert options.paths.cache_dir == str(paths.all_data.cache_dir)
    split = make_image_classifier.options_from_args(["--model", "m"])
    assert split.paths.image_dir == str(paths.training_dir)
    assert split.paths.tflite_output_file == str(paths.tflite_model)
    assert "--all_data needs --model" in trainer_cli_error("--all_data", "--image_dir", "x")


@pytest.mark.slow
def test_the_record_names_every_image_that_trained_it(repo_root: Path, tiny_hub: Path) -> None:
    paths = _model(repo_root)
    assert make_image_classifier.main([
        "--model", "m", "--all_data", "--tfhub_module", str(tiny_hub), "--image_size", "32",
        "--train_epochs", "1", "--validation_split", "0", "--nodo_fine_tuning"]) == 0
    record = json.loads(paths.all_data.train_record.read_text())
    assert record["image_dir"] == str(paths.all_dir)
    assert record["files"]["training"] == sorted(
        f"{p.parent.name}/{p.name}" for p in paths.all_dir.rglob("*.jpeg"))
    assert record["files"]["validation"] == []
    assert paths.all_data.tflite_model.is_file() and not paths.tflite_model.exists()
