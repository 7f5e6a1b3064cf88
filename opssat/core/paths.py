"""The ``repo/<model>/`` layout. Every path the toolkit reads or writes is named
here, so no other module builds path strings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from opssat.core.errors import UserError

#: The folder that holds one sub-folder per model: the project's ``repo/``, or
#: ``$OPSSAT_REPO`` when set (the tests point it at a temporary folder).
#: An empty value counts as unset, as in the shell scripts (``${OPSSAT_REPO:-...}``).
#: The toolkit's checkout: the folder that holds the scripts and ``opssat/``.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
REPO_ROOT = Path(os.environ.get("OPSSAT_REPO") or PROJECT_ROOT / "repo")

#: The training record's file name (train.py writes it beside the TFLite model).
TRAIN_RECORD = "train_record.json"

#: ASCII letters, digits, '_' and '-', not starting with '-', at most 100 characters
#: (a file system allows 255 bytes per name): safe in a folder name, a shell command
#: and a config key. create_dirs.sh applies the same rule.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,99}")


def check_model_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is a safe folder name, else raise a UserError about ``what``."""
    if not _MODEL_NAME.fullmatch(name):
        raise UserError(f"invalid {what} {name!r}: use ASCII letters, digits, '_' or '-', "
                        "not starting with '-', at most 100 characters")
    return name


#: Sub-folder of a model folder for the model trained on all of data/all.
ALL_DATA = "all_data"


@dataclass(frozen=True)
class ModelPaths:
    """All paths of one model folder, ``<root>/<name>/``."""

    name: str
    root: Path = REPO_ROOT

    @property
    def model_dir(self) -> Path:
        return self.root / self.name

    @property
    def all_data(self) -> ModelPaths:
        """``<model>/all_data/``: the model trained on all of data/all, the one to uplink
        once cross-validation has chosen the recipe (``--all_data``)."""
        return ModelPaths(ALL_DATA, self.model_dir)

    # data/
    @property
    def data_dir(self) -> Path:
        return self.model_dir / "data"

    @property
    def all_dir(self) -> Path:
        return self.data_dir / "all"

    @property
    def training_dir(self) -> Path:
        return self.data_dir / "training"

    @property
    def test_dir(self) -> Path:
        return self.data_dir / "test"

    @property
    def classification_dir(self) -> Path:
        return self.data_dir / "classification"

    @property
    def unlabelled_dir(self) -> Path:
        """Thumbnails nobody has labelled yet: suggest_labels.py ranks them, relabel.py
        moves each decided one into ``data/all/<label>/``."""
        return self.data_dir / "unlabelled"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def split_csv(self) -> Path:
        return self.model_dir / "split.csv"

    # training outputs
    @property
    def saved_model_dir(self) -> Path:
        return self.model_dir / "saved_model"

    @property
    def tflite_model(self) -> Path:
        return self.model_dir / "tflite_model.tflite"

    def tflite_variant(self, quantization: str) -> Path:
        return tflite_variant(self.tflite_model, quantization)

    @property
    def labels_file(self) -> Path:
        return self.model_dir / "labels.txt"

    @property
    def summaries_dir(self) -> Path:
        return self.model_dir / "summaries"

    @property
    def train_record(self) -> Path:
        return self.model_dir / TRAIN_RECORD

    @property
    def cache_dir(self) -> Path:
        return self.model_dir / "cache"

    # evaluation outputs
    def confidences_csv(self, preprocess: str = "ground") -> Path:
        """``confidences.csv`` for ground preprocessing, ``confidences_<mode>.csv`` otherwise."""
        return self.classification_dir / f"confidences{self._mode_suffix(preprocess)}.csv"

    def classified_dir(self, preprocess: str = "ground") -> Path:
        """``classified/`` (``classified_<mode>/``): copies of images by predicted label."""
        return self.classification_dir / f"classified{self._mode_suffix(preprocess)}"

    def unclassified_dir(self, preprocess: str = "ground") -> Path:
        """``unclassified/`` (``unclassified_<mode>/``): images below the threshold."""
        return self.classification_dir / f"unclassified{self._mode_suffix(preprocess)}"

    @property
    def report_md(self) -> Path:
        return self.classification_dir / "report.md"

    @property
    def report_html(self) -> Path:
        """The self-contained review page calc_perf writes beside report.md."""
        return self.classification_dir / "report.html"

    def plot_png(self, name: str) -> Path:
        """A calc_perf plot, ``classification/<name>.png``."""
        return self.classification_dir / f"{name}.png"

    # cross-validation and label review
    @property
    def crossval_dir(self) -> Path:
        return self.model_dir / "crossval"

    def oof_csv(self, preprocess: str = "onboard") -> Path:
        """Out-of-fold confidences of cross-validation, in the confidences.csv format."""
        return self.crossval_dir / f"oof_confidences{self._mode_suffix(preprocess)}.csv"

    @property
    def review_dir(self) -> Path:
        return self.data_dir / "review"

    @property
    def label_issues_csv(self) -> Path:
        return self.review_dir / "label_issues.csv"

    @property
    def review_html(self) -> Path:
        return self.review_dir / "review.html"

    @property
    def unlabelled_queue_csv(self) -> Path:
        """suggest_labels.py's queue: the unlabelled images, least sure first."""
        return self.review_dir / "unlabelled_queue.csv"

    @property
    def unlabelled_html(self) -> Path:
        """suggest_labels.py's page, where each queued burst gets its label."""
        return self.review_dir / "unlabelled.html"

    @property
    def relabel_log(self) -> Path:
        """The journal of relabel batches, read by ``relabel.py --undo``."""
        return self.data_dir / "relabel_log.csv"

    @staticmethod
    def _mode_suffix(preprocess: str) -> str:
        return "" if preprocess == "ground" else f"_{preprocess}"

    # deployment
    @property
    def smartcam_root(self) -> Path:
        return self.model_dir / "smartcam"

    def smartcam_dir(self, package_name: str) -> Path:
        return self.smartcam_root / package_name

    @property
    def rehearsal_dir(self) -> Path:
        """``rehearsal/``: the last flight rehearsal (rehearse.py): SmartCam's work folder,
        ``rehearsal.csv`` and ``summary.json``."""
        return self.model_dir / "rehearsal"

    @property
    def rehearsal_csv(self) -> Path:
        return self.rehearsal_dir / "rehearsal.csv"

    @property
    def rehearsal_summary(self) -> Path:
        return self.rehearsal_dir / "summary.json"

    def require_model_dir(self) -> ModelPaths:
        """Raise a UserError naming the fix when the model folder does not exist."""
        if not self.model_dir.is_dir():
            raise UserError(
                f"model folder {self.model_dir} does not exist: run ./create_dirs.sh {self.name}"
            )
        return self


