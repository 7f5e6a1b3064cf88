"""Stage 0, the ground floor: what every stage shares and nothing workflow-specific.

User-facing errors (``errors``), atomic writes and staged outputs (``atomic``), the
``repo/<model>/`` layout (``paths``), the scripts' guard and option machinery (``cli``,
``flags``), progress of long steps (``progress``), and TensorFlow imported once
(``tf_setup``).

May import: nothing else in ``opssat``.
"""
