"""Training data: the labelled file list, its stratified validation split, the
streaming ``tf.data`` input pipeline, and the on-disk backbone-feature cache."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opssat.core import atomic, progress
from opssat.core.errors import UserError, warn
from opssat.core.tf_setup import tf
from opssat.data import images, split
from opssat.data.images import Preprocessing


@dataclass
class LabelledFiles:
    """Image paths with their label index; ``labels`` is the sorted label order."""

    labels: list[str]
    paths: list[Path]
    targets: np.ndarray  # int label index per path
    skipped: list[Path] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: np.ndarray) -> LabelledFiles:
        return LabelledFiles(self.labels, [self.paths[i] for i in indices], self.targets[indices])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.targets, minlength=len(self.labels))
        return {label: int(n) for label, n in zip(self.labels, counts, strict=True)}

    def fingerprint(self) -> str:
        """Hash of file names, sizes, times and labels: changes when the data changes.

        Taken once, when first asked (the trainer asks as it lists the files), so a
        file removed while training runs cannot crash the run at its end; a file already
        gone is hashed as missing."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for path, target in zip(self.paths, self.targets, strict=True):
                try:
                    stat = path.stat()
                    seen = f"{stat.st_size}|{stat.st_mtime_ns}"
                except OSError:
                    seen = "missing"
                digest.update(f"{path}|{seen}|{target}\n".encode("utf-8", "surrogateescape"))
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def list_labelled_files(image_dir: Path) -> LabelledFiles:
    """Images under ``image_dir/<label>/``; labels sorted, files that are not images skipped."""
    if not image_dir.is_dir():
        raise UserError(f"image folder {image_dir} not found: run split_data.py first")
    folders = images.label_folders(image_dir)
    paths: list[Path] = []
    targets: list[int] = []
    skipped: list[Path] = []
    labels: list[str] = []
    for folder in folders:
        files = images.list_files(folder)
        good = [p for p in files if images.has_image_header(p)]
        skipped += [p for p in files if p not in good]
        if not good:
            warn(f"{folder} holds no readable image; label {folder.name!r} left out")
            continue
        labels.append(folder.name)
        paths += good
        targets += [len(labels) - 1] * len(good)
    for path in skipped:
        warn(f"skipped {path}: not a readable image")
    if len(labels) < 2:
        raise UserError(
            f"{image_dir} needs at least two label folders with images "
            f"(found {len(labels)}): put images in {image_dir}/<label>/"
        )
    return LabelledFiles(labels, paths, np.asarray(targets, dtype=np.int64), skipped)


