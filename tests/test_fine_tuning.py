"""Fine-tuning on small data: batch norm stays in inference mode, and the two-stage
schedule (head first, then the backbone at a low learning rate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from helpers import trainer_cli_error, write_image

from opssat.train import make_image_classifier, trainer
from opssat.train.backbones import Backbone, load_backbone
from opssat.train.make_image_classifier import options_from_args
from opssat.train.options import Stage, TrainOptions
from opssat.train.two_rates import TwoRateTraining

SIZE = 32
COLOURS = {"dark": (20, 20, 20), "grey": (120, 120, 120), "white": (240, 240, 240)}


def _bn_extractor(input_size: int | None) -> tf_keras.Model:
    """Conv, batch norm, pooling: the shape of every real backbone, in miniature."""
    tf_keras.utils.set_random_seed(5)
    inputs = tf_keras.Input((input_size, input_size, 3))
    x = tf_keras.layers.Conv2D(4, 3, strides=4)(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, x)


@pytest.fixture(scope="module")
def bn_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A feature extractor with batch norm, as a TF2 SavedModel (what TF Hub serves)."""
    folder = tmp_path_factory.mktemp("bn_hub") / "bn_feature_vector"
    _bn_extractor(None).save(str(folder), save_format="tf")
    return folder


@pytest.fixture(scope="module")
def grey_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grey")
    for label, colour in COLOURS.items():
        for i in range(3):
            write_image(root / label / f"img_msec_{1600000000000 + i * 100000}.png", colour,
                        size=(40, 40), seed=i)
    return root


def _backbone(kind: str, hub: Path) -> Backbone:
    if kind == "hub":
        return load_backbone(None, str(hub), SIZE, trainable=True)
    # Built-in backbones are tf_keras models wrapped the same way.
    return Backbone("tiny", "test", SIZE, _bn_extractor(SIZE))


def _moving_statistics(model: tf_keras.Model) -> dict[str, np.ndarray]:
    return {v.name: v.numpy().copy() for v in model.variables if "moving_" in v.name}


def _kernel(model: tf_keras.Model) -> np.ndarray:
    return next(v.numpy().copy() for v in model.trainable_variables if "kernel" in v.name)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "hub"])
def test_fine_tuning_step_trains_weights_but_not_batch_norm_statistics(kind, bn_hub):
    backbone = _backbone(kind, bn_hub)
    backbone.model.trainable = True
    options = TrainOptions.from_flags(optimizer="adam")
    classifier = trainer.build_classifier(backbone, trainer.build_head(3, options))
    trainer.compile_model(classifier, options, learning_rate=0.05)
    statistics, kernel = _moving_statistics(backbone.model), _kernel(backbone.model)
    assert len(statistics) == 2  # moving mean and variance

    images = np.random.default_rng(0).uniform(0.5, 1.0, (4, SIZE, SIZE, 3)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    classifier.fit(images, targets, epochs=1, batch_size=4, verbose=0)

    assert not np.allclose(_kernel(backbone.model), kernel)
    for name, values in _moving_statistics(backbone.model).items():
        np.testing.assert_array_equal(values, statistics[name], err_msg=name)
    # The same batch in training mode does move them: the check above can fail.
    backbone.model(images, training=True)
    moved = _moving_statistics(backbone.model)
    assert any(not np.allclose(moved[name], statistics[name]) for name in statistics)


def _one_step_changes(model: tf_keras.Model, watched: list, images, targets) -> list:
    before = [v.numpy().copy() for v in watched]
    model.fit(images, targets, epochs=1, batch_size=len(images), verbose=0, shuffle=False)
    return [v.numpy() - b for v, b in zip(watched, before, strict=True)]


def test_two_rates_move_the_head_and_the_backbone_each_at_its_own_rate():
    """One SGD step from the same weights: the changes are the plain step's (at rate 1)
    times the head's rate for the head, times the backbone's for the backbone."""
    options = TrainOptions.from_flags(momentum=0.0)
    backbone = Backbone("tiny", "test", SIZE, _bn_extractor(SIZE))
    backbone.model.trainable = True
    head = trainer.build_head(3, options)
    classifier = trainer.build_classifier(backbone, head)
    start = classifier.get_weights()
    images = np.random.default_rng(0).uniform(0.2, 1.0, (6, SIZE, SIZE, 3)).astype(np.float32)
    targets = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    backbone_variables = backbone.model.trainable_variables
    watched = [*backbone_variables, *head.trainable_variables]

    trainer.compile_model(classifier, options, learning_rate=1.0)
    plain = _one_step_changes(classifier, watched, images, targets)
    classifier.set_weights(start)
    two = TwoRateTraining(classifier, backbone_variables, tf_keras.optimizers.SGD(0.001))
    trainer.compile_model(two, options, learning_rate=0.1)
    changed = _one_step_changes(two, watched, images, targets)

    split = len(backbone_variables)
    for rate, got, want in [(0.001, changed[:split], plain[:split]),
                            (0.1, changed[split:], plain[split:])]:
        assert any(np.abs(w).max() > 0 for w in want)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, rate * w, rtol=1e-3, atol=1e-7)


