"""Running a TFLite classifier through LiteRT, the interpreter SmartCam uses.

Only ``ai_edge_litert`` is imported (never TensorFlow), so one-image tools start
in a fraction of a second. Quantized input and output tensors are converted with
the tensor's own scale and zero point, so float, float16, dynamic-range and int8
models all read and return the same float32 scale.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from opssat import images, smartcam
from opssat.cli import UserError
from opssat.labels import read_labels, validate_labels

#: What ``predicted_label`` says when the top-1 confidence is below the threshold.
NOT_CLASSIFIED = "n/a"


def _load_interpreter(model_file: Path, num_threads: int | None) -> Interpreter:
    if not model_file.is_file():
        raise UserError(f"model file {model_file} not found: train a model first or pass "
                        "--model_file with an existing .tflite file")
    if num_threads is not None and num_threads < 1:
        raise UserError(f"--num_threads must be 1 or more, not {num_threads}")
    try:
        interpreter = Interpreter(model_path=str(model_file), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{model_file} is not a TFLite model LiteRT can run ({reason}): "
                        "pass the .tflite file written by training") from err
    return interpreter


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class Classifier:
    """One LiteRT interpreter (ai_edge_litert.interpreter.Interpreter) and its labels.

    Built once and reused for every image: loading the model per image is what
    made the original batch labelling slow.
    """

    def __init__(
        self,
        model_file: Path,
        label_file: Path | None = None,
        labels: list[str] | None = None,
        num_threads: int | None = None,
    ) -> None:
        model_file = Path(model_file)
        if labels is None:
            if label_file is None:
                raise UserError("no labels given: pass --label_file with the model's labels.txt")
            labels = read_labels(Path(label_file))
            source = str(label_file)
        else:
            source = "labels"
            labels = validate_labels(list(labels), source)
        self.model_file = model_file
        self.labels: list[str] = labels
        self._interpreter = _load_interpreter(model_file, num_threads)

        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{model_file} has {len(inputs)} inputs and {len(outputs)} outputs: "
                            "an image classifier has one of each")
        self._input, self._output = inputs[0], outputs[0]
        shape = tuple(int(x) for x in self._input["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise UserError(f"{model_file} takes input of shape {list(shape)}: SmartCam feeds "
                            "(1, height, width, 3); export the model with that input")
        self.input_size: tuple[int, int] = (shape[1], shape[2])
        self.input_dtype: np.dtype = np.dtype(self._input["dtype"])
        self.output_dtype: np.dtype = np.dtype(self._output["dtype"])
        n_outputs = int(np.prod(self._output["shape"]))
        if n_outputs != len(labels):
            raise UserError(f"{source} lists {len(labels)} labels but {model_file} has "
                            f"{n_outputs} outputs: use the labels.txt written with this model")
        self._in_scale, self._in_zero = _quantization(self._input)
        self._out_scale, self._out_zero = _quantization(self._output)
        if self._is_integer(self.input_dtype) and self._in_scale == 0:
            raise UserError(f"{model_file} has an integer input without quantization "
                            "parameters: export it with float32 or quantized input")

    @staticmethod
    def _is_integer(dtype: np.dtype) -> bool:
        return np.issubdtype(dtype, np.integer)

    def _quantize_input(self, model_input: np.ndarray) -> np.ndarray:
        if not self._is_integer(self.input_dtype):
            return model_input.astype(self.input_dtype, copy=False)
        info = np.iinfo(self.input_dtype)
        q = np.rint(model_input / np.float32(self._in_scale)) + self._in_zero
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if self._is_integer(self.output_dtype) and self._out_scale != 0:
            return ((raw.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)
        return raw.astype(np.float32)

    def classify(self, model_input: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) float32 in SmartCam scaling -> (float32 probabilities, one per label,
        dequantized; invoke time in ms). Quantized input tensors are quantized with the
        tensor's own scale/zero point."""
        expected = (*self.input_size, 3)
        if model_input.shape != expected:
            raise UserError(f"model input has shape {model_input.shape}, {self.model_file} "
                            f"needs {expected}: preprocess with images.load_input")
        self._interpreter.set_tensor(self._input["index"], self._quantize_input(model_input)[None])
        start = time.perf_counter()
        self._interpreter.invoke()
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        return self._dequantize_output(raw), elapsed_ms

    def load(
        self,
        path: Path,
        preprocess: str = "ground",
        onboard_channels: int = smartcam.ONBOARD_CHANNELS,
        mean: float = smartcam.INPUT_MEAN,
        std: float = smartcam.INPUT_STD,
    ) -> np.ndarray:
        """The model input for ``path`` at this model's input size (safe to call from a
        worker thread while another image is being classified)."""
        return images.load_input(path, self.input_size, preprocess, onboard_channels, mean, std)

    def classify_file(
        self,
        path: Path,
        preprocess: str = "ground",
        onboard_channels: int = smartcam.ONBOARD_CHANNELS,
        mean: float = smartcam.INPUT_MEAN,
        std: float = smartcam.INPUT_STD,
    ) -> tuple[np.ndarray, float]:
        """images.load_input(...) at the model's input size, then classify."""
        return self.classify(self.load(path, preprocess, onboard_channels, mean, std))


def predicted_label(
    probabilities: np.ndarray,
    labels: list[str],
    threshold: float = smartcam.CONFIDENCE_THRESHOLD,
) -> str:
    """The top-1 label, or ``NOT_CLASSIFIED`` when its confidence is below ``threshold``
    (what SmartCam does with an image it is unsure about)."""
    best = int(np.argmax(probabilities))
    return labels[best] if probabilities[best] >= threshold else NOT_CLASSIFIED


def ranked(probabilities: np.ndarray, labels: list[str],
           top_k: int | None = None) -> list[tuple[str, float]]:
    """(label, confidence) pairs, most confident first; ties keep labels.txt order."""
    order = np.argsort(-probabilities, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [(labels[i], float(probabilities[i])) for i in order]
