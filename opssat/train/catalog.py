"""The names the trainer's options offer, declared without TensorFlow: built-in
backbones, the default TF Hub module and the export variants. ``--help``, the docs and
the option checks read them here in a fraction of a second; ``backbones`` and
``export`` build what they name (a test checks that both lists agree).
"""

#: The backbone of the original toolkit's train_model.sh.
DEFAULT_TFHUB_MODULE = "https://tfhub.dev/google/tf2-preview/mobilenet_v2/feature_vector/4"
#: Built-in backbones by name (``backbones.BUILDERS`` has one builder for each).
BUILTIN_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
#: ``none`` is the float model; the others are extra files beside it (``export``).
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
