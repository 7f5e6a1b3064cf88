"""The trainer, on a tiny backbone saved in TF Hub's SavedModel format and a few
single-colour images whose label is their colour."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from ai_edge_litert.interpreter import Interpreter
from helpers import PROJECT, write_image

from opssat.core import cli
from opssat.core.errors import UserError
from opssat.judge import contract
from opssat.train import make_image_classifier, trainer
from opssat.train.dataset import (
    FeatureCache,
    Preprocessing,
    image_dataset,
    list_labelled_files,
    stratified_split,
)
from opssat.train.make_image_classifier import options_from_args
from opssat.train.options import TrainOptions
from opssat.train.record import read_record

COLOURS = {"blue": (30, 30, 200), "green": (30, 200, 30), "red": (200, 30, 30)}
COUNTS = {"blue": 4, "green": 8, "red": 10}



@pytest.fixture(scope="module")
def colour_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "training"
    for label, colour in COLOURS.items():
        for i in range(COUNTS[label]):
            name = f"img_msec_{1600000000000 + i * 100000}_2_thumbnail.jpeg"
            write_image(root / label / name, colour, seed=i)
    return root


def options(image_dir: Path, hub: Path, out: Path, *extra: str) -> TrainOptions:
    return options_from_args([
        "--image_dir", str(image_dir), "--tfhub_module", str(hub), "--image_size", "64",
        "--tflite_output_file", str(out / "model.tflite"),
        "--labels_output_file", str(out / "labels.txt"),
        "--train_epochs", "6", "--learning_rate", "0.5", "--batch_size", "4", *extra,
    ])


def interpreter(path: Path) -> Interpreter:
    model = Interpreter(model_path=str(path))
    model.allocate_tensors()
    return model


def run_tflite(path: Path, image: np.ndarray) -> np.ndarray:
    model = interpreter(path)
    model.set_tensor(model.get_input_details()[0]["index"], image[np.newaxis])
    model.invoke()
    return model.get_tensor(model.get_output_details()[0]["index"])[0]


def colour_input(label: str, size: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(COLOURS[label], np.float32) / 255, (size, size, 3)).copy()


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_old_style_command_writes_all_outputs(tiny_hub, colour_images, tmp_path):
    """The original README's command line, flag for flag, through the module's CLI."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "opssat.train.make_image_classifier",
        "--image_dir", str(colour_images), "--tfhub_module", str(tiny_hub),
        "--saved_model_dir", str(out / "model"), "--labels_output_file", str(out / "labels.txt"),
        "--tflite_output_file", str(out / "tflite_model.tflite"),
        "--summaries_dir", str(out / "summaries"), "--train_epochs", "2", "--do_fine_tuning",
    ]
    done = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "model" / "saved_model.pb").is_file()
    assert (out / "labels.txt").read_text().split() == sorted(COLOURS)
    assert list((out / "summaries").rglob("events.out.tfevents*"))
    record = json.loads((out / "train_record.json").read_text())
    assert record["options"]["do_fine_tuning"] is True
    assert record["labels"] == sorted(COLOURS)
    assert record["target_runtime"] == "TensorFlow Lite 2.5.0 (SmartCam's image_classifier)"
    assert record["epochs_run"] == 2 and len(record["history"]["loss"]) == 2
    assert set(record["outputs"]) == {str(out / n) for n in
                                      ("model", "labels.txt", "tflite_model.tflite")}
    # The default image size is 224: the SmartCam input.
    details = interpreter(out / "tflite_model.tflite").get_input_details()[0]
    assert list(details["shape"]) == [1, 224, 224, 3] and details["dtype"] == np.float32


