"""SmartCam's on-board contract: what the OPS-SAT payload feeds a model and
reads back. Every other module takes these values from here."""

from __future__ import annotations

#: Model input size (height, width) configured on board.
INPUT_HEIGHT = 224
INPUT_WIDTH = 224
INPUT_SIZE = (INPUT_HEIGHT, INPUT_WIDTH)
#: The payload fills the input with (pixel - INPUT_MEAN) / INPUT_STD, float32.
INPUT_MEAN = 0.0
INPUT_STD = 255.0
#: Below this top-1 confidence SmartCam leaves an image unclassified.
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
