"""The static TensorFlow Lite 2.5 check (opssat.onboard.tflite25) and the exports that pass it,
judged against SmartCam's shipped binaries (../shared/smartcam_runtime) when present."""

from __future__ import annotations

from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from helpers import run_script, shared_dir

from opssat.data import images
from opssat.judge import contract
from opssat.judge.infer import Classifier
from opssat.onboard import flight, tflite25
from opssat.train import export

RUNTIME_DIR = shared_dir("smartcam_runtime")
LABELS = ["bad", "earth", "edge"]
SIZE = 32

needs_binaries = pytest.mark.skipif(
    not (RUNTIME_DIR / "k8").is_dir(),
    reason=f"SmartCam's binaries are not in {RUNTIME_DIR}")


def brightness_classifier(hidden: int = 0, size: int = SIZE):
    """A classifier of the mean grey level whose three dense output columns have very
    different scales (8, 0.5, 0.05): reading one scale for all, as TFLite 2.5 does,
    changes its answers. ``hidden`` adds a conv and a wide dense layer (weights enough
    for dynamic-range quantization)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((size, size, 3))
    x = inputs
    if hidden:
        x = tf_keras.layers.Conv2D(32, 3, strides=2, activation="relu")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    if hidden:
        x = tf_keras.layers.Dense(hidden, activation="relu")(x)
    dense = tf_keras.layers.Dense(3, activation="softmax")
    outputs = dense(x)
    model = tf_keras.Model(inputs, outputs)
    width = int(x.shape[-1])
    kernel = np.tile(np.array([[8.0, -0.5, 0.05]], np.float32), (width, 1)) / width * 3
    dense.set_weights([kernel, np.array([-4.0, 1.0, 0.0], np.float32)])
    return model


def calibration(size: int = SIZE):
    rng = np.random.default_rng(0)
    for _ in range(16):
        yield np.full((1, size, size, 3), rng.random(), np.float32)


def tensorflow_default(model, quantization: str) -> bytes:
    """TensorFlow's own default conversion, made outside the toolkit."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        size = int(model.input_shape[1])
        converter.representative_dataset = lambda: ([b] for b in calibration(size))
    return converter.convert()