def tflite_variant(float_model: Path, quantization: str) -> Path:
    """``<stem>_<quantization>.tflite`` beside the float model ``<stem>.tflite``."""
    return float_model.with_name(f"{float_model.stem}_{quantization}.tflite")


def model_paths(name: str, root: Path | None = None) -> ModelPaths:
    """Checked ``ModelPaths`` for a model name given on a command line."""
    if root is None:
        root = Path(os.environ.get("OPSSAT_REPO") or REPO_ROOT)
    return ModelPaths(check_model_name(name), root)


def outside_root(root: Path, *targets: Path | str | None, what: str = "target") -> str | None:
    """Why the first target that leaves ``root`` once symlinks are resolved (in the
    target, its folders or ``root`` itself) is refused, or None when all stay inside:
    one rule for every path a script writes or moves. ``root`` is ``repo/<model>/``, or
    ``data/all`` for relabelling."""
    base = Path(root).resolve()
    for target in targets:
        if not target:
            continue
        resolved = Path(target).resolve()  # a missing tail is kept as it is
        if resolved != base and base not in resolved.parents:
            return (f"{what} {target} leads outside {root} (to {resolved}): a symlink or "
                    "a '..' in a name")
    return None


def check_inside(root: Path, *targets: Path | str | None, what: str = "target") -> None:
    """``outside_root``'s refusal as a UserError, checked before anything changes."""
    if problem := outside_root(root, *targets, what=what):
        raise UserError(f"{problem}; nothing was changed")
