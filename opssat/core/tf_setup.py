"""TensorFlow and tf_keras, imported once, here, with the native start-up
notices they print on every start (oneDNN, missing CUDA drivers) held back, so
the toolkit's own messages and one-line errors stay readable.

Package modules take both from here: ``from opssat.core.tf_setup import tf, tf_keras``.
"""

from opssat.core.cli import quiet_native_stderr

with quiet_native_stderr():
    import tensorflow as tf
    import tf_keras

    tf.config.list_physical_devices()  # device discovery prints its notices now

__all__ = ["tf", "tf_keras"]