@pytest.mark.slow
def test_tflite_matches_labels_and_variants_keep_float_io(tiny_hub, colour_images, tmp_path):
    out = tmp_path / "out"
    result = trainer.train(options(colour_images, tiny_hub, out, "--quantize", "float16",
                                   "--quantize", "dynamic", "--quantize", "int8"))
    labels = (out / "labels.txt").read_text().split()
    assert labels == result.labels == sorted(COLOURS)
    for name in ("model", "model_float16", "model_dynamic", "model_int8"):
        model = interpreter(out / f"{name}.tflite")
        (inp,), (outp,) = model.get_input_details(), model.get_output_details()
        assert list(inp["shape"]) == [1, 64, 64, 3] and inp["dtype"] == np.float32, name
        assert list(outp["shape"]) == [1, len(labels)] and outp["dtype"] == np.float32, name
        for label in labels:
            probabilities = run_tflite(out / f"{name}.tflite", colour_input(label, 64))
            assert labels[int(np.argmax(probabilities))] == label, (name, label, probabilities)
            assert probabilities.sum() == pytest.approx(1.0, abs=contract.SOFTMAX_TOLERANCE)
        report = contract.check_contract(out / f"{name}.tflite", out / "labels.txt",
                                         input_size=(64, 64))
        assert report.ok, (name, report.problems)
    accuracies = result.record.tflite_validation_accuracy
    assert set(accuracies) == {"none", "float16", "dynamic", "int8"}
    assert accuracies["none"] == pytest.approx(result.validation_accuracy)


def _hub_kernel(hub: Path) -> np.ndarray:
    loaded = tf.saved_model.load(str(hub))
    (kernel,) = [v for v in loaded.variables if "kernel" in v.name]
    return kernel.numpy()


@pytest.mark.slow
def test_fine_tuning_changes_backbone_and_frozen_does_not(tiny_hub, colour_images, tmp_path):
    before = _hub_kernel(tiny_hub)
    kernels = {}
    for mode in ("--do_fine_tuning", "--nodo_fine_tuning"):
        out = tmp_path / mode
        opts = options(colour_images, tiny_hub, out, mode, "--saved_model_dir",
                       str(out / "saved_model"), "--train_epochs", "2")
        trainer.train(opts)
        loaded = tf.saved_model.load(str(out / "saved_model"))
        kernels[mode] = [v.numpy() for v in loaded.variables
                         if "kernel" in v.name and v.shape == before.shape][0]
    assert not np.allclose(kernels["--do_fine_tuning"], before)
    np.testing.assert_array_equal(kernels["--nodo_fine_tuning"], before)


@pytest.mark.slow
def test_cached_and_uncached_frozen_training_agree(tiny_hub, colour_images, tmp_path):
    outputs = {}
    for flag in ("--cache_features", "--nocache_features"):
        out = tmp_path / flag
        trainer.train(options(colour_images, tiny_hub, out, flag, "--dropout_rate", "0",
                              "--cache_dir", str(tmp_path / "cache")))
        outputs[flag] = np.stack([run_tflite(out / "model.tflite", colour_input(label, 64))
                                  for label in COLOURS])
    np.testing.assert_allclose(outputs["--cache_features"], outputs["--nocache_features"],
                               atol=1e-4)


@pytest.mark.slow
def test_streaming_and_in_memory_input_agree(tiny_hub, colour_images, tmp_path):
    outputs = {}
    for flag in ("--use_tf_data_input", "--nouse_tf_data_input"):
        out = tmp_path / flag
        trainer.train(options(colour_images, tiny_hub, out, flag, "--dropout_rate", "0",
                              "--do_fine_tuning", "--train_epochs", "2"))
        outputs[flag] = run_tflite(out / "model.tflite", colour_input("red", 64))
    np.testing.assert_allclose(outputs["--use_tf_data_input"], outputs["--nouse_tf_data_input"],
                               atol=1e-4)


def test_class_weights_balance_the_labels(colour_images):
    files = list_labelled_files(colour_images)
    balanced = trainer.class_weights(files, "balanced")
    counts = np.array([COUNTS[label] for label in files.labels])
    # Each label's total weight is the same: n / k.
    np.testing.assert_allclose(balanced * counts, np.full(3, counts.sum() / 3))
    np.testing.assert_array_equal(trainer.class_weights(files, "none"), np.ones(3))


@pytest.mark.slow
def test_class_weights_reach_the_loss(tiny_hub, colour_images, tmp_path):
    """A label weighted up pulls the loss: balanced and unweighted runs differ, as recorded."""
    records = {}
    for mode in ("balanced", "none"):
        result = trainer.train(options(colour_images, tiny_hub, tmp_path / mode,
                                       "--class_weights", mode, "--train_epochs", "1"))
        records[mode] = result.record
    # Training keeps 3 blue of 17 images (the rest is the validation split).
    assert records["balanced"].class_weights["blue"] == pytest.approx(17 / (3 * 3))
    assert records["none"].class_weights["blue"] == 1.0
    assert records["balanced"].history["loss"] != records["none"].history["loss"]


