"""The EfficientNet-Lite0 port: architecture, ImageNet weights from the shipped
.pth (real photographs classified right), the cache, bad weight files, TFLite
export, and (where torch is installed) equality with the PyTorch reference."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from PIL import Image

from opssat.core.errors import UserError
from opssat.train import efficientnet_lite as el
from opssat.train.torch_pickle import load_state_dict

CAT_CLASSES = range(281, 286)
COFFEE_CLASSES = (967, 968)
#: The ops an on-board Lite0 may use; all TFLite builtins.
BUILTIN_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN", "RELU6",
               "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("opssat_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPSSAT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def imagenet_model(cache_dir: Path) -> tf_keras.Model:
    """Converted from the shipped .pth into the empty test cache: one build per module."""
    assert not any(cache_dir.iterdir())
    return el.efficientnet_lite0(include_top=True)


@pytest.fixture(scope="module")
def shipped_state() -> dict[str, np.ndarray]:
    return load_state_dict(el.imagenet_weights_file())


def _photo(name: str) -> np.ndarray:
    """A scikit-image photograph as the model takes it: 224x224 RGB in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((224, 224),
                                                                        Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def _run(model: tf_keras.Model, x: np.ndarray) -> np.ndarray:
    return model(x, training=False).numpy()


def _random_inputs(count: int = 3, size: int = 224) -> np.ndarray:
    return np.random.default_rng(7).random((count, size, size, 3), dtype=np.float32)


def test_architecture_without_weights() -> None:
    features = el.efficientnet_lite0(weights=None)
    assert features.input_shape == (None, 224, 224, 3)
    assert features.output_shape == (None, 1280)
    layers = features.layers
    assert sum(isinstance(layer, tf_keras.layers.DepthwiseConv2D) for layer in layers) == 16
    assert sum(isinstance(layer, tf_keras.layers.Add) for layer in layers) == 9
    relus = [layer for layer in layers if isinstance(layer, tf_keras.layers.ReLU)]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    small = el.efficientnet_lite0(include_top=True, weights=None, input_size=96)
    assert small.input_shape == (None, 96, 96, 3)
    assert small.output_shape == (None, 1000)


def test_rejects_a_too_small_input_size() -> None:
    with pytest.raises(UserError, match="input size"):
        el.efficientnet_lite0(weights=None, input_size=8)


@pytest.mark.slow
def test_imagenet_weights_classify_real_photographs(imagenet_model: tf_keras.Model) -> None:
    logits = _run(imagenet_model, np.stack([_photo("chelsea"), _photo("coffee")]))
    assert logits.shape == (2, 1000)
    top1 = logits.argmax(axis=1)
    assert top1[0] in CAT_CLASSES
    assert top1[1] in COFFEE_CLASSES


@pytest.mark.slow
def test_input_mapping_matches_the_stem_batch_norm_statistics(
        imagenet_model: tf_keras.Model) -> None:
    """The stem BN's running variance records the scale of the input the weights
    were trained on: with the right mapping, photographs land near it (ratio
    ~0.7 for (255x-127)/128; ImageNet mean/std gives ~3.3, raw [0, 1] ~0.17)."""
    photos = np.stack([_photo(name) for name in ("astronaut", "chelsea", "coffee", "rocket")])
    stem = tf_keras.Model(imagenet_model.input, imagenet_model.get_layer("stem_conv").output)
    activations = _run(stem, photos).reshape(-1, 32)
    running_var = imagenet_model.get_layer("stem_bn").moving_variance.numpy()
    live = running_var > 1e-3
    ratio = np.median(activations.var(axis=0)[live] / running_var[live])
    assert 0.4 < ratio < 1.6


@pytest.mark.slow
def test_features_are_the_pooled_head_of_the_classifier(imagenet_model: tf_keras.Model) -> None:
    features = el.efficientnet_lite0(include_top=False)
    x = _random_inputs(2)
    pooled = _run(features, x)
    assert pooled.shape == (2, 1280)
    fc = imagenet_model.get_layer("fc")
    np.testing.assert_allclose(fc(pooled).numpy(), _run(imagenet_model, x),
                               atol=1e-4)


@pytest.mark.slow
def test_cache_is_keyed_by_sha256_and_skips_the_pth(
        imagenet_model: tf_keras.Model, cache_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = cache_dir / f"efficientnet_lite0_imagenet.{el.WEIGHTS_SHA256[:16]}.weights.h5"
    assert [p.name for p in cache_dir.iterdir()] == [cache.name]
    monkeypatch.setattr(el, "imagenet_weights_file", lambda: tmp_path / "gone.pth")
    started = time.perf_counter()
    cached = el.efficientnet_lite0(include_top=True)
    assert time.perf_counter() - started < 30
    x = _random_inputs(2)
    np.testing.assert_array_equal(_run(cached, x), _run(imagenet_model, x))


@pytest.mark.slow
def test_damaged_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  imagenet_model: tf_keras.Model) -> None:
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(tmp_path))
    cache = el.cache_file(el.WEIGHTS_SHA256)
    cache.write_bytes(b"not hdf5")
    model = el.efficientnet_lite0(include_top=True)
    x = _random_inputs(1)
    np.testing.assert_allclose(_run(model, x), _run(imagenet_model, x),
                               atol=1e-6)
    assert cache.stat().st_size > 1_000_000