def _options(images: Path, hub: Path, out: Path, *extra: str) -> TrainOptions:
    return options_from_args([
        "--image_dir", str(images), "--tfhub_module", str(hub), "--image_size", str(SIZE),
        "--tflite_output_file", str(out / "model.tflite"),
        "--labels_output_file", str(out / "labels.txt"), "--batch_size", "4",
        "--validation_split", "0", *extra,
    ])


def _saved_variables(folder: Path) -> dict[str, np.ndarray]:
    """The backbone's conv kernel and batch-norm statistics, by role (names vary with the
    order models were built in)."""
    found = {}
    for variable in tf.saved_model.load(str(folder)).variables:
        for role in ("moving_mean", "moving_variance", "kernel"):
            if variable.name.endswith(f"{role}:0") and len(variable.shape) in (1, 4):
                found.setdefault(role, variable.numpy())
    return found


@pytest.mark.slow
def test_two_stage_run_trains_head_then_backbone(bn_hub, grey_images, tmp_path):
    out = tmp_path / "out"
    result = trainer.train(_options(
        grey_images, bn_hub, out, "--saved_model_dir", str(out / "saved_model"),
        "--do_fine_tuning", "--train_epochs", "3", "--fine_tune_after_epochs", "2",
        "--fine_tuning_learning_rate", "0.01", "--optimizer", "adam"))
    record = json.loads((out / "train_record.json").read_text())
    assert [(s["name"], s["first_epoch"], s["end_epoch"], s["learning_rate"])
            for s in record["stages"]] == [("head", 0, 2, 0.005), ("fine-tuning", 2, 3, 0.01)]
    assert record["epochs_run"] == 3 == len(result.history["loss"])
    assert record["feature_cache"]["used"]  # the head stage reads cached features

    original = _saved_variables(bn_hub)
    trained = _saved_variables(out / "saved_model")
    assert set(original) == set(trained) == {"moving_mean", "moving_variance", "kernel"}
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_array_equal(trained[name], original[name])
    assert not np.allclose(trained["kernel"], original["kernel"])


