"""Stage 2, the labelled images: opening and preparing images (``images``), the preprocessing
option group and value every command line shares (``preprocess``), ``labels.txt``
(``labels``), bursts, splits and folds (``split``), the bundled sample (``sample``), top-up and
stress families (``topup``, ``stress``), and journaled relabelling, from data/unlabelled too
(``relabel``).

May import: ``opssat.core``, ``opssat.onboard``.
"""