def test_validation_split_is_stratified_and_seeded(colour_images):
    files = list_labelled_files(colour_images)
    train_idx, val_idx = stratified_split(files, 0.25, seed=7)
    assert not set(train_idx) & set(val_idx)
    val_counts = np.bincount(files.targets[val_idx], minlength=3)
    assert dict(zip(files.labels, val_counts.tolist(), strict=True)) == {
        "blue": 1, "green": 2, "red": 2}  # round(0.25 * 4, 8, 10), at least one each
    again = stratified_split(files, 0.25, seed=7)
    np.testing.assert_array_equal(again[1], val_idx)
    assert not np.array_equal(stratified_split(files, 0.25, seed=8)[1], val_idx)


@pytest.mark.slow
def test_early_stopping_records_best_epoch(tiny_hub, colour_images, tmp_path):
    result = trainer.train(options(colour_images, tiny_hub, tmp_path / "out",
                                   "--early_stopping_patience", "1", "--train_epochs", "30",
                                   "--learning_rate", "2.0"))
    record = result.record
    losses = record.history["val_loss"]
    assert record.best_epoch == int(np.argmin(losses)) + 1
    assert record.best_epoch_metrics["val_loss"] == min(losses)
    assert record.epochs_run < 30
    assert read_record(tmp_path / "out" / "train_record.json") == record


@pytest.mark.slow
def test_feature_cache_reused_then_rebuilt_when_files_change(tiny_hub, colour_images, tmp_path,
                                                             capsys):
    cache = tmp_path / "cache"
    first = trainer.train(options(colour_images, tiny_hub, tmp_path / "a", "--cache_dir",
                                  str(cache), "--train_epochs", "1"))
    second = trainer.train(options(colour_images, tiny_hub, tmp_path / "b", "--cache_dir",
                                   str(cache), "--train_epochs", "1"))
    assert first.record.feature_cache["reused"] is False
    assert second.record.feature_cache["reused"] is True
    changed = tmp_path / "changed"
    for label in COLOURS:
        (changed / label).mkdir(parents=True)
        for path in sorted((colour_images / label).iterdir())[:3]:
            (changed / label / path.name).write_bytes(path.read_bytes())
    capsys.readouterr()
    third = trainer.train(options(changed, tiny_hub, tmp_path / "c", "--cache_dir", str(cache),
                                  "--train_epochs", "1"))
    assert third.record.feature_cache["reused"] is False
    assert "the files changed" in capsys.readouterr().out
    # A truncated features file is rebuilt, never read.
    features = cache / "features.npy"
    features.write_bytes(features.read_bytes()[:200])
    fourth = trainer.train(options(changed, tiny_hub, tmp_path / "d", "--cache_dir", str(cache),
                                   "--train_epochs", "1"))
    assert fourth.record.feature_cache["reused"] is False


@pytest.mark.slow
def test_failed_run_keeps_previous_model(tiny_hub, colour_images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    trainer.train(options(colour_images, tiny_hub, out, "--train_epochs", "1"))
    before = tree_hash(out)
    # 1.01 was the unreachable target here; the flag now lies in [0, 1], so the
    # accuracy is made to fall short of 1.0 instead.
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "_validation_accuracy", lambda run, classifiers: 0.5)
        with pytest.raises(UserError, match="previous model is kept"):
            trainer.train(options(colour_images, tiny_hub, out, "--train_epochs", "1",
                                  "--assert_accuracy_at_least", "1.0"))
    assert tree_hash(out) == before

    def broken_export(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(trainer.export, "tflite_bytes", broken_export)
    with pytest.raises(RuntimeError):
        trainer.train(options(colour_images, tiny_hub, out, "--train_epochs", "1"))
    assert tree_hash(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ("--distribution_strategy", "mirrored", "--do_fine_tuning"),
    ("--mixed_precision", "--do_fine_tuning"),
], ids=["mirrored", "mixed_precision"])
def test_mirrored_and_mixed_precision_make_a_valid_smartcam_model(tiny_hub, colour_images,
                                                                  tmp_path, capsys, flags):
    out = tmp_path / "out"
    trainer.train(options(colour_images, tiny_hub, out, *flags, "--train_epochs", "2"))
    if "mirrored" in flags:
        assert "1 replica(s)" in capsys.readouterr().out
    report = contract.check_contract(out / "model.tflite", out / "labels.txt", input_size=(64, 64))
    assert report.ok, report.problems
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