@pytest.mark.slow
def test_with_two_rates_the_head_keeps_its_optimizer_across_stages(
        bn_hub, grey_images, tmp_path, monkeypatch):
    """The head stage's SGD, momentum and step count included, goes on training the head
    while the backbone gets an optimizer of its own: two optimizers, not three."""
    made = []
    make_optimizer = trainer.make_optimizer

    def recording(options, rate):
        made.append(make_optimizer(options, rate))
        return made[-1]

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    trainer.train(_options(grey_images, bn_hub, tmp_path / "out", "--do_fine_tuning",
                           "--train_epochs", "3", "--fine_tune_after_epochs", "2"))
    steps_per_epoch = -(-9 // 4)  # 9 images, batches of 4
    assert len(made) == 2
    assert int(made[0].iterations.numpy()) == 3 * steps_per_epoch


@pytest.mark.slow
def test_with_two_rates_the_fine_tuning_stage_does_not_replay_the_head_stages_batches(
        bn_hub, grey_images, tmp_path, monkeypatch):
    """Each stage builds its own image dataset; seeded alike, the fine-tuning stage's
    epochs would see the head stage's batches again, in the same order, while the head
    goes on with its optimizer (the default's two rates)."""
    first_batches = []
    image_batches = trainer.image_batches

    def recording(*args, **kwargs):
        data = image_batches(*args, **kwargs)
        first_batches.append(next(iter(data))[0].numpy())
        return data

    monkeypatch.setattr(trainer, "image_batches", recording)
    trainer.train(_options(grey_images, bn_hub, tmp_path / "out", "--do_fine_tuning",
                           "--nocache_features", "--train_epochs", "2",
                           "--fine_tune_after_epochs", "1"))
    assert len(first_batches) == 2
    assert not np.array_equal(*first_batches)


@pytest.mark.slow
def test_a_soup_of_two_seeds_is_one_model_with_their_mean_weights(bn_hub, grey_images,
                                                                  tmp_path):
    """--ensemble soup: the fine-tuned members of seeds 42 and 43, each as it trains
    alone, averaged weight by weight into one model of one member's operators."""
    from opssat.onboard import tflite25

    fine_tune = ("--do_fine_tuning", "--train_epochs", "3", "--fine_tune_after_epochs", "2",
                 "--fine_tuning_learning_rate", "0.01", "--optimizer", "adam")
    kernels = {}
    for name, extra in [("42", ("--seed", "42")), ("43", ("--seed", "43")),
                        ("soup", ("--ensemble_seeds", "2", "--ensemble", "soup"))]:
        out = tmp_path / name
        result = trainer.train(_options(grey_images, bn_hub, out, "--saved_model_dir",
                                        str(out / "saved_model"), *fine_tune, *extra))
        kernels[name] = _saved_variables(out / "saved_model")
    assert result.record.ensemble_seeds == [42, 43]
    assert not np.allclose(kernels["42"]["kernel"], kernels["43"]["kernel"])
    np.testing.assert_allclose(kernels["soup"]["kernel"],
                               (kernels["42"]["kernel"] + kernels["43"]["kernel"]) / 2,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(kernels["soup"]["moving_mean"], kernels["42"]["moving_mean"])
    ops = [tflite25.operators((tmp_path / n / "model.tflite").read_bytes()) for n in ("42", "soup")]
    assert [name for name, _ in ops[1]] == [name for name, _ in ops[0]]


@pytest.mark.slow
def test_frozen_run_leaves_backbone_alone(bn_hub, grey_images, tmp_path):
    out = tmp_path / "out"
    trainer.train(_options(grey_images, bn_hub, out, "--saved_model_dir",
                           str(out / "saved_model"), "--train_epochs", "1"))
    original, trained = _saved_variables(bn_hub), _saved_variables(out / "saved_model")
    np.testing.assert_array_equal(trained["kernel"], original["kernel"])


def test_fine_tuning_warms_the_head_up_first_unless_told_tf_hubs_one_stage():
    options = TrainOptions.from_flags(do_fine_tuning=True, train_epochs=10)
    assert options.schedule.stages() == [Stage("head", 0, 5, 0.005, False),
                                         Stage("fine-tuning", 5, 10, 0.00005, True, 0.005)]
    one_stage = TrainOptions.from_flags(do_fine_tuning=True, train_epochs=4,
                                        fine_tune_after_epochs=0)
    assert one_stage.schedule.stages() == [Stage("fine-tuning", 0, 4, 0.005, True)]
    told = TrainOptions.from_flags(do_fine_tuning=True, train_epochs=4, fine_tune_after_epochs=3,
                                   fine_tuning_learning_rate=0.001)
    assert told.schedule.stages() == [Stage("head", 0, 3, 0.005, False),
                                      Stage("fine-tuning", 3, 4, 0.001, True, 0.005)]
    same = TrainOptions.from_flags(do_fine_tuning=True, train_epochs=4,
                                   fine_tuning_learning_rate=0.001,
                                   fine_tuning_head_learning_rate=0.001)
    assert same.schedule.stages()[-1].head_rate == 0.001
    frozen = TrainOptions.from_flags(train_epochs=4)
    assert frozen.schedule.stages() == [Stage("head", 0, 4, 0.005, False)]



@pytest.mark.parametrize(("flags", "named"), [
    (("--do_fine_tuning", "--fine_tune_after_epochs", "5"), "--fine_tune_after_epochs"),
    (("--do_fine_tuning", "--fine_tune_after_epochs", "-1"), "--fine_tune_after_epochs"),
    (("--fine_tune_after_epochs", "2"), "needs --do_fine_tuning"),
    (("--fine_tuning_learning_rate", "0"), "--fine_tuning_learning_rate"),
    (("--fine_tuning_head_learning_rate", "0.1"), "needs --do_fine_tuning"),
    (("--learning_rate", "nan"), "--learning_rate"),
    (("--optimizer", "rmsprop"), "--optimizer"),
    (("--momentum", "1.5"), "--momentum"),
])
def test_schedule_flags_out_of_range_are_one_line(grey_images, tmp_path, flags, named):
    error = trainer_cli_error("--image_dir", str(grey_images), "--tflite_output_file",
                       str(tmp_path / "m.tflite"), "--train_epochs", "5", *flags)
    assert named in error
    assert not (tmp_path / "m.tflite").exists()


def test_every_flag_has_help():
    parser = make_image_classifier.build_parser()
    for action in parser._actions:
        if action.help is not None and action.help != "==SUPPRESS==":
            assert action.help.strip(), action.dest
        else:
            assert action.option_strings[0].startswith("--no"), action.dest
