"""The trainer's options: one declaration per option gives the flags, their help,
defaults and checks; the command line keeps TF Hub's forms."""

from __future__ import annotations

import dataclasses

import pytest

from opssat.core import flags
from opssat.core.errors import UserError
from opssat.core.flags import Limits
from opssat.train import augment, crossval, make_image_classifier, options
from opssat.train.options import GROUPS, PathOptions, TrainOptions

ALL_FLAGS = [flag for group in GROUPS for flag in flags.flags_of(group)]


def parse(*argv: str) -> TrainOptions:
    return make_image_classifier.options_from_args(["--image_dir", "d", *argv])


def test_every_option_is_a_flag_with_help_and_its_default():
    # Without white space: --help wraps lines, even inside a URL.
    help_text = "".join(make_image_classifier.build_parser().format_help().split())
    assert len(ALL_FLAGS) == 52
    for flag in ALL_FLAGS:
        assert f"--{flag.name}" in help_text
        assert "".join(flag.help.split()) in help_text, flag.name
        if flag.shown_default is not None:
            assert f"default:{flag.shown_default}" in help_text, flag.name


def test_defaults_are_the_declared_ones():
    parsed = parse()
    assert parsed == TrainOptions.from_flags(image_dir="d")
    assert parsed.schedule.train_epochs == 5 and parsed.schedule.learning_rate == 0.005
    assert parsed.recipe.quantize == [] and parsed.runtime.use_tf_data_input is True


def test_orbit_augmentation_defaults_and_limits_come_from_augment():
    default = augment.OrbitAugmentation()
    assert TrainOptions().augmentation.orbit == default
    by_name = {flag.name: flag for flag in ALL_FLAGS}
    for name, (low, high) in augment.LIMITS.items():
        assert by_name[name].limits == Limits(low, high)
    assert by_name["augment_flips"].default is default.flips


@pytest.mark.parametrize(("argv", "expected"), [
    ([], False), (["--do_fine_tuning"], True), (["--do_fine_tuning=false"], False),
    (["--do_fine_tuning=true"], True), (["--do_fine_tuning", "0"], False),
    (["--nodo_fine_tuning"], False), (["--do_fine_tuning", "--nodo_fine_tuning"], False),
])
def test_absl_style_booleans(argv, expected):
    assert parse(*argv).schedule.do_fine_tuning is expected


def test_values_reach_their_group():
    parsed = parse("--quantize", "int8", "--quantize", "float16", "--image_size", "96",
                   "--optimizer", "adam", "--nouse_tf_data_input", "--brightness_delta", "0.5")
    assert parsed.recipe.quantize == ["int8", "float16"] and parsed.recipe.image_size == 96
    assert parsed.schedule.optimizer == "adam" and not parsed.runtime.use_tf_data_input
    assert parsed.augmentation.orbit.brightness_delta == 0.5
    assert parsed.flat()["brightness_delta"] == 0.5 and len(parsed.flat()) == 52


def test_model_flag_fills_every_path(repo_root):
    (repo_root / "m").mkdir()
    paths = make_image_classifier.options_from_args(["--model", "m"]).paths
    assert all(getattr(paths, f.name) for f in dataclasses.fields(PathOptions))
    assert paths.record_file.endswith("m/train_record.json")


@pytest.mark.parametrize(("values", "message"), [
    ({"learning_rate": float("nan")}, "--learning_rate must be a positive number, not nan"),
    ({"validation_split": 1.0}, "--validation_split must be in [0, 1), not 1.0"),
    ({"train_epochs": 0}, "--train_epochs must be at least 1"),
    ({"image_size": 16}, "--image_size must be at least 32"),
    ({"exposure_stops": 5.0}, "--exposure_stops must be in [0, 4], not 5.0"),
    ({"quantize": ["int4"]}, "unknown --quantize 'int4'"),
    ({"distribution_strategy": "tpu"}, "unknown --distribution_strategy 'tpu'"),
    ({"do_data_augmentation": True, "use_tf_data_input": False}, "needs tf.data input"),
    ({"assert_accuracy_at_least": 0.5, "validation_split": 0}, "needs a validation split"),
    ({"image_dir": "d"}, "nothing to write"),
])
def test_checks_name_the_flag(values, message):
    with pytest.raises(UserError) as refused:
        TrainOptions.from_flags(**values).check()
    assert message in str(refused.value)


def test_check_settings_leaves_paths_out():
    TrainOptions().check_settings()
    with pytest.raises(UserError, match="nothing to write"):
        TrainOptions().check()


def test_unknown_option_names_are_refused():
    with pytest.raises(TypeError, match="epochs"):
        TrainOptions.from_flags(epochs=3)


def test_crossval_reserves_every_path_flag():
    paths = {f"--{f.name}" for f in dataclasses.fields(PathOptions)}
    assert set(crossval.RESERVED_FLAGS) == paths | {"--model"}


def test_crossval_builds_fold_options_from_the_trainer_flags():
    template = options.parse_flags(["--quantize", "int8", "--nocache_features"])
    fold = template.with_paths(image_dir="a", tflite_output_file="b/m.tflite")
    assert fold.recipe.quantize == ["int8"] and not fold.runtime.cache_features
    assert fold.paths.image_dir == "a" and fold.paths.cache_dir is None
    fold.check_settings()


def test_limits_read_as_they_check():
    fraction = Limits(0, 1, high_open=True)
    assert str(fraction) == "in [0, 1)" and 1 not in fraction and 0 in fraction
    assert str(Limits(1)) == "at least 1" and 0 not in Limits(1) and 7 in Limits(1)
    assert float("nan") not in Limits() and 3 in Limits()


def test_an_option_without_help_or_of_an_unknown_type_is_refused_when_declared():
    with pytest.raises(ValueError, match="help"):
        flags.option(3)

    @dataclasses.dataclass
    class Odd:
        """odd"""

        pair: tuple = flags.option((1, 2), "two numbers")

    with pytest.raises(TypeError, match="no flag"):
        flags.flags_of(Odd)
