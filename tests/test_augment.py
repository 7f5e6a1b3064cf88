"""Augmentation for orbit imagery: model input stays float32 in [0, 1], saturation is
reached, flags out of range are one line, and the feature cache holds K views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import trainer_cli_error, write_image

from opssat.train import augment, trainer
from opssat.train.dataset import Preprocessing, image_dataset, list_labelled_files, load_image
from opssat.train.make_image_classifier import options_from_args

SIZE = 32


@pytest.fixture(scope="module")
def two_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aug")
    for label, colour in {"dark": (30, 60, 90), "light": (220, 200, 180)}.items():
        for i in range(3):
            write_image(root / label / f"img_msec_{1600000000000 + i * 100000}.png", colour,
                        size=(48, 40), noise=40, seed=i)
    return root



@pytest.mark.parametrize("mode", ["ground", "onboard"])
def test_augmented_input_stays_float32_in_unit_range_and_saturates(two_labels, mode):
    files = list_labelled_files(two_labels)
    image = load_image(files.paths[0], Preprocessing(mode, size=(SIZE, SIZE)))
    strong = augment.OrbitAugmentation(brightness_delta=0.5, contrast_range=1.0,
                                       exposure_stops=4.0)
    rng = np.random.default_rng(0)
    views = [strong(image, rng) for _ in range(200)]
    for view in views:
        assert view.dtype == np.float32 and view.shape == image.shape
        assert view.min() >= 0.0 and view.max() <= 1.0
    # Some views are washed out to white and some pushed to black, as exposure failures are.
    assert any((v == 1.0).mean() > 0.5 for v in views)
    assert any((v == 0.0).mean() > 0.5 for v in views)
    if mode == "onboard":  # grey input stays grey
        assert all(np.array_equal(v[..., 0], v[..., 2]) for v in views)


def test_flips_are_the_eight_orientations():
    image = np.random.default_rng(1).random((8, 8, 3), dtype=np.float32)
    geometric = augment.OrbitAugmentation(brightness_delta=0, contrast_range=0,
                                          exposure_stops=0)
    orientations = [np.rot90(image, k) for k in range(4)]
    orientations += [o[:, ::-1] for o in orientations]
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(200):
        view = geometric(image, rng)
        matches = [i for i, o in enumerate(orientations) if np.array_equal(view, o)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_training_pipeline_keeps_unit_range_with_both_augmentations(two_labels):
    files = list_labelled_files(two_labels)
    ranges = dict(rotation_range=40, horizontal_flip=True, width_shift_range=0.2,
                  height_shift_range=0.2, shear_range=10, zoom_range=0.2)
    both = augment.chain([augment.keras_transforms(ranges),
                          augment.OrbitAugmentation(exposure_stops=3.0)], seed=0)
    for mode in ("ground", "onboard"):
        batches = image_dataset(files, Preprocessing(mode, size=(SIZE, SIZE)), 3, shuffle_seed=0,
                                augment=both)
        for images, _, *_ in batches:
            values = images.numpy()
            assert values.dtype == np.float32
            assert values.min() >= 0.0 and values.max() <= 1.0



@pytest.mark.parametrize(("flag", "value"), [
    ("--brightness_delta", "1.5"), ("--contrast_range", "-0.1"), ("--exposure_stops", "9"),
    ("--augmented_views", "101"), ("--rotation_range", "-5"), ("--zoom_range", "2"),
])
def test_augmentation_flags_out_of_range_are_one_line(two_labels, tmp_path, flag, value):
    error = trainer_cli_error("--image_dir", str(two_labels), "--tflite_output_file",
                       str(tmp_path / "m.tflite"), "--orbit_augmentation", flag, value)
    assert flag in error and value in error
    assert not (tmp_path / "m.tflite").exists()


def test_cached_views_without_augmentation_are_refused(two_labels, tmp_path):
    error = trainer_cli_error("--image_dir", str(two_labels), "--tflite_output_file",
                       str(tmp_path / "m.tflite"), "--augmented_views", "4")
    assert "--augmented_views needs --orbit_augmentation" in error


def _train(images: Path, hub: Path, out: Path, *extra: str) -> trainer.TrainResult:
    return trainer.train(options_from_args([
        "--image_dir", str(images), "--tfhub_module", str(hub), "--image_size", str(SIZE),
        "--tflite_output_file", str(out / "model.tflite"), "--batch_size", "2",
        "--validation_split", "0", "--train_epochs", "2", *extra,
    ]))


@pytest.mark.slow
def test_feature_cache_holds_k_augmented_views(two_labels, tiny_hub, tmp_path, capsys):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    first = _train(two_labels, tiny_hub, tmp_path / "a", "--orbit_augmentation",
                   "--augmented_views", "3", *cache)
    info = first.record.feature_cache
    assert info["used"] and info["augmented_views"] == 3 and not info["augmented_reused"]
    views = np.load(tmp_path / "cache" / "augmented" / "features.npy")
    assert views.shape[0] == 3 * 6
    # Three views of one image differ: they were augmented, not copied.
    assert not np.allclose(views[0], views[6]) and not np.allclose(views[0], views[12])
    again = _train(two_labels, tiny_hub, tmp_path / "b", "--orbit_augmentation",
                   "--augmented_views", "3", *cache)
    assert again.record.feature_cache["augmented_reused"]
    other = _train(two_labels, tiny_hub, tmp_path / "c", "--orbit_augmentation",
                   "--augmented_views", "3", "--exposure_stops", "2", *cache)
    assert not other.record.feature_cache["augmented_reused"]

    capsys.readouterr()
    uncached = _train(two_labels, tiny_hub, tmp_path / "d", "--do_data_augmentation", *cache)
    assert uncached.record.feature_cache == {"used": False}
    assert "feature cache: off" in capsys.readouterr().out