def test_cache_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("OPSSAT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert el.cache_file("ab" * 32) == tmp_path / "opssat" / (
        "efficientnet_lite0_imagenet.abababababababab.weights.h5")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert el.cache_dir() == tmp_path / "home" / ".cache" / "opssat"


def test_tampered_weights_are_refused_and_nothing_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(cache))
    tampered = tmp_path / "efficientnet-lite0-57934424.pth"
    raw = bytearray(el.imagenet_weights_file().read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 4] = b"\xff\xff\xff\x7f"
    tampered.write_bytes(bytes(raw))
    monkeypatch.setattr(el, "imagenet_weights_file", lambda: tampered)
    with pytest.raises(UserError, match=r"sha256 .*expected 579344248a93e230.*reinstall") as err:
        el.efficientnet_lite0()
    assert "\n" not in str(err.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_missing_imagenet_file_is_a_user_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(el, "imagenet_weights_file", lambda: tmp_path / "gone.pth")
    with pytest.raises(UserError, match="cannot read weights file .*gone.pth.*reinstall"):
        el.efficientnet_lite0()


def test_truncated_pth_path_is_refused_and_nothing_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(cache))
    short = tmp_path / "short.pth"
    short.write_bytes(el.imagenet_weights_file().read_bytes()[:-1000])
    with pytest.raises(UserError, match="truncated"):
        el.efficientnet_lite0(weights=short)
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.slow
def test_pth_with_a_renamed_tensor_is_refused_and_nothing_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(cache))
    raw = el.imagenet_weights_file().read_bytes()
    assert raw.count(b"_fc.bias") == 1
    renamed = tmp_path / "renamed.pth"
    renamed.write_bytes(raw.replace(b"_fc.bias", b"_fc.biaz"))
    with pytest.raises(UserError, match="tensor '_fc.bias' is missing"):
        el.efficientnet_lite0(weights=renamed)
    assert not cache.exists() or not any(cache.iterdir())


@pytest.mark.slow
def test_pth_path_is_converted_and_cached_by_its_sha256(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, imagenet_model: tf_keras.Model) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("OPSSAT_CACHE_DIR", str(cache))
    copy = shutil.copy(el.imagenet_weights_file(), tmp_path / "mine.pth")
    model = el.efficientnet_lite0(include_top=True, weights=copy)
    assert [p.name for p in cache.iterdir()] == [
        f"efficientnet_lite0_pth.{el.WEIGHTS_SHA256[:16]}.weights.h5"]
    x = _random_inputs(1)
    np.testing.assert_allclose(_run(model, x), _run(imagenet_model, x),
                               atol=1e-6)


def test_conversion_checks_every_tensor(shipped_state: dict[str, np.ndarray]) -> None:
    model, names = el._build(224)
    missing = {k: v for k, v in shipped_state.items() if k != "_blocks.7._bn1.running_var"}
    with pytest.raises(ValueError, match=r"'_blocks\.7\._bn1\.running_var' is missing"):
        el.convert_state_dict(model, names, missing)
    reshaped = dict(shipped_state, **{"_conv_head.weight":
                                      shipped_state["_conv_head.weight"].reshape(320, 1280, 1, 1)})
    with pytest.raises(ValueError, match=r"\(1, 1, 1280, 320\).*expected \(1, 1, 320, 1280\)"):
        el.convert_state_dict(model, names, reshaped)
    extra = dict(shipped_state, **{"_blocks.16._bn0.weight": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match=r"1 unexpected tensor.*_blocks\.16\._bn0\.weight"):
        el.convert_state_dict(model, names, extra)


def test_unknown_weights_argument_is_a_user_error() -> None:
    with pytest.raises(UserError, match="not found; pass weights='imagenet'"):
        el.efficientnet_lite0(weights="imagenett")


@pytest.mark.slow
def test_feature_extractor_converts_to_builtin_tflite(imagenet_model: tf_keras.Model) -> None:
    """from_keras_model gives the same graph but takes ~40 s here (it traces every
    layer to save a SavedModel first); a concrete function converts in seconds."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    features = el.efficientnet_lite0(include_top=False)
    function = tf.function(lambda x: features(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, 224, 224, 3], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(
        model_content=converter.convert(),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.float32 and list(inp["shape"]) == [1, 224, 224, 3]
    assert out["dtype"] == np.float32 and list(out["shape"]) == [1, 1280]
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert ops <= BUILTIN_OPS, f"non-builtin or unexpected ops: {ops - BUILTIN_OPS}"
    x = _photo("coffee")[None]
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]),
                               _run(features, x), atol=1e-3)


def test_matches_the_pytorch_reference(imagenet_model: tf_keras.Model) -> None:
    """Run with torch==2.13.0 and efficientnet-lite-pytorch==0.1.0 installed (see README)."""
    torch = pytest.importorskip("torch")
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(el.imagenet_weights_file())).eval()
    x = _random_inputs(4)
    trained_input = (x * 255.0 - 127.0) / 128.0  # EfficientNet-Lite's own preprocessing
    with torch.no_grad():
        expected = reference(torch.from_numpy(trained_input.transpose(0, 3, 1, 2).copy()))
    logits = _run(imagenet_model, x)
    assert np.abs(logits - expected.numpy()).max() < 1e-3
