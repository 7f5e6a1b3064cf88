"""Stage 4, making a model: the trainer's options (``options``) and the names they offer,
declared without TensorFlow (``catalog``), named recipes (``recipes``), backbones and their weights
(``backbones``, ``efficientnet_lite``, ``torch_pickle``), the input pipeline (``dataset``,
``prepared``, ``augment``), the trainer (``trainer``, ``averaging``, ``export``, ``record``), its
command line (``make_image_classifier``), named recipes (``recipes``) and cross-validation
(``crossval``).

May import: ``opssat.core``, ``opssat.onboard``, ``opssat.data``, ``opssat.judge``.
"""
