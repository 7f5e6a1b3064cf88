"""Feature extractors the trainer builds on: a TF Hub handle or SavedModel
folder, or a built-in backbone by name.

Every backbone takes the toolkit's input, float32 images in [0, 1] (SmartCam's
mean 0 and std 255), and maps it to the range its weights expect inside the
model, so an exported classifier always takes the SmartCam input.
"""

from __future__ import annotations

import hashlib
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opssat.core.errors import UserError, first_line
from opssat.core.tf_setup import tf, tf_keras
from opssat.data import stress
from opssat.train.catalog import BUILTIN_BACKBONES, DEFAULT_TFHUB_MODULE

OFFLINE_HINT = "offline, use --backbone efficientnet_lite0 (its weights ship with the toolkit)"


@dataclass
class Backbone:
    """A feature extractor ``model``: (batch, size, size, 3) in [0, 1] -> (batch, features)."""

    name: str
    source: str
    image_size: int
    model: tf_keras.Model

    @property
    def feature_size(self) -> int:
        return int(self.model.output_shape[-1])

    @property
    def identity(self) -> str:
        """What makes two backbones compute the same features (for the feature cache)."""
        return f"{self.name}|{self.source}|{self.image_size}"


def load_backbone(
    backbone: str | None,
    tfhub_module: str = DEFAULT_TFHUB_MODULE,
    image_size: int | None = None,
    weights_file: str | None = None,
    trainable: bool = False,
) -> Backbone:
    """The built-in ``backbone`` if named, else the TF Hub module or SavedModel folder.

    Call ``check_feature_extractor`` on the result outside any distribution scope.
    """
    if backbone is None:
        result = _hub_backbone(tfhub_module, image_size or 224, trainable)
    elif backbone in BUILDERS:
        result = BUILDERS[backbone](image_size or 224, weights_file)
    else:
        raise UserError(
            f"unknown backbone {backbone!r}: use one of {', '.join(BUILTIN_BACKBONES)}, "
            "or --tfhub_module HANDLE"
        )
    result.model.trainable = trainable
    return result


def _wrap(name: str, image_size: int, core: tf_keras.layers.Layer,
          scale: float = 1.0, offset: float = 0.0) -> tf_keras.Model:
    """A Model ``[0, 1] image -> features`` around ``core``, rescaling first if needed."""
    inputs = tf_keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if (scale, offset) != (1.0, 0.0):
        x = tf_keras.layers.Rescaling(scale, offset, name="to_backbone_range")(x)
    try:
        return tf_keras.Model(inputs, core(x), name=name)
    except (ValueError, TypeError) as err:
        raise _size_refused(name, image_size, err) from err


def _hub_backbone(handle: str, image_size: int, trainable: bool) -> Backbone:
    """TF Hub image feature vectors take [0, 1] input as it is.

    ``hub.KerasLayer`` hands the caller's ``training`` flag to a SavedModel whose
    call takes one (TF2 Hub modules and Keras SavedModels do); the trainer always
    passes False, so the module's batch norm stays in inference mode even when its
    weights are fine-tuned. A module without that argument runs as it was saved.
    """
    import tensorflow_hub as hub

    local = Path(handle).expanduser()
    is_local = local.exists()
    if is_local and not (local / "saved_model.pb").is_file():
        raise UserError(f"{handle} is not a SavedModel folder (no saved_model.pb in it)")
    try:
        # A SavedModel's signatures are float32: keep the layer so under mixed precision.
        layer = hub.KerasLayer(str(local) if is_local else handle, trainable=trainable,
                               name="hub_backbone", dtype="float32")
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        if is_local:
            raise UserError(f"cannot load SavedModel {handle}: {err}") from err
        raise UserError(
            f"cannot download TF Hub module {handle} ({type(err).__name__}); {OFFLINE_HINT}, "
            "or pass a local SavedModel folder to --tfhub_module"
        ) from err
    except (ValueError, tf.errors.OpError) as err:
        raise UserError(f"cannot load TF Hub module {handle}: {err}") from err
    source = str(local.resolve()) if is_local else handle
    if is_local:
        source += "@" + _folder_fingerprint(local)
    model = _wrap("hub_backbone", image_size, layer)
    return Backbone("tfhub", source, image_size, model)