def _cli(*args: str) -> tuple[int, str]:
    """Run the trainer's command line in this process, as ``cli.run`` would: (code, stderr)."""
    capture = io.StringIO()
    with contextlib.redirect_stderr(capture), pytest.raises(SystemExit) as exited:
        cli.run(lambda: make_image_classifier.main(list(args)))
    return exited.value.code, capture.getvalue()


def _assert_one_line_error(done: tuple[int, str], *words: str) -> None:
    code, stderr = done
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]


def test_bad_inputs_are_one_line_errors(tiny_hub, colour_images, tmp_path, monkeypatch):
    out = ["--tflite_output_file", str(tmp_path / "out" / "m.tflite")]
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(_cli("--image_dir", str(empty), *out), "two label folders")
    single = tmp_path / "single"
    write_image(single / "earth" / "a.jpeg", (0, 0, 255))
    _assert_one_line_error(_cli("--image_dir", str(single), *out), "two label folders")
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--quantize", "int4", *out),
                           "int4")
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--distribution_strategy",
                                "tpu", *out), "tpu")
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hubcache"))
    for proxy in ("HTTPS_PROXY", "https_proxy"):  # nothing listens there: no download
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--tfhub_module",
                                "https://tfhub.dev/google/imagenet/none/feature_vector/5", *out),
                           "efficientnet_lite0")
    assert not (tmp_path / "out").exists()


def test_not_a_feature_extractor_and_refused_image_size(colour_images, tmp_path):
    out = ["--tflite_output_file", str(tmp_path / "out" / "m.tflite")]
    inputs = tf_keras.Input((None, None, 3))
    spatial = tf_keras.layers.Conv2D(4, 3)(inputs)
    spatial_dir = tmp_path / "spatial"
    tf_keras.Model(inputs, spatial).save(str(spatial_dir), save_format="tf")
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--tfhub_module",
                                str(spatial_dir), "--image_size", "64", *out),
                           "not an image feature extractor")
    fixed = tf_keras.Input((96, 96, 3))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.Conv2D(4, 3)(fixed))
    fixed_dir = tmp_path / "fixed"
    tf_keras.Model(fixed, pooled).save(str(fixed_dir), save_format="tf")
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--tfhub_module",
                                str(fixed_dir), "--image_size", "64", *out), "refuses 64x64")
    not_saved_model = tmp_path / "folder"
    not_saved_model.mkdir()
    _assert_one_line_error(_cli("--image_dir", str(colour_images), "--tfhub_module",
                                str(not_saved_model), *out), "not a SavedModel")


