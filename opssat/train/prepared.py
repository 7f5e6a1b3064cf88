"""What the training steps read: the prepared run they share, batches of images
(augmented or not), and the cached backbone features the head trains on when the
backbone is frozen (built here, fitted in ``train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opssat.core.tf_setup import tf, tf_keras
from opssat.train import augment
from opssat.train.backbones import Backbone
from opssat.train.dataset import (
    FeatureCache,
    LabelledFiles,
    Preprocessing,
    feature_dataset,
    image_dataset,
    load_image,
    shuffled,
)
from opssat.train.options import TrainOptions


@dataclass(kw_only=True)
class PreparedRun:
    """Everything the training steps share, prepared once by ``train``."""

    options: TrainOptions
    strategy: tf.distribute.Strategy
    files: LabelledFiles
    train_idx: np.ndarray
    val_idx: np.ndarray
    #: Loss weight of each label (``--class_weights``).
    weights: np.ndarray
    backbone: Backbone
    head: tf_keras.Sequential
    #: The backbone and the head (the same head object, not a copy).
    classifier: tf_keras.Model
    preprocessing: Preprocessing
    #: Images per step over all replicas.
    batch_size: int
    started: float

    @property
    def train_files(self) -> LabelledFiles:
        return self.files.subset(self.train_idx)

    @property
    def val_files(self) -> LabelledFiles:
        return self.files.subset(self.val_idx)


def image_batches(run: PreparedRun, files: LabelledFiles, shuffle_seed: int | None = None,
                  weights: np.ndarray | None = None,
                  augment_fn: augment.Augment | None = None) -> tf.data.Dataset:
    """Streaming batches, or (``--nouse_tf_data_input``) batches of images held in memory
    (the options' check refuses augmentation without streaming)."""
    if run.options.runtime.use_tf_data_input:
        return image_dataset(files, run.preprocessing, run.batch_size, shuffle_seed, augment_fn,
                             weights)
    loaded = np.stack([load_image(p, run.preprocessing) for p in files.paths])
    return shuffled(files, loaded, shuffle_seed, weights).batch(run.batch_size)


def augmenter(options: TrainOptions) -> augment.Augment | None:
    """The training images' augmentation: the original transforms, then the orbit ones."""
    augmentation = options.augmentation
    steps = []
    if augmentation.do_data_augmentation:
        steps.append(augment.keras_transforms(augmentation.keras_ranges))
    if augmentation.orbit_augmentation:
        steps.append(augmentation.orbit)
    return augment.chain(steps, options.recipe.seed)


@dataclass
class HeadData:
    """Batches of cached backbone features for training the head alone."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    #: What train_record.json says about the cache.
    info: dict[str, Any]


def cached_head_data(run: PreparedRun, folder: Path) -> HeadData:
    """Backbone features of every image (and of ``--augmented_views`` augmented views of
    each training image), computed once into ``folder`` or reused from it."""
    options, backbone = run.options, run.backbone
    cache = FeatureCache(folder, backbone.identity, run.preprocessing, run.files)
    extract = _extractor(backbone)
    features, reused = cache.load_or_build(extract, image_batches(run, run.files),
                                           backbone.feature_size)
    info: dict[str, Any] = {"used": True, "reused": reused, "folder": str(folder),
                            "key": cache.key}
    train_files, seed = run.train_files, options.recipe.seed
    if options.augmentation.augments:
        views = options.augmentation.augmented_views
        repeated = LabelledFiles(train_files.labels, train_files.paths * views,
                                 np.tile(train_files.targets, views))
        augmented = FeatureCache(folder / "augmented", backbone.identity, run.preprocessing,
                                 repeated, options.augmentation_identity)
        print(f"feature cache: {views} augmented views of each training image")
        view_features, view_reused = augmented.load_or_build(
            extract, image_batches(run, repeated, augment_fn=augmenter(options)),
            backbone.feature_size)
        info.update(augmented_views=views, augmented_reused=view_reused)
        train = feature_dataset(train_files, view_features, np.arange(len(train_files)),
                                run.batch_size, seed, run.weights, views)
    else:
        train = feature_dataset(train_files, features, run.train_idx, run.batch_size, seed,
                                run.weights)
    validation = (feature_dataset(run.val_files, features, run.val_idx, run.batch_size)
                  if len(run.val_idx) else None)
    return HeadData(train, validation, info)


def _extractor(backbone: Backbone):
    """Batch -> backbone features as NumPy, through a compiled graph rather than eager
    calls, so extraction runs at the speed fit() would."""
    features_of = tf.function(lambda batch: backbone.model(batch, training=False),
                              reduce_retracing=True)

    def extract(batch: tf.Tensor) -> np.ndarray:
        return features_of(batch).numpy()

    return extract
