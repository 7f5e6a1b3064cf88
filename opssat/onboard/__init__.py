"""Stage 1, SmartCam as it is on the spacecraft: its contract in numbers (``smartcam``), its
image chain re-implemented in NumPy (``chain``, ``jpeg``), the TensorFlow Lite 2.5 rules of its
runtime (``tflite25``), LiteRT (``litert``) and its own binaries (``flight``).

May import: ``opssat.core``.
"""