def _mobilenet_v2(image_size: int, weights_file: str | None) -> Backbone:
    """Keras' MobileNetV2 expects [-1, 1]."""
    weights = weights_file or "imagenet"
    try:
        core = tf_keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), include_top=False, pooling="avg",
            weights=weights if weights_file is None else None,
        )
        if weights_file is not None:
            core.load_weights(weights_file)
    except (OSError, ValueError) as err:
        raise UserError(f"MobileNetV2 cannot use image size {image_size} or weights "
                        f"{weights}: {err}") from err
    except Exception as err:  # Keras reports a failed download as a bare Exception
        if "URL fetch failure" not in str(err):
            raise
        raise UserError(
            "cannot download MobileNetV2 ImageNet weights; pass --backbone_weights FILE "
            f"(a Keras .h5), or {OFFLINE_HINT}"
        ) from err
    model = _wrap("mobilenet_v2", image_size, core, scale=2.0, offset=-1.0)
    return Backbone("mobilenet_v2", f"keras.applications:{weights}", image_size, model)


def _efficientnet_lite0(image_size: int, weights_file: str | None) -> Backbone:
    """The port maps [0, 1] to its weights' range inside its own model."""
    from opssat.train import efficientnet_lite

    weights = weights_file or "imagenet"
    model = efficientnet_lite.efficientnet_lite0(
        include_top=False, weights=weights, input_size=image_size
    )
    return Backbone("efficientnet_lite0", f"efficientnet-lite0:{weights}", image_size, model)


#: Built-in backbones by name (catalog.BUILTIN_BACKBONES): (image size, weights file or
#: None) -> Backbone.
BUILDERS: dict[str, Callable[[int, str | None], Backbone]] = {
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_lite0": _efficientnet_lite0,
}


#: Luma levels of the exposure statistics: the share of the frame at or above each of the
#: first two (clipped, as the stress rule's saturated pixels; bright), below the last
#: (darker than any real earth or edge frame's 99th percentile).
EXPOSURE_LEVELS = {"clipped": stress.SATURATED, "bright": 200.0, "dark": stress.DARK_P99}
#: The shares (0 to 1) are multiplied by this, into the range of the backbone's strongest
#: features (Lite0's pooled features: 99th percentile 1.9, largest 4.9 on the sample).
EXPOSURE_SCALE = 10.0


class ExposureShares(tf_keras.layers.Layer):
    """(batch, size, size, 3) in [0, 1] -> (batch, 3): the shares of clipped, bright and
    dark pixels (luma), scaled. No weights; in TFLite, only comparisons, casts and means."""

    def call(self, images):
        luma = sum(weight * images[..., channel]
                   for channel, weight in enumerate(stress.LUMA_WEIGHTS))
        shares = [tf.cast(luma >= (EXPOSURE_LEVELS["clipped"] - 0.5) / 255.0, tf.float32),
                  tf.cast(luma >= (EXPOSURE_LEVELS["bright"] - 0.5) / 255.0, tf.float32),
                  tf.cast(luma < EXPOSURE_LEVELS["dark"] / 255.0, tf.float32)]
        return EXPOSURE_SCALE * tf.stack([tf.reduce_mean(s, axis=[1, 2]) for s in shares], -1)


def with_exposure_shares(backbone: Backbone) -> Backbone:
    """``backbone`` whose features end with the image's exposure statistics
    (``--exposure_features``): a head can then tell a clipped frame from a bright valid
    one by what the camera's failure does, not by how white the scene looks."""
    size = backbone.image_size
    inputs = tf_keras.Input((size, size, 3), name="image")
    features = tf_keras.layers.Concatenate(name="with_exposure")(
        [backbone.model(inputs, training=False), ExposureShares(name="exposure")(inputs)])
    model = tf_keras.Model(inputs, features, name=f"{backbone.model.name}_exposure")
    model.trainable = backbone.model.trainable
    return Backbone(backbone.name, f"{backbone.source}+exposure", size, model)


def check_feature_extractor(backbone: Backbone) -> None:
    """Refuse a model that does not map one image batch to one feature vector each."""
    size = backbone.image_size
    try:
        features = backbone.model(tf.zeros((1, size, size, 3)), training=False)
    except (ValueError, TypeError, tf.errors.OpError) as err:
        raise _size_refused(f"{backbone.name} ({backbone.source})", size, err) from err
    if isinstance(features, dict) or len(features.shape) != 2:
        raise UserError(
            f"{backbone.source} is not an image feature extractor: it must return one feature "
            f"vector per image, shape (batch, features), not {getattr(features, 'shape', '?')}"
        )


def _size_refused(name: str, size: int, err: Exception) -> UserError:
    return UserError(f"backbone {name} refuses {size}x{size} images; pick another "
                     f"--image_size ({first_line(err)[:120]})")


def _folder_fingerprint(folder: Path) -> str:
    """A short hash of a SavedModel folder's file names, sizes and times."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
