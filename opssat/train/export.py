"""Exporting a trained Keras classifier: TFLite float and quantized variants.

Every variant keeps float32 input and output tensors unless a caller asks
otherwise, because SmartCam's on-board classifier feeds and reads only float32.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from opssat.core.cli import NATIVE_CHATTER, quiet_native_stderr
from opssat.core.errors import UserError
from opssat.core.tf_setup import tf
from opssat.onboard import tflite25
from opssat.train.catalog import QUANTIZATIONS

#: The runtime every export must run in: SmartCam's on-board classifier.
TARGET_RUNTIME = tflite25.RUNTIME

#: The variants whose dense (FULLY_CONNECTED) weights must be quantized per tensor.
#: Current TensorFlow quantizes them per output channel: SmartCam's TFLite 2.5 reads a
#: single scale there, so an int8 model answers 1/N for every label, and the dynamic
#: variant's per-channel FULLY_CONNECTED (version 12) does not load at all.
PER_TENSOR_DENSE = ("dynamic", "int8")

RepresentativeData = Callable[[], Iterable[np.ndarray]]

#: In the int8 variant, a layer whose output is off by more than this many
#: quantization steps (root mean square against the same layer computed in
#: float) stays float. Rounding alone gives about 0.3 steps, and every other
#: layer of a fine-tuned EfficientNet-Lite0 stays under 0.6; its stem and first
#: depthwise convolution, batch norm folded in, reach 3.5 and 4.6: their
#: pre-activations span about +-30 and +-100 before ReLU6 clips them to [0, 6],
#: too wide for int8 weights to resolve that output. Those two layers hold
#: about 1,200 weights.
MAX_INT8_ERROR_STEPS = 1.0
#: Calibration images on which each layer's int8 error is measured.
INT8_CHECK_IMAGES = 16

#: Converter notices with nothing to act on: "fully_quantize: ..." for int8 models,
#: and an absl notice that a concrete function without its trackable object takes
#: the older conversion path, the one that is 10x faster here (see _inference_function).
CONVERTER_CHATTER = re.compile(
    f"{NATIVE_CHATTER.pattern}|^fully_quantize: "
    "|^WARNING:absl:Please consider providing the trackable_obj"
)


#: The start of tf.lite.Interpreter's deprecation warning.
INTERPRETER_DEPRECATED = r"\s*Warning: tf\.lite\.Interpreter is deprecated"


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
    ``representative_data`` (a callable yielding float32 batches of one input);
    with float32 input and output, the few layers that int8 cannot represent
    (see MAX_INT8_ERROR_STEPS) stay float.
    ``io_dtype`` other than float32 makes a model SmartCam cannot run; the tests
    use it to check that such a model is refused.
    """
    check_quantization(quantization)
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative data")
    with warnings.catch_warnings(), quiet_native_stderr(CONVERTER_CHATTER):
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        # TensorFlow's quantization debugger (int8) runs tf.lite.Interpreter, which warns
        # in six lines that it is deprecated: the toolkit itself runs LiteRT.
        warnings.filterwarnings("ignore", INTERPRETER_DEPRECATED, UserWarning)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_inference_function(model)])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization in PER_TENSOR_DENSE:
            # TFLite 2.5's FULLY_CONNECTED reads one weight scale (see PER_TENSOR_DENSE).
            converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([b] for b in representative_data())
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != tf.float32:
            converter.inference_input_type = io_dtype
            converter.inference_output_type = io_dtype
        elif quantization == "int8":
            return _runs_on_board(_int8_with_float_outliers(converter, representative_data),
                                  quantization)
        return _runs_on_board(converter.convert(), quantization)


def _runs_on_board(data: bytes, quantization: str) -> bytes:
    """``data`` if SmartCam's TFLite 2.5 can run it, else a UserError: no file that
    SmartCam cannot run is written as a SmartCam model."""
    problems = tflite25.problems(data)
    if problems:
        raise UserError(f"the {quantization} export would not run in {TARGET_RUNTIME} "
                        f"({problems[0]}); nothing was written")
    return data


def _int8_with_float_outliers(converter: tf.lite.TFLiteConverter,
                              representative_data: RepresentativeData) -> bytes:
    """Calibrate once, measure every layer's int8 error on a few calibration
    images, then quantize again with the layers above MAX_INT8_ERROR_STEPS left float."""
    debug = tf.lite.experimental

    def check_images():
        for index, batch in enumerate(representative_data()):
            if index == INT8_CHECK_IMAGES:
                return
            yield [batch]

    debugger = debug.QuantizationDebugger(converter=converter, debug_dataset=check_images)
    debugger.run()
    table = io.StringIO()
    debugger.layer_statistics_dump(table)
    table.seek(0)
    noisy = [row["tensor_name"] for row in csv.DictReader(table)
             if float(row["scale"]) > 0 and float(row["mean_squared_error"]) ** 0.5
             > MAX_INT8_ERROR_STEPS * float(row["scale"])]
    # The debugger's own get_nondebug_quantized_model() ignores the converter's
    # per-tensor dense option, so the calibrated model is quantized here, as it does.
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(
        debugger.calibrated_model,
        disable_per_channel=converter._experimental_disable_per_channel,
        disable_per_channel_for_dense_layers=(
            converter._experimental_disable_per_channel_quantization_for_dense_layers),
        denylisted_nodes=noisy or None,
    )


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