def stratified_split(
    files: LabelledFiles, validation_fraction: float, seed: int,
    group_seconds: float = split.DEFAULT_GROUP_SECONDS,
) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices: the train/test split's rule, applied again.

    Per label, close to ``validation_fraction`` of the images, in whole
    acquisition-time groups so near-duplicates cannot flatter the validation
    accuracy; every label with two images or more on both sides; the same
    on every run for a seed.
    """
    if validation_fraction <= 0:
        return np.arange(len(files), dtype=np.int64), np.zeros(0, dtype=np.int64)
    labels = [files.labels[t] for t in files.targets]
    plan = split.plan_split(zip(files.paths, labels, strict=True), validation_fraction * 100,
                            seed, group_seconds)
    validation = {a.path for a in plan.assignments if a.side == split.TEST}
    is_validation = np.array([p in validation for p in files.paths])
    return np.flatnonzero(~is_validation), np.flatnonzero(is_validation)


# --- tf.data ---------------------------------------------------------------------


def load_image(path: str | bytes | Path, preprocessing: Preprocessing) -> np.ndarray:
    """A float32 model input of ``path``; zeros with a warning if it cannot be decoded,
    so one bad file does not stop a training run."""
    name = path.decode() if isinstance(path, bytes) else path
    try:
        return images.load_input(name, preprocessing)
    except images.UnreadableImageError as err:
        warn(f"{err}; using a black image")
        return np.zeros((*preprocessing.size, 3), np.float32)


def image_dataset(
    files: LabelledFiles,
    preprocessing: Preprocessing,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    sample_weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Stream (images, one-hot labels[, weights]) batches from disk.

    Decoding runs in parallel (AUTOTUNE) through the toolkit's own preprocessing,
    so training sees exactly what evaluation and the on-board emulation see.
    """
    def load(path: bytes) -> np.ndarray:
        pixels = load_image(path, preprocessing)
        return augment(pixels) if augment else pixels

    def decode(path: tf.Tensor) -> tf.Tensor:
        image = tf.numpy_function(load, [path], tf.float32, stateful=augment is not None)
        image.set_shape((*preprocessing.size, 3))
        return image

    dataset = shuffled(files, np.asarray([str(p) for p in files.paths]), shuffle_seed,
                        sample_weights)
    dataset = dataset.map(lambda path, *rest: (decode(path), *rest),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def shuffled(files: LabelledFiles, items: np.ndarray, shuffle_seed: int | None,
              sample_weights: np.ndarray | None) -> tf.data.Dataset:
    """(item, one-hot label[, weight]) in a seeded order: the same for images and features."""
    one_hot = np.eye(len(files.labels), dtype=np.float32)[files.targets]
    columns: tuple = (items, one_hot)
    if sample_weights is not None:
        columns += (sample_weights[files.targets].astype(np.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset


# --- feature cache -----------------------------------------------------------------


class FeatureCache:
    """Backbone features of a file list, computed once and kept on disk.

    ``features.npy`` is filled batch by batch through a memory map, so memory
    stays flat however many images there are; ``meta.json`` is written last and
    holds the key (backbone, preprocessing, file list), so a cache from another
    backbone or file list, or a half-written one, is rebuilt and the log says why.
    """

    def __init__(self, folder: Path, backbone_identity: str, preprocessing: Preprocessing,
                 files: LabelledFiles, augmentation: str = "") -> None:
        self.folder = folder
        self.key = {
            "backbone": backbone_identity,
            "preprocessing": preprocessing.identity,
            "files": files.fingerprint(),
            "count": len(files),
        }
        if augmentation:
            self.key["augmentation"] = augmentation
        self.features_path = folder / "features.npy"
        self.meta_path = folder / "meta.json"

    def stale_reason(self) -> str | None:
        """None when the cache on disk matches the key, else why it cannot be used."""
        if not self.meta_path.is_file():
            return "no cache yet"
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return "its meta.json is unreadable"
        for name, value in self.key.items():
            if meta.get("key", {}).get(name) != value:
                return f"the {name} changed"
        try:
            features = np.load(self.features_path, mmap_mode="r")
        except (OSError, ValueError):
            return "features.npy is missing or corrupt"
        if features.shape != tuple(meta.get("shape", ())):
            return "features.npy is truncated"
        return None

    def load_or_build(self, extract: Callable[[np.ndarray], np.ndarray],
                      batches: tf.data.Dataset, feature_size: int) -> tuple[np.ndarray, bool]:
        """(read-only memory-mapped features, whether they came from the cache)."""
        reason = self.stale_reason()
        if reason is None:
            print(f"feature cache: reusing {self.folder}")
            return np.load(self.features_path, mmap_mode="r"), True
        print(f"feature cache: building {self.folder} ({reason})")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta_path.unlink(missing_ok=True)
        shape = (self.key["count"], feature_size)
        with atomic.staged_file(self.features_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            row = 0
            with progress.bar(total=shape[0], desc="backbone features", unit="img") as bar:
                for batch in batches:
                    values = extract(batch[0])
                    out[row:row + len(values)] = values
                    row += len(values)
                    bar.update(len(values))
            out.flush()
            del out
        atomic.write_text(self.meta_path, json.dumps({"key": self.key, "shape": list(shape)}))
        return np.load(self.features_path, mmap_mode="r"), False


def feature_dataset(files: LabelledFiles, features: np.ndarray, rows: np.ndarray,
                    batch_size: int, shuffle_seed: int | None = None,
                    sample_weights: np.ndarray | None = None,
                    views: int = 1) -> tf.data.Dataset:
    """Like ``image_dataset``, but batches of rows ``rows`` of the cached feature matrix.

    Rows are shuffled as the images would be, then read a whole batch at a time.
    With ``views`` above 1, ``features`` is that many equal blocks, one per augmented
    view of the images, and each read takes a row's features from a random block.
    """
    width = features.shape[1]
    stride = len(features) // views
    rng = np.random.default_rng(shuffle_seed)

    def gather(batch_rows: np.ndarray) -> np.ndarray:
        if views > 1:
            batch_rows = batch_rows + stride * rng.integers(views, size=len(batch_rows))
        return np.asarray(features[batch_rows], dtype=np.float32)

    def read(batch_rows: tf.Tensor) -> tf.Tensor:
        vectors = tf.numpy_function(gather, [batch_rows], tf.float32, stateful=views > 1)
        vectors.set_shape((None, width))
        return vectors

    dataset = shuffled(files, np.asarray(rows, dtype=np.int64), shuffle_seed, sample_weights)
    dataset = dataset.batch(batch_size).map(lambda batch_rows, *rest: (read(batch_rows), *rest))
    return dataset.prefetch(tf.data.AUTOTUNE)