@pytest.mark.slow
def test_train_sh_fills_the_model_folder(tiny_hub, colour_images, repo_root):
    model = repo_root / "cam"
    (model / "data").mkdir(parents=True)
    (model / "data" / "training").symlink_to(colour_images)
    done = subprocess.run(["./train.sh", "cam", "1", "--tfhub_module", str(tiny_hub),
                           "--image_size", "64", "--nodo_fine_tuning",
                           "--train_preprocess", "onboard", "--onboard_channels", "3"],
                          cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tensorboard --logdir" in done.stdout
    for name in ("saved_model", "labels.txt", "tflite_model.tflite", "train_record.json",
                 "summaries", "cache"):
        assert (model / name).exists(), name
    record = json.loads((model / "train_record.json").read_text())
    assert record["epochs_run"] == 1 and record["options"]["do_fine_tuning"] is False
    # What the model was trained on, in full (the old flag name still sets it).
    assert record["preprocessing"] == {"mode": "onboard", "onboard_channels": 3,
                                       "size": [64, 64], "mean": 0.0, "std": 255.0}

    missing = subprocess.run(["./train.sh", "nosuchmodel"], cwd=PROJECT, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "create_dirs.sh nosuchmodel" in missing.stderr.strip().splitlines()[-1]


def test_feature_cache_key_names_what_changed(colour_images, tmp_path):
    files = list_labelled_files(colour_images)
    ground = Preprocessing(size=(64, 64))
    built = FeatureCache(tmp_path, "backbone-a", ground, files)
    batches = image_dataset(files, ground, 8)
    built.load_or_build(lambda batch: np.asarray(batch).mean(axis=(1, 2)), batches, 3)
    assert FeatureCache(tmp_path, "backbone-a", ground, files).stale_reason() is None
    assert (FeatureCache(tmp_path, "backbone-b", ground, files).stale_reason()
            == "the backbone changed")
    assert (FeatureCache(tmp_path, "backbone-a", Preprocessing("onboard", size=(64, 64)), files)
            .stale_reason() == "the preprocessing changed")
    (tmp_path / "meta.json").write_text("{not json")
    assert "unreadable" in FeatureCache(tmp_path, "backbone-a", ground, files).stale_reason()


@pytest.mark.slow
def test_changed_labels_warn(tiny_hub, colour_images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "labels.txt").write_text("bad\nearth\nedge\n")
    trainer.train(options(colour_images, tiny_hub, out, "--train_epochs", "1"))
    assert "labels change from ['bad', 'earth', 'edge']" in capsys.readouterr().err
    assert (out / "labels.txt").read_text().split() == sorted(COLOURS)


@pytest.mark.slow
def test_temperature_is_fitted_on_validation_folded_and_recorded(tiny_hub, colour_images,
                                                                 tmp_path):
    plain = trainer.train(options(colour_images, tiny_hub, tmp_path / "off",
                                  "--temperature", "off", "--validation_split", "0.4"))
    assert plain.record.temperature == {"T": 1.0, "fitted_on": "off (--temperature off)"}
    given = trainer.train(options(colour_images, tiny_hub, tmp_path / "given",
                                  "--temperature", "2", "--validation_split", "0.4"))
    assert given.record.temperature == {"T": 2.0, "fitted_on": "given (--temperature)"}
    image = colour_input("green", 64)
    before = run_tflite(tmp_path / "off" / "model.tflite", image)
    after = run_tflite(tmp_path / "given" / "model.tflite", image)
    from opssat.judge.metrics import scale_temperature

    # Same seed, same training: the exported model is the plain one with logits / 2.
    assert np.allclose(after, scale_temperature(before[None], 2.0)[0], atol=1e-5)
    auto = trainer.train(options(colour_images, tiny_hub, tmp_path / "auto",
                                 "--validation_split", "0.4"))
    assert auto.record.temperature["fitted_on"].startswith(("validation split", "none"))
    assert auto.record.tflite_files == {"none": str(tmp_path / "auto" / "model.tflite")}
    with pytest.raises(UserError, match="--temperature hot"):
        trainer.train(options(colour_images, tiny_hub, tmp_path / "bad", "--temperature", "hot"))


@pytest.mark.slow
def test_ensemble_seeds_export_one_graph_averaging_its_members(tiny_hub, colour_images,
                                                               tmp_path):
    from opssat.onboard import tflite25

    single = trainer.train(options(colour_images, tiny_hub, tmp_path / "one",
                                   "--validation_split", "0", "--nodo_fine_tuning"))
    both = trainer.train(options(colour_images, tiny_hub, tmp_path / "two",
                                 "--validation_split", "0", "--nodo_fine_tuning",
                                 "--ensemble_seeds", "2"))
    assert single.record.ensemble_seeds == [42] and both.record.ensemble_seeds == [42, 43]
    data = (tmp_path / "two" / "model.tflite").read_bytes()
    assert tflite25.problems(data) == []
    ops = [name for name, _ in tflite25.operators(data)]
    one_ops = [name for name, _ in tflite25.operators(
        (tmp_path / "one" / "model.tflite").read_bytes())]
    # Frozen members share the backbone: one convolution, two dense heads.
    assert ops.count("CONV_2D") == one_ops.count("CONV_2D")
    assert ops.count("FULLY_CONNECTED") == 2 * one_ops.count("FULLY_CONNECTED")
    for label in COLOURS:
        probabilities = run_tflite(tmp_path / "two" / "model.tflite", colour_input(label, 64))
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
