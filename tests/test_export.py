"""int8 export: layers that int8 cannot represent stay float, the rest is integer."""

import numpy as np

from opssat.core.tf_setup import tf, tf_keras
from opssat.train import export

SIZE = 16


def _conv_classifier(weight_sd: float) -> tf_keras.Model:
    """Conv + ReLU6 + softmax head; a large ``weight_sd`` drives the convolution far
    beyond ReLU6's [0, 6], as EfficientNet-Lite0's stem does once batch norm is folded."""
    inputs = tf_keras.Input((SIZE, SIZE, 3))
    conv = tf_keras.layers.Conv2D(8, 3)
    features = tf_keras.layers.GlobalAveragePooling2D()(tf_keras.layers.ReLU(6.0)(conv(inputs)))
    outputs = tf_keras.layers.Dense(3, activation="softmax")(features)
    model = tf_keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    conv.set_weights([rng.normal(0, weight_sd, (3, 3, 3, 8)).astype(np.float32),
                      np.zeros(8, np.float32)])
    return model


def _calibration():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 1, (8, 1, SIZE, SIZE, 3)).astype(np.float32)
    return lambda: iter(images)


def _float_tensors(data: bytes) -> set[str]:
    """Float32 tensors other than the model's own input and output."""
    interpreter = tf.lite.Interpreter(model_content=data)
    ends = {d["index"] for d in interpreter.get_input_details() + interpreter.get_output_details()}
    return {t["name"] for t in interpreter.get_tensor_details()
            if t["dtype"] == np.float32 and t["index"] not in ends}


def _float_conv(model: tf_keras.Model) -> bool:
    return any("conv2d" in name
               for name in _float_tensors(export.tflite_bytes(model, "int8", _calibration())))


def test_int8_keeps_float_only_the_layers_it_cannot_represent(monkeypatch):
    assert not _float_conv(_conv_classifier(0.05))
    noisy = _conv_classifier(30.0)
    assert _float_conv(noisy)
    monkeypatch.setattr(export, "MAX_INT8_ERROR_STEPS", np.inf)
    assert not _float_tensors(export.tflite_bytes(noisy, "int8", _calibration()))


def test_int8_with_float_layers_keeps_float_io_and_answers():
    model = _conv_classifier(30.0)
    interpreter = tf.lite.Interpreter(
        model_content=export.tflite_bytes(model, "int8", _calibration()))
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    interpreter.allocate_tensors()
    for image in _calibration()():
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        expected = model(image, training=False).numpy()
        assert np.argmax(interpreter.get_tensor(out["index"])) == np.argmax(expected)
