"""``train_record.json``: how a model was made (every option, the data, each epoch's
metrics, the versions), as one typed record that this module alone writes and reads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from opssat.core.errors import UserError
from opssat.core.paths import TRAIN_RECORD
from opssat.train.options import PathOptions

#: The packages whose versions a record keeps.
VERSIONED_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-hub", "ai-edge-litert", "numpy",
                      "pillow")


@dataclass(kw_only=True)
class TrainRecord:
    """Everything needed to know later how a model was made (the JSON keys, in order)."""

    #: Every trainer option by flag name.
    options: dict[str, Any]
    #: name, source, image_size, feature_size.
    backbone: dict[str, Any]
    labels: list[str]
    #: The runtime the exports are made and checked for (export.TARGET_RUNTIME); None in
    #: records written before the toolkit recorded it.
    target_runtime: str | None = None
    #: {"all"|"training"|"validation": {label: images}}
    class_counts: dict[str, dict[str, int]]
    class_weights: dict[str, float]
    #: The folder the images came from (data/all for an --all_data model).
    image_dir: str | None = None
    #: {"training"|"validation": ["label/name", ...]}: which images trained the model.
    files: dict[str, list[str]] = field(default_factory=dict)
    training_files_sha256: str
    skipped_files: list[str]
    #: Each stage of the schedule with the epochs it ran.
    stages: list[dict[str, Any]]
    #: Per-epoch metrics of all stages in order (loss, accuracy, val_loss, ...).
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    best_epoch_metrics: dict[str, float]
    validation_accuracy: float | None
    #: Top-1 validation accuracy of each TFLite variant, run by LiteRT.
    tflite_validation_accuracy: dict[str, float | None]
    #: {"used": False}, or whether it was reused, its folder and key (and augmented views).
    feature_cache: dict[str, Any]
    versions: dict[str, str]
    fit_time_s: float
    wall_time_s: float
    finished: str
    #: The temperature folded into the last dense layer: {"T": ..., "fitted_on": ...}.
    temperature: dict[str, Any] = field(default_factory=lambda: {"T": 1.0, "fitted_on": None})
    #: The seeds of the members the exported model averages (one: no ensemble).
    ensemble_seeds: list[int] = field(default_factory=list)
    #: Each TFLite variant's file by quantization name (``none``: the float model).
    tflite_files: dict[str, str] = field(default_factory=dict)
    #: sha256 of each output (file or folder) by its path.
    outputs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


def record_path(paths: PathOptions) -> Path:
    """``--record_file``, or train_record.json beside the first output."""
    if paths.record_file:
        return Path(paths.record_file)
    anchor = paths.tflite_output_file or paths.labels_output_file or paths.saved_model_dir
    if anchor is None:
        raise UserError("nothing to write: no output path to put the training record beside")
    return Path(anchor).parent / TRAIN_RECORD


def read_record(path: Path) -> TrainRecord:
    """The record at ``path``; a UserError when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {spec.name for spec in dataclasses.fields(TrainRecord)}
        return TrainRecord(**{k: v for k, v in data.items() if k in names})
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a readable training record: {err}") from err


def versions() -> dict[str, str]:
    """Python's and each VERSIONED_PACKAGES' version."""
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents) in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda handle=handle: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
