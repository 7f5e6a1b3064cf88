"""Cross-validation's own options (``crossval.py``), declared once and without the
libraries cross-validation runs on (scikit-learn, TensorFlow), so ``crossval.py --help``
and docs/scripts.md need neither. ``opssat.train.crossval`` reads its defaults here.
"""

from __future__ import annotations

from dataclasses import dataclass

from opssat.core.flags import option

DEFAULT_FOLDS = 5
DEFAULT_SEED = 42
#: Judged in this order; the first is how the spacecraft sees images.
MODES = ("onboard", "ground")


@dataclass
class CrossvalOptions:
    """cross-validation: folds and what judges them"""

    folds: int = option(DEFAULT_FOLDS, "number of folds")
    fold_seed: int = option(DEFAULT_SEED, "seed of the fold assignment; --seed goes to the "
                            "trainer")
    modes: str = option(
        ",".join(MODES), "preprocessing modes to judge each fold in (comma-separated); "
        "'flight' judges in SmartCam's own binaries (needs --smartcam_dir); the trainer's "
        "--preprocess says what the folds train on")
    stress: bool = option(
        True, "judge each fold on its stress set too, when judging onboard input and a bad "
        "label exists (--nostress skips it)")
