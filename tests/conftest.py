"""Fixtures shared by the tests: a temporary repo/ root, tiny models, a tiny TF Hub module.
Plain helper functions live in ``helpers.py``."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers import contract_model_bytes, tiny_classifier

import opssat  # noqa: F401  (selects tf_keras before any TensorFlow import)


@pytest.fixture(autouse=True, scope="session")
def _private_weights_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Converted backbone weights go to a temporary folder, not the user's ~/.cache."""
    os.environ["OPSSAT_CACHE_DIR"] = str(tmp_path_factory.mktemp("weights-cache"))


@pytest.fixture(autouse=True)
def _restore_sigint_handler():
    """A script's ``main`` run in this process may install its Ctrl-C handler
    (``cli.on_interrupt`` exits at once); put pytest's back after each test, or a
    later test's SIGINT would end the whole run."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.fixture
def repo_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary ``repo/`` folder that the toolkit uses instead of the project's."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setenv("OPSSAT_REPO", str(root))
    return root


@pytest.fixture
def make_tflite(tmp_path: Path):
    """Factory: write a tiny TFLite classifier and its labels.txt, return the model path.

    ``quantization`` is one of export.QUANTIZATIONS; ``io_dtype`` ("float32",
    "uint8", "int8") sets the input/output tensor type.
    """

    def make(labels=("red", "green", "blue"), quantization="none", io_dtype="float32",
             size=32, name="model") -> Path:
        import tensorflow as tf

        from opssat.train import export

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


@pytest.fixture(scope="session")
def contract_models(tmp_path_factory: pytest.TempPathFactory):
    """Factory of the small TFLite files of ``helpers.contract_model_bytes``, by kind, each
    converted once per session (conversion is slow)."""
    folder = tmp_path_factory.mktemp("contract_models")
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            path = folder / f"{kind}.tflite"
            path.write_bytes(contract_model_bytes(kind))
            built[kind] = path
        return built[kind]

    return get
