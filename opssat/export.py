"""Exporting a trained Keras classifier: TFLite float and quantized variants.

Every variant keeps float32 input and output tensors unless a caller asks
otherwise, because SmartCam's on-board classifier feeds and reads only float32.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from opssat.cli import NATIVE_CHATTER, UserError, quiet_native_stderr
from opssat.tf_setup import tf

#: ``none`` is the float model; the others are extra files beside it.
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")

RepresentativeData = Callable[[], Iterable[np.ndarray]]

#: Converter notices with nothing to act on: "fully_quantize: ..." for int8 models,
#: and an absl notice that a concrete function without its trackable object takes
#: the older conversion path, the one that is 10x faster here (see _inference_function).
CONVERTER_CHATTER = re.compile(
    f"{NATIVE_CHATTER.pattern}|^fully_quantize: "
    "|^WARNING:absl:Please consider providing the trackable_obj"
)


def check_quantization(name: str) -> str:
    if name not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {name!r}: use one of {', '.join(QUANTIZATIONS)}")
    return name


def tflite_bytes(
    model: tf.keras.Model,
    quantization: str = "none",
    representative_data: RepresentativeData | None = None,
    io_dtype: tf.DType = tf.float32,
) -> bytes:
    """Convert ``model`` to a TFLite flatbuffer with builtin ops only.

    ``int8`` quantizes weights and activations, calibrated on
    ``representative_data`` (a callable yielding float32 batches of one input).
    ``io_dtype`` other than float32 makes a model SmartCam cannot run; the tests
    use it to check that such a model is refused.
    """
    check_quantization(quantization)
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative data")
    with warnings.catch_warnings(), quiet_native_stderr(CONVERTER_CHATTER):
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_inference_function(model)])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([b] for b in representative_data())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != tf.float32:
            converter.inference_input_type = io_dtype
            converter.inference_output_type = io_dtype
        return converter.convert()


def _inference_function(model: tf.keras.Model) -> tf.types.experimental.ConcreteFunction:
    """The model's inference call for one image (SmartCam classifies one at a time).

    Converting this function gives the same ops as ``from_keras_model`` and is
    much faster: that path, like passing the model as ``trackable_obj``, first
    saves the whole model to trace every layer (about 40 s for
    EfficientNet-Lite0, 2-3 s this way). TensorFlow 2.21 calls this path
    deprecated; requirements.txt pins it, and the tests check the result.
    """
    spec = tf.TensorSpec([1, *model.input_shape[1:]], tf.float32, name="image")
    return tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
