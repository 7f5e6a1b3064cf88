"""Plain helpers shared by the tests: small images, a tiny classifier, the shared/
folder, and the one way to run a script of the project as a user would."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: The project's root folder (where the scripts are).
PROJECT = Path(__file__).resolve().parents[1]
#: The labels of OPS-SAT's thumbnails, in labels.txt order.
OPSSAT_LABELS = ["bad", "earth", "edge"]


def run_script(script: str | Path, *args: str | Path, repo: Path | None = None,
               env: dict | None = None, timeout: float = 180, cwd: Path = PROJECT,
               **kwargs) -> subprocess.CompletedProcess:
    """Run a project script (``foo.py`` with this Python, anything else as it is) with
    ``OPSSAT_REPO`` set to ``repo`` when given; output captured as text."""
    environment = {**os.environ, **(env or {})}
    if repo is not None:
        environment["OPSSAT_REPO"] = str(repo)
    script = str(script)
    command = [sys.executable, script] if script.endswith(".py") else [script]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=environment, timeout=timeout, **kwargs)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line of a failed run without a traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


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


def shared_dir(name: str) -> Path:
    """``<project>/../shared/<name>``, the team's shared folder (also found from a git
    worktree one level deeper, ``<project>/../../shared``); the first candidate if none
    exists, so that a skip message names the expected place."""
    project = PROJECT
    candidates = [project.parent / "shared" / name, project.parents[1] / "shared" / name]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def trainer_cli_error(*args: str) -> str:
    """The one ``error:`` line the trainer's command line prints for ``args``."""
    from opssat.core import cli
    from opssat.train import make_image_classifier

    capture = io.StringIO()
    with contextlib.redirect_stderr(capture), pytest.raises(SystemExit) as exited:
        cli.run(lambda: make_image_classifier.main(list(args)))
    assert exited.value.code != 0
    errors = [line for line in capture.getvalue().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, capture.getvalue()[-2000:]
    return errors[0]


def write_labels_file(folder: Path, labels: list[str], name: str = "labels.txt") -> Path:
    """``folder/name`` with one label per line."""
    path = folder / name
    path.write_text("".join(f"{label}\n" for label in labels))
    return path


def contract_model_bytes(kind: str) -> bytes:
    """A small TFLite model that meets SmartCam's contract (``good``) or breaks one rule
    of it: ``size32``, ``uint8``, ``flex``, ``custom``, ``no_softmax``, ``sigmoid``,
    ``signed``; its outputs are OPSSAT_LABELS."""
    import tensorflow as tf

    from opssat.train import export

    size = 32 if kind == "size32" else 224
    if kind in ("good", "size32", "uint8"):
        rng = np.random.default_rng(1)

        def calibration():
            for _ in range(4):
                yield rng.random((1, size, size, 3), dtype=np.float32)

        quantization, io_dtype = ("int8", tf.uint8) if kind == "uint8" else ("none", tf.float32)
        return export.tflite_bytes(tiny_classifier(OPSSAT_LABELS, size), quantization, calibration,
                                   io_dtype)
    heads = {
        "flex": lambda x: tf.nn.softmax(tf.math.cumprod(x, axis=1)),  # no builtin Cumprod
        "custom": lambda x: tf.nn.softmax(tf.math.erfinv(x * 0.5)),  # neither builtin nor Flex
        "no_softmax": lambda x: x * 3.0,  # outside 0..1
        "sigmoid": tf.sigmoid,  # each in 0..1, but they do not sum to 1
        "signed": lambda x: tf.constant([[1.5, -0.25, -0.25]]) + 0.0 * x,  # sums to 1
    }
    head = heads[kind]
    fn = tf.function(lambda x: head(tf.reduce_mean(x, axis=[1, 2])))
    concrete = fn.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if kind == "flex":
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    converter.allow_custom_ops = kind == "custom"
    return converter.convert()
