"""Built-in backbones inside the trainer: exported classifiers meet SmartCam's contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tf_keras
from helpers import write_image

from opssat.core.errors import UserError
from opssat.judge import contract
from opssat.train.backbones import load_backbone
from opssat.train.make_image_classifier import options_from_args
from opssat.train.trainer import train


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("few")
    colours = {"bad": (5, 5, 5), "earth": (40, 90, 120), "edge": (200, 200, 220)}
    for label, colour in colours.items():
        for i in range(4):
            write_image(root / label / f"{i}.png", colour, seed=i)
    return root


def _train(images: Path, out: Path, *flags: str) -> None:
    train(options_from_args([
        "--image_dir", str(images), "--tflite_output_file", str(out / "model.tflite"),
        "--labels_output_file", str(out / "labels.txt"), "--train_epochs", "1",
        "--batch_size", "4", *flags,
    ]))


@pytest.mark.slow
def test_fine_tuned_efficientnet_lite0_classifier_meets_the_contract(few_images, tmp_path):
    out = tmp_path / "lite0"
    _train(few_images, out, "--backbone", "efficientnet_lite0", "--do_fine_tuning")
    report = contract.check_contract(out / "model.tflite", out / "labels.txt")
    assert report.ok, report.problems


@pytest.mark.slow
def test_mobilenet_v2_from_a_weights_file(few_images, tmp_path):
    core = tf_keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False,
                                             pooling="avg", weights=None)
    weights = tmp_path / "mobilenet_v2.h5"
    core.save_weights(str(weights))
    out = tmp_path / "mnv2"
    _train(few_images, out, "--backbone", "mobilenet_v2", "--backbone_weights", str(weights),
           "--image_size", "96")
    report = contract.check_contract(out / "model.tflite", out / "labels.txt", input_size=(96, 96))
    assert report.ok, report.problems


@pytest.mark.slow
def test_mobilenet_v2_download_failure_names_the_offline_options(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens: no download
    with pytest.raises(UserError, match="--backbone_weights.*efficientnet_lite0"):
        load_backbone("mobilenet_v2", image_size=96)


def test_unknown_backbone_is_refused():
    with pytest.raises(UserError, match="unknown backbone"):
        load_backbone("resnet9000")


def test_the_catalog_names_every_builder_and_export_variant():
    # --help reads the names from the catalog (no TensorFlow); the builders must agree.
    from opssat.train import backbones, catalog, export

    assert tuple(backbones.BUILDERS) == catalog.BUILTIN_BACKBONES
    assert export.QUANTIZATIONS is catalog.QUANTIZATIONS


def test_exposure_shares_count_clipped_bright_and_dark_pixels_and_follow_the_features():
    """A frame a quarter clipped (255), a quarter bright (210), half black (5): the shares
    0.25, 0.5 and 0.5, scaled, after the backbone's own features."""
    from opssat.train.backbones import EXPOSURE_SCALE, Backbone, with_exposure_shares

    inputs = tf_keras.Input((8, 8, 3))
    base = Backbone("tiny", "test", 8, tf_keras.Model(
        inputs, tf_keras.layers.GlobalAveragePooling2D()(inputs)))
    levels = np.full((8, 8), 5.0, np.float32)
    levels[:2], levels[2:4] = 255.0, 210.0
    image = np.repeat(levels[None, :, :, None], 3, axis=-1) / 255.0
    extended = with_exposure_shares(base)
    features = extended.model(image, training=False).numpy()[0]
    assert extended.feature_size == base.feature_size + 3
    np.testing.assert_allclose(features[:3], image[0].mean(axis=(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(features[3:], EXPOSURE_SCALE * np.array([0.25, 0.5, 0.5]),
                               rtol=1e-6)
    assert extended.identity != base.identity  # a feature cache of the plain one is stale
