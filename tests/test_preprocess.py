"""Preprocessing declared once: one option group for the trainer, crossval and the
labelling scripts (old names still work), one place that builds the value, and a record
of it beside every confidences CSV and in train_record.json, so report.html draws the
input the model really saw."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script, write_image
from PIL import Image

from opssat.core import flags
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import images
from opssat.data.preprocess import Preprocessing, PreprocessOptions
from opssat.judge import confidences
from opssat.train import make_image_classifier, recipes
from opssat.train.options import GROUPS, TrainOptions

LABELS = ["red", "green", "blue"]
COLOURS = {"red": (220, 25, 25), "green": (25, 220, 25), "blue": (25, 25, 220)}


def test_the_trainer_takes_the_one_group_under_its_new_and_old_names():
    assert PreprocessOptions in GROUPS
    for spelling in ("--preprocess", "--train_preprocess"):
        parsed = make_image_classifier.options_from_args(
            ["--image_dir", "d", spelling, "onboard", "--onboard_channels", "3"])
        assert parsed.preprocessing == PreprocessOptions("onboard", 3)
    assert TrainOptions.from_flags(train_preprocess="onboard").preprocessing.preprocess == \
        "onboard"
    assert TrainOptions.from_flags(preprocess="onboard").flat()["preprocess"] == "onboard"


def test_recipes_use_the_new_name():
    for recipe in recipes.RECIPES.values():
        assert "--train_preprocess" not in recipe.flags, recipe.name


def test_the_value_is_built_from_the_options_with_what_the_model_decides():
    made = PreprocessOptions("onboard", 3).preprocessing(size=(24, 24), std=127.5)
    assert made == Preprocessing("onboard", 3, (24, 24), 0.0, 127.5)
    assert made.name == "onboard, 3 channels" and Preprocessing("onboard").name == "onboard"
    assert Preprocessing.from_dict(json.loads(json.dumps(made.to_dict()))) == made


def test_every_option_of_the_group_reaches_the_value():
    # A new setting needs its field in both: this fails until it is there.
    value_fields = {f.name for f in dataclasses.fields(Preprocessing)}
    for flag in flags.flags_of(PreprocessOptions):
        assert (flag.name if flag.name != "preprocess" else "mode") in value_fields


@pytest.mark.parametrize(("values", "message"), [
    ({"preprocess": "sideways"}, "unknown --preprocess 'sideways'"),
    ({"onboard_channels": 2}, "--onboard_channels must be 1 or 3, not 2"),
])
def test_bad_values_are_refused_naming_the_flag(values, message):
    with pytest.raises(UserError, match=message):
        TrainOptions.from_flags(image_dir="d", **values).check_settings()


def test_a_bad_sidecar_is_one_error(tmp_path: Path):
    csv_path = tmp_path / "confidences.csv"
    assert confidences.read_preprocessing(csv_path) is None
    confidences.preprocessing_file(csv_path).write_text("[1, 2]")
    with pytest.raises(UserError, match="not a preprocessing record"):
        confidences.read_preprocessing(csv_path)


@pytest.fixture
def colour_model(repo_root: Path, make_tflite) -> ModelPaths:
    """repo/m/ with the tiny colour model and two saturated images per label."""
    paths = ModelPaths("m", repo_root)
    paths.model_dir.mkdir()
    paths.tflite_model.write_bytes(make_tflite(size=24).read_bytes())
    paths.labels_file.write_text("".join(f"{x}\n" for x in LABELS))
    for label, colour in COLOURS.items():
        for seed in range(2):
            write_image(paths.test_dir / label / f"img_{label}_{seed}.jpg", colour, seed=seed)
    return paths


def _model_inputs(paths: ModelPaths) -> list[Path]:
    return sorted((paths.classification_dir / "report_files").glob("*_onboard*.png"))


def test_report_draws_three_channel_inputs_of_a_three_channel_run(colour_model: ModelPaths):
    done = run_script("batch_label_images.py", "m", "--preprocess", "onboard",
                      "--onboard_channels", "3", repo=colour_model.root)
    assert done.returncode == 0, done.stderr
    csv_path = colour_model.confidences_csv("onboard")
    assert confidences.read_preprocessing(csv_path) == Preprocessing("onboard", 3, (24, 24))
    done = run_script("calc_perf.py", "m", repo=colour_model.root)
    assert done.returncode == 0, done.stderr
    inputs = _model_inputs(colour_model)
    assert inputs and all(p.name.endswith("_onboard3.png") for p in inputs)
    for path in inputs:
        with Image.open(path) as shown:
            assert shown.mode == "RGB" and shown.size == (24, 24)
            pixels = np.asarray(shown)
        assert not np.array_equal(pixels[..., 0], pixels[..., 1])  # colour, not gray
    page = colour_model.report_html.read_text(encoding="utf-8")
    assert "model input (onboard, 3 channels)" in page


def test_label_image_records_what_its_model_saw(colour_model: ModelPaths):
    image = colour_model.test_dir / "red" / "img_red_0.jpg"
    done = run_script("label_image.py", "-i", image, "-n", "m", "-e", "red", "--preprocess",
                      "onboard", "--onboard_channels", "3", repo=colour_model.root)
    assert done.returncode == 0, done.stderr
    assert confidences.read_preprocessing(colour_model.confidences_csv("onboard")) == \
        Preprocessing("onboard", 3, (24, 24))


def test_images_keeps_the_names_callers_know():
    assert images.Preprocessing is Preprocessing and images.GROUND == Preprocessing()