def with_operator_version(data: bytes, operator: str, version: int,
                          append: bool = False) -> bytes:
    """``data`` with ``operator``'s version changed (or an extra, unused operator code
    appended: the runtime resolves every code of the model when it loads)."""
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    code_value = getattr(schema.BuiltinOperator, operator)
    if append:
        code = schema.OperatorCodeT()
        code.builtinCode = code_value
        code.deprecatedBuiltinCode = min(
            code_value, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
        code.version = version
        model.operatorCodes.append(code)
    else:
        for code in model.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == code_value:
                code.version = version
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(data)
    (tmp_path / "labels.txt").write_text("".join(f"{label}\n" for label in LABELS))
    return path


def bundled_images(count: int) -> list[Path]:
    from opssat.data import sample

    files = [p for folder in images.label_folders(sample.REAL_SAMPLE_DIR)
             for p in images.list_files(folder)]
    return files[:: max(1, len(files) // count)][:count]


# --- the table and the static check ---------------------------------------------------


def test_the_table_names_real_operators_with_positive_versions():
    names = set(vars(schema.BuiltinOperator))
    assert set(tflite25.MAX_VERSIONS) <= names
    assert all(v >= 1 for v in tflite25.MAX_VERSIONS.values())
    assert tflite25.MAX_VERSIONS["FULLY_CONNECTED"] == 9
    assert "CUSTOM" not in tflite25.MAX_VERSIONS


@pytest.mark.parametrize("quantization", export.QUANTIZATIONS)
def test_every_toolkit_export_passes(quantization):
    data = export.tflite_bytes(brightness_classifier(64), quantization, calibration)
    assert tflite25.problems(data) == []


@pytest.mark.slow
def test_a_per_channel_int8_model_from_tensorflow_is_refused_in_one_line(tmp_path):
    path = write(tmp_path, "per_channel",
                 tensorflow_default(brightness_classifier(size=224), "int8"))
    found = tflite25.problems(path.read_bytes())
    assert len(found) == 1
    assert "FULLY_CONNECTED weights" in found[0] and "per channel (3 scales)" in found[0]
    assert "--quantize int8" in found[0]
    proc = run_script("package_smartcam.py", "--check_only", path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.strip().startswith("FAIL")]
    assert len(failed) == 1 and "tfl2.5" in failed[0] and "per channel" in failed[0]


def test_tensorflows_default_dynamic_model_is_refused_naming_the_version():
    found = tflite25.problems(tensorflow_default(brightness_classifier(64), "dynamic"))
    assert any(line.startswith("FULLY_CONNECTED version 12 is newer than TFLite 2.5 runs "
                               "(up to version 9)") for line in found), found


def test_a_too_new_or_unknown_operator_is_refused(make_tflite):
    data = make_tflite(labels=LABELS).read_bytes()
    newer = tflite25.problems(with_operator_version(data, "SOFTMAX", 4))
    assert newer == [f"SOFTMAX version 4 is newer than TFLite 2.5 runs (up to version 3): "
                     f"{tflite25.FIX}"]
    unknown = tflite25.problems(with_operator_version(data, "GELU", 1, append=True))
    assert len(unknown) == 1 and unknown[0].startswith("GELU (version 1) is not an operator")


def test_the_contract_runs_the_check_on_every_model(make_tflite, tmp_path):
    data = make_tflite(labels=LABELS, size=224).read_bytes()
    path = write(tmp_path, "new_softmax", with_operator_version(data, "SOFTMAX", 4))
    report = contract.check_contract(path, tmp_path / "labels.txt")
    assert [p for p in report.problems if p.startswith("tfl2.5: SOFTMAX version 4")]


# --- against SmartCam's shipped runtime --------------------------------------------------


def flight_answers(model_file: Path, files: list[Path]) -> np.ndarray:
    runtime = flight.Runtime(RUNTIME_DIR, "k8")
    with flight.FlightClassifier(runtime, model_file, LABELS, (SIZE, SIZE)) as classifier:
        return np.array([classifier.classify_file(path)[0] for path in files])


def litert_answers(model_file: Path, files: list[Path]) -> np.ndarray:
    preprocessing = images.Preprocessing(mode="onboard", size=(SIZE, SIZE))
    classifier = Classifier(model_file, labels=LABELS, preprocessing=preprocessing)
    return np.array([classifier.classify_file(path)[0] for path in files])


@pytest.mark.slow
@needs_binaries
def test_every_table_entry_loads_and_the_next_version_fails_in_the_binaries(make_tflite):
    """The table is SmartCam's runtime: each operator at its highest version loads, one
    version higher is refused ("Didn't find op for builtin opcode")."""
    base = make_tflite(labels=LABELS, size=SIZE)
    model = base.with_name("probe.tflite")
    runtime = flight.Runtime(RUNTIME_DIR, "k8")
    with flight.FlightClassifier(runtime, model, LABELS, (SIZE, SIZE)) as classifier:
        resized = classifier.load(bundled_images(1)[0])
        kept = resized.with_name("kept.jpeg")
        resized.rename(kept)

        def loads(operator: str, version: int) -> bool:
            model.write_bytes(with_operator_version(base.read_bytes(), operator, version,
                                                    append=True))
            try:
                copy = kept.with_name("probe.jpeg")
                copy.write_bytes(kept.read_bytes())
                classifier.classify(copy)
                return True
            except flight.FlightError as err:
                assert "Didn't find op for builtin opcode" in str(err) \
                    or "builtin_code out of range" in str(err), str(err)
                return False

        wrong = [f"{op} {v}" for op, v in tflite25.MAX_VERSIONS.items() if not loads(op, v)]
        wrong += [f"{op} {v + 1} loads" for op, v in tflite25.MAX_VERSIONS.items()
                  if loads(op, v + 1)]
        assert not wrong
        absent = [name for name in vars(schema.BuiltinOperator) if not name.startswith("_")
                  and name not in tflite25.MAX_VERSIONS and name not in (
                      "CUSTOM", "PLACEHOLDER_FOR_GREATER_OP_CODES")]
        assert [name for name in absent if loads(name, 1)] == []


@pytest.mark.slow
@needs_binaries
def test_refused_models_fail_in_the_binaries_and_exports_agree(tmp_path):
    files = bundled_images(8)
    per_channel = write(tmp_path, "per_channel",
                        tensorflow_default(brightness_classifier(), "int8"))
    wrong = flight_answers(per_channel, files)
    right = litert_answers(per_channel, files)
    assert np.abs(wrong - right).max() > 0.2  # loads, then answers something else

    dynamic = write(tmp_path, "dynamic", tensorflow_default(brightness_classifier(64),
                                                            "dynamic"))
    with pytest.raises(flight.FlightError, match="FULLY_CONNECTED' version '12'"):
        flight_answers(dynamic, files[:1])

    for quantization in export.QUANTIZATIONS:
        for hidden in (0, 64):
            model = write(tmp_path, f"{quantization}_{hidden}", export.tflite_bytes(
                brightness_classifier(hidden), quantization, calibration))
            flown, local = flight_answers(model, files), litert_answers(model, files)
            assert (flown.argmax(1) == local.argmax(1)).all(), quantization
            assert np.abs(flown - local).max() < 0.02, quantization


def test_an_export_smartcam_cannot_run_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(tflite25, "problems", lambda data: ["FULLY_CONNECTED version 12 ..."])
    with pytest.raises(export.UserError, match=r"^the dynamic export would not run in "
                       r"TensorFlow Lite 2\.5\.0 .*FULLY_CONNECTED version 12.*nothing was "
                       "written$"):
        export.tflite_bytes(brightness_classifier(), "dynamic", calibration)
