"""SmartCam's on-board contract in numbers: what the OPS-SAT payload feeds a model
and reads back. Every other module takes these values from here, so this module
imports nothing of the toolkit.

The check that a TFLite file honours the contract is in ``contract``; the package
that ships it, with its threshold advice, in ``package``.
"""

from __future__ import annotations

#: Model input size (height, width) configured on board.
INPUT_HEIGHT = 224
INPUT_WIDTH = 224
INPUT_SIZE = (INPUT_HEIGHT, INPUT_WIDTH)
#: The payload fills the input with (pixel - INPUT_MEAN) / INPUT_STD, float32.
INPUT_MEAN = 0.0
INPUT_STD = 255.0
#: Below this top-1 confidence SmartCam deletes the image on board (a metadata row remains).
CONFIDENCE_THRESHOLD = 0.70
#: The labels of SmartCam's default model, in labels.txt order.
DEFAULT_LABELS = ("bad", "earth", "edge")
#: The on-board classifier only feeds and reads float32 tensors.
TENSOR_DTYPE = "float32"
#: The on-board resizer's channel count (1: grayscale) and JPEG quality.
ONBOARD_CHANNELS = 1
ONBOARD_JPEG_QUALITY = 90
#: Where the payload keeps a model's files.
ONBOARD_MODELS_DIR = "/home/exp1000/models"

#: The file names SmartCam expects in ``ONBOARD_MODELS_DIR/<name>/``.
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
#: The accuracy the images kept above the suggested threshold should reach.
DEFAULT_TARGET_ACCURACY = 0.95
