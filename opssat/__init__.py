"""Ground toolkit for OPS-SAT SmartCam image classifiers.

Importing the package selects the legacy Keras (tf_keras) before TensorFlow is
imported anywhere: TF Hub's ``KerasLayer`` only works inside a tf_keras model.
Importing any ``opssat.<module>`` runs this first, so package modules may import
TensorFlow at the top; scripts and tests import ``opssat`` before TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
