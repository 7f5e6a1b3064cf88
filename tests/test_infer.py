"""infer.Classifier and label_image.py: every model flavour gives the right top-1,
odd images classify, bad input is one line, and no TensorFlow import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT, run_script, write_image
from PIL import Image

from opssat.core.errors import UserError
from opssat.data import images
from opssat.judge.confidences import NOT_CLASSIFIED, ranked
from opssat.judge.infer import Classifier, predicted_label

LABELS = ["red", "green", "blue"]
COLOURS = {"red": (220, 25, 25), "green": (25, 220, 25), "blue": (25, 25, 220)}


def labels_of(model: Path) -> Path:
    return model.with_name(f"{model.stem}_labels.txt")


def assert_one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def colour_images(tmp_path: Path) -> dict[str, Path]:
    return {label: write_image(tmp_path / "img" / f"{label}.jpg", colour)
            for label, colour in COLOURS.items()}


def test_float_model_reads_tensor_details_and_classifies(make_tflite, colour_images):
    model = make_tflite(size=32)
    clf = Classifier(model, labels_of(model))
    assert clf.labels == LABELS
    assert clf.input_size == (32, 32)
    assert clf.input_dtype == np.float32 and clf.output_dtype == np.float32
    for label, path in colour_images.items():
        probs, ms = clf.classify_file(path)
        assert probs.dtype == np.float32 and probs.shape == (3,)
        assert ms >= 0
        assert LABELS[int(np.argmax(probs))] == label
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("quantization", "io_dtype"),
    [("float16", "float32"), ("dynamic", "float32"), ("int8", "float32"),
     ("int8", "uint8"), ("int8", "int8")],
)
def test_quantized_variant_matches_float_parent(make_tflite, colour_images, quantization,
                                                io_dtype):
    parent = Classifier(make_tflite(name="parent"), labels=LABELS)
    variant = Classifier(make_tflite(quantization=quantization, io_dtype=io_dtype,
                                     name="variant"), labels=LABELS)
    assert variant.input_dtype == np.dtype(io_dtype)
    for path in colour_images.values():
        want, _ = parent.classify_file(path)
        got, _ = variant.classify_file(path)
        assert int(np.argmax(got)) == int(np.argmax(want))
        # Dequantized with the tensor's scale and zero point: real probabilities.
        assert np.all(got >= 0) and np.all(got <= 1.0 + 1e-6)
        assert got.sum() == pytest.approx(1.0, abs=0.05)
        assert got.max() > 0.5


def test_quantized_input_uses_scale_and_zero_point(make_tflite):
    clf = Classifier(make_tflite(quantization="int8", io_dtype="int8"), labels=LABELS)
    scale, zero = clf._in_scale, clf._in_zero
    x = np.full((32, 32, 3), 0.5, np.float32)
    q = clf._quantize_input(x)
    assert q.dtype == np.int8
    assert q[0, 0, 0] == np.clip(round(0.5 / scale) + zero, -128, 127)
    assert clf._quantize_input(np.full((32, 32, 3), 1e6, np.float32)).max() == 127


@pytest.mark.parametrize("kind", ["rgba_png", "grayscale", "tiny", "palette", "huge_aspect"])
def test_images_in_unexpected_mode_or_size_classify(make_tflite, tmp_path, kind):
    clf = Classifier(make_tflite(), labels=LABELS)
    path = tmp_path / f"{kind}.png"
    if kind == "rgba_png":
        Image.new("RGBA", (40, 30), (20, 20, 230, 255)).save(path)
        expected = "blue"
    elif kind == "grayscale":
        Image.new("L", (40, 30), 128).save(path)
        expected = None
    elif kind == "tiny":
        Image.new("RGB", (2, 1), (20, 230, 20)).save(path)
        expected = "green"
    elif kind == "palette":
        Image.new("RGB", (33, 17), (230, 20, 20)).convert("P").save(path)
        expected = "red"
    else:
        Image.new("RGB", (900, 3), (230, 20, 20)).save(path)
        expected = "red"
    probs, _ = clf.classify_file(path)
    assert probs.shape == (3,) and np.isfinite(probs).all()
    if expected:
        assert LABELS[int(np.argmax(probs))] == expected


def test_onboard_preprocessing_runs(make_tflite, colour_images):
    model = make_tflite()

    def onboard(channels: int) -> Classifier:
        return Classifier(model, labels=LABELS,
                          preprocessing=images.Preprocessing("onboard", channels))

    grey, _ = onboard(1).classify_file(colour_images["red"])
    colour, _ = onboard(3).classify_file(colour_images["red"])
    assert LABELS[int(np.argmax(colour))] == "red"
    assert not np.allclose(grey, colour)


def test_classify_rejects_wrong_input_shape(make_tflite):
    clf = Classifier(make_tflite(), labels=LABELS)
    with pytest.raises(UserError, match="shape"):
        clf.classify(np.zeros((16, 16, 3), np.float32))


def test_constructor_errors(make_tflite, tmp_path):
    model = make_tflite()
    with pytest.raises(UserError, match="not found"):
        Classifier(tmp_path / "missing.tflite", labels=LABELS)
    with pytest.raises(UserError, match="not found"):
        Classifier(model, tmp_path / "missing.txt")
    with pytest.raises(UserError, match="3 values per image but 2 labels"):
        Classifier(model, labels=["a", "b"])
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a flatbuffer\n" * 20)
    with pytest.raises(UserError, match="not a TFLite model"):
        Classifier(text, labels=LABELS)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="not a TFLite model"):
        Classifier(empty, labels=LABELS)


def test_predicted_label_and_ranking():
    probs = np.array([0.2, 0.7, 0.1], np.float32)
    assert predicted_label(probs, LABELS, 0.7) == "green"
    assert predicted_label(probs, LABELS, 0.71) == NOT_CLASSIFIED
    assert ranked(probs, LABELS) == [("green", pytest.approx(0.7)), ("red", pytest.approx(0.2)),
                                     ("blue", pytest.approx(0.1))]
    assert [label for label, _ in ranked(probs, LABELS, top_k=1)] == ["green"]


# --- label_image.py ---------------------------------------------------------------


def test_label_image_prints_every_label_sorted(make_tflite, colour_images):
    model = make_tflite()
    proc = run_script("label_image.py", "--image", colour_images["blue"], "--model_file", model,
                      "--label_file", labels_of(model))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    parsed = [(line.split(": ")[0], float(line.split(": ")[1])) for line in lines]
    assert parsed[0][0] == "blue"
    assert sorted(label for label, _ in parsed) == sorted(LABELS)
    assert [c for _, c in parsed] == sorted((c for _, c in parsed), reverse=True)
    assert proc.stderr.strip() == ""


def test_label_image_json_and_top_k(make_tflite, colour_images, tmp_path):
    model = make_tflite(quantization="int8", io_dtype="uint8")
    proc = run_script("label_image.py", "--image", colour_images["green"], "--model_file", model,
                      "--label_file", labels_of(model), "--json", "--top_k", "2",
                      "--num_threads", "1")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out["predictions"])[0] == "green"
    assert len(out["predictions"]) == 2
    assert out["time_ms"] >= 0


def test_label_image_default_files_and_input_scaling(make_tflite, colour_images, tmp_path):
    """--model_file/--label_file default to the working folder's files; --input_mean
    and --input_std change the input scaling."""
    model = make_tflite()
    work = tmp_path / "work"
    work.mkdir()
    (work / "tflite_model.tflite").write_bytes(model.read_bytes())
    (work / "labels.txt").write_text(labels_of(model).read_text())
    script = PROJECT / "label_image.py"
    base = [script, "--image", colour_images["red"], "--json"]
    plain = run_script(*base, cwd=work, timeout=60)
    assert plain.returncode == 0, plain.stderr
    shifted = run_script(*base, "--input_mean", "255", "--input_std", "1", cwd=work,
                         timeout=60)
    assert shifted.returncode == 0, shifted.stderr
    assert json.loads(plain.stdout)["predictions"] != json.loads(shifted.stdout)["predictions"]


def test_label_image_does_not_import_tensorflow(make_tflite, colour_images):
    model = make_tflite()
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['label_image.py', '--image', {str(colour_images['red'])!r}, "
        f"'--model_file', {str(model)!r}, '--label_file', {str(labels_of(model))!r}]\n"
        "try:\n"
        "    runpy.run_path('label_image.py', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print('TF_LOADED' if any(m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')\n"
        "      for m in sys.modules) else 'TF_ABSENT')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "TF_ABSENT"
    assert proc.stdout.splitlines()[0].startswith("red: ")


@pytest.mark.parametrize("case", ["missing_image", "missing_model", "missing_labels",
                                  "label_count", "not_tflite", "not_image", "bad_top_k",
                                  "no_image_flag"])
def test_label_image_bad_input_is_one_line(make_tflite, colour_images, tmp_path, case):
    model = make_tflite()
    args = {"--image": colour_images["red"], "--model_file": model,
            "--label_file": labels_of(model)}
    if case == "missing_image":
        args["--image"] = tmp_path / "nope.jpg"
    elif case == "missing_model":
        args["--model_file"] = tmp_path / "nope.tflite"
    elif case == "missing_labels":
        args["--label_file"] = tmp_path / "nope.txt"
    elif case == "label_count":
        four = tmp_path / "four.txt"
        four.write_text("a\nb\nc\nd\n")
        args["--label_file"] = four
    elif case == "not_tflite":
        fake = tmp_path / "fake.tflite"
        fake.write_bytes(b"\x89PNG not a model" * 10)
        args["--model_file"] = fake
    elif case == "not_image":
        junk = tmp_path / "junk.jpg"
        junk.write_text("not a jpeg")
        args["--image"] = junk
    if case == "no_image_flag":
        del args["--image"]
    flat = [str(x) for pair in args.items() for x in pair]
    if case == "bad_top_k":
        flat += ["--top_k", "0"]
    line = assert_one_error_line(run_script("label_image.py", *flat))
    assert {"missing_image": "not found", "missing_model": "not found",
            "missing_labels": "not found", "label_count": "4 labels",
            "not_tflite": "not a TFLite model", "not_image": "cannot decode",
            "bad_top_k": "--top_k", "no_image_flag": "--image"}[case] in line


def test_load_uses_model_input_size(make_tflite, colour_images):
    clf = Classifier(make_tflite(size=24), labels=LABELS)
    x = clf.load(colour_images["red"])
    assert x.shape == (24, 24, 3)
    at_24 = images.Preprocessing(size=(24, 24))
    np.testing.assert_array_equal(x, images.load_input(colour_images["red"], at_24))
