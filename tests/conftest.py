"""Fixtures shared by the tests: a temporary repo/ root and small images."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import opssat  # noqa: F401  (selects tf_keras before any TensorFlow import)


@pytest.fixture(autouse=True, scope="session")
def _private_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted backbone weights go to a temporary folder, not the user's ~/.cache."""
    os.environ["OPSSAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("weights-cache"))


@pytest.fixture
def repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary ``repo/`` folder that the toolkit uses instead of the project's."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("OPSSAT_REPO", str(root))
    return root


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (61, 58),
                noise: int = 10, seed: int = 0) -> Path:
    """Write a small noisy image of one colour (format from the suffix)."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(colour, dtype=np.int16) + rng.integers(-noise, noise + 1, (*size[::-1], 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def tiny_classifier(labels: list[str], size: int = 32, seed: int = 0):
    """A small Keras classifier whose top-1 follows the mean colour of the image.

    Channel means feed a dense softmax whose weights pick red, green or blue for
    the first three labels, so clear single-colour images have a known answer.
    """
    import tf_keras

    inputs = tf_keras.Input((size, size, 3))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf_keras.layers.Dense(len(labels), activation="softmax")
    outputs = dense(pooled)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.1, (3, len(labels))).astype(np.float32)
    for index in range(min(3, len(labels))):
        kernel[index, index] = 12.0
    dense.set_weights([kernel, np.full(len(labels), -4.0, np.float32)])
    return model


@pytest.fixture
def make_tflite(tmp_path: Path):
    """Factory: write a tiny TFLite classifier and its labels.txt, return the model path.

    ``quantization`` is one of export.QUANTIZATIONS; ``io_dtype`` ("float32",
    "uint8", "int8") sets the input/output tensor type.
    """

    def make(labels=("red", "green", "blue"), quantization="none", io_dtype="float32",
             size=32, name="model") -> Path:
        import tensorflow as tf

        from opssat import export

        model = tiny_classifier(list(labels), size)
        rng = np.random.default_rng(1)

        def calibration():
            for _ in range(16):
                yield rng.random((1, size, size, 3), dtype=np.float32)

        data = export.tflite_bytes(model, quantization, calibration, tf.as_dtype(io_dtype))
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(data)
        (tmp_path / f"{name}_labels.txt").write_text("".join(f"{x}\n" for x in labels))
        return path

    return make


def shared_dir(name: str) -> Path:
    """``<project>/../shared/<name>``, the team's shared folder (also found from a git
    worktree one level deeper, ``<project>/../../shared``); the first candidate if none
    exists, so that a skip message names the expected place."""
    project = Path(__file__).resolve().parents[1]
    candidates = [project.parent / "shared" / name, project.parents[1] / "shared" / name]
    return next((path for path in candidates if path.is_dir()), candidates[0])


@pytest.fixture(scope="session")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tunable feature extractor saved as a TF2 SavedModel (what TF Hub serves)."""
    import tf_keras

    tf_keras.utils.set_random_seed(3)
    inputs = tf_keras.Input((None, None, 3))
    x = tf_keras.layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    folder = tmp_path_factory.mktemp("hub") / "tiny_feature_vector"
    tf_keras.Model(inputs, x).save(str(folder), save_format="tf")
    return folder


def trainer_cli_error(*args: str) -> str:
    """The one ``error:`` line the trainer's command line prints for ``args``."""
    from opssat import cli, make_image_classifier

    capture = io.StringIO()
    with contextlib.redirect_stderr(capture), pytest.raises(SystemExit) as exited:
        cli.run(lambda: make_image_classifier.main(list(args)))
    assert exited.value.code != 0
    errors = [line for line in capture.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, capture.getvalue()[-2000:]
    return errors[0]
