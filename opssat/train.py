"""The trainer: TF Hub's ``make_image_classifier`` rebuilt on TensorFlow 2.21,
one function per step, plus what small, imbalanced OPS-SAT data needs
(stratified validation, class weights, early stopping, cached features, a
two-stage fine-tuning schedule with batch norm kept in inference mode, quantized
exports, outputs that replace the last good model only on success).
"""

from __future__ import annotations

import hashlib
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from opssat import atomic, augment, export, labels
from opssat.backbones import (
    Backbone,
    check_feature_extractor,
    load_backbone,
)
from opssat.dataset import (
    FeatureCache,
    LabelledFiles,
    Preprocessing,
    feature_dataset,
    image_dataset,
    list_labelled_files,
    load_image,
    shuffled,
    stratified_split,
)
from opssat.errors import UserError, warn
from opssat.paths import TRAIN_RECORD, tflite_variant
from opssat.tf_setup import tf, tf_keras
from opssat.train_options import Stage, TrainOptions

#: Images used to calibrate int8 quantization.
CALIBRATION_IMAGES = 64


@dataclass
class PreparedRun:
    """Everything the training steps share, prepared once by ``train``."""

    options: TrainOptions
    strategy: tf.distribute.Strategy
    files: LabelledFiles
    train_idx: np.ndarray
    val_idx: np.ndarray
    weights: np.ndarray
    backbone: Backbone
    head: tf_keras.Sequential
    classifier: tf_keras.Model
    preprocessing: Preprocessing
    batch_size: int
    started: float

    @property
    def train_files(self) -> LabelledFiles:
        return self.files.subset(self.train_idx)

    @property
    def val_files(self) -> LabelledFiles:
        return self.files.subset(self.val_idx)


@dataclass
class Fitted:
    """What fitting produced: per-epoch metrics of every stage, in order."""

    history: dict[str, list[float]] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    cache_info: dict = field(default_factory=lambda: {"used": False})
    fit_time: float = 0.0

    def add(self, stage: Stage, history: dict[str, list[float]]) -> None:
        for name, values in history.items():
            self.history.setdefault(name, []).extend(values)
        self.stages.append({**asdict(stage), "epochs_run": len(history.get("loss", []))})

    @property
    def best_epoch(self) -> int:
        """1-based epoch with the lowest validation loss (training loss without validation)."""
        losses = self.history.get("val_loss") or self.history["loss"]
        return int(np.argmin(losses)) + 1


@dataclass
class TrainResult:
    labels: list[str]
    history: dict[str, list[float]]
    best_epoch: int
    validation_accuracy: float | None
    outputs: list[Path]
    record: dict


def train(options: TrainOptions) -> TrainResult:
    """Train, export and, only if all of it succeeded, replace the previous outputs."""
    options.check()
    started = time.time()
    tf_keras.utils.set_random_seed(options.recipe.seed)
    strategy = _strategy(options)
    files = list_labelled_files(Path(options.paths.image_dir))
    _warn_if_labels_changed(options, files.labels)
    recipe = options.recipe
    train_idx, val_idx = stratified_split(files, recipe.validation_split, recipe.seed)
    weights = class_weights(files.subset(train_idx), options.recipe.class_weights)
    print(f"labels: {', '.join(files.labels)}; training {len(train_idx)}, "
          f"validation {len(val_idx)} images")
    if options.paths.summaries_dir:
        print(f"watch training with: tensorboard --logdir {options.paths.summaries_dir}")

    policy = "mixed_float16" if options.runtime.mixed_precision else "float32"
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            backbone = load_backbone(recipe.backbone, recipe.tfhub_module, recipe.image_size,
                                     recipe.backbone_weights,
                                     trainable=options.schedule.do_fine_tuning)
        check_feature_extractor(backbone)
        with strategy.scope():
            head = build_head(len(files.labels), options)
            classifier = build_classifier(backbone, head)
        run = PreparedRun(
            options, strategy, files, train_idx, val_idx, weights, backbone, head, classifier,
            Preprocessing(options.recipe.train_preprocess, options.recipe.onboard_channels,
                          (backbone.image_size, backbone.image_size)),
            options.schedule.batch_size * strategy.num_replicas_in_sync, started)
        fitted = _fit(run)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    val_accuracy = _validation_accuracy(run)

    _check_accuracy(options, val_accuracy)

    outputs = atomic.OutputSet()
    try:
        written = _export(run, outputs)
        variant_accuracy = evaluate_tflite(written, files.labels, run.val_files,
                                           run.preprocessing)
        record = _record(run, fitted, val_accuracy, variant_accuracy)
        record["outputs"] = {str(target): _sha256_tree(staged)
                             for target, staged in outputs.staged().items()}
        record_path = _record_path(options)
        outputs.stage(record_path).write_text(json.dumps(record, indent=2))
        targets = outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    return TrainResult(files.labels, fitted.history, fitted.best_epoch, val_accuracy, targets,
                       record)


# --- steps -------------------------------------------------------------------------


def _strategy(options: TrainOptions) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if options.runtime.set_memory_growth:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    if options.runtime.distribution_strategy == "none":
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy()
    where = f"{len(gpus)} GPU(s)" if gpus else "no GPU found, one CPU replica"
    print(f"distribution: MirroredStrategy with {strategy.num_replicas_in_sync} replica(s) "
          f"({where}); global batch {options.schedule.batch_size} x "
          f"{strategy.num_replicas_in_sync}")
    return strategy


def _warn_if_labels_changed(options: TrainOptions, new_labels: list[str]) -> None:
    labels_file = options.paths.labels_output_file
    if not labels_file or not Path(labels_file).is_file():
        return
    try:
        old = labels.read_labels(Path(labels_file))
    except UserError:
        return
    if old != new_labels:
        warn(f"labels change from {old} to {new_labels}: the new labels.txt replaces the old "
             "one; re-package any SmartCam model built from the old labels")


def class_weights(files: LabelledFiles, mode: str) -> np.ndarray:
    """Per-label loss weights: ``balanced`` makes every label count as much in total."""
    counts = np.bincount(files.targets, minlength=len(files.labels)).astype(np.float64)
    if mode == "none":
        return np.ones(len(files.labels))
    present = counts > 0
    result = np.ones(len(files.labels))
    result[present] = counts[present].sum() / (present.sum() * counts[present])
    return result


def build_head(num_labels: int, options: TrainOptions) -> tf_keras.Sequential:
    """Dropout and a dense softmax with L1/L2 regularisation, as make_image_classifier."""
    recipe = options.recipe
    regularizer = tf_keras.regularizers.l1_l2(recipe.l1_regularizer, recipe.l2_regularizer)
    return tf_keras.Sequential([
        tf_keras.layers.Dropout(recipe.dropout_rate),
        tf_keras.layers.Dense(num_labels, activation="softmax", kernel_regularizer=regularizer,
                              dtype="float32"),
    ], name="head")


def build_classifier(backbone: Backbone, head: tf_keras.Sequential) -> tf_keras.Model:
    """[0, 1] image -> backbone features -> head; the head object is shared, not copied.

    The backbone always runs in inference mode, also when its weights are trained:
    its batch-norm layers normalise with their ImageNet moving statistics and never
    update them. Updating them from batches of a few dozen look-alike thumbnails
    is what made one-stage fine-tuning fall apart on small data (Keras' transfer
    learning guide gives the same advice). Its dropout stays off too.
    """
    size = backbone.image_size
    inputs = tf_keras.Input((size, size, 3), name="image")
    features = backbone.model(inputs, training=False)
    return tf_keras.Model(inputs, head(features), name="classifier")


def compile_model(model: tf_keras.Model, options: TrainOptions,
                  learning_rate: float | None = None) -> None:
    """Loss and optimizer (``--optimizer``) at ``learning_rate`` (default --learning_rate)."""
    rate = options.schedule.learning_rate if learning_rate is None else learning_rate
    if options.schedule.optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(rate)
    else:
        optimizer = tf_keras.optimizers.SGD(rate, momentum=options.schedule.momentum)
    model.compile(
        optimizer=optimizer,
        loss=tf_keras.losses.CategoricalCrossentropy(
            label_smoothing=options.recipe.label_smoothing),
        metrics=["accuracy"],
    )


def _callbacks(options: TrainOptions, has_validation: bool) -> list[tf_keras.callbacks.Callback]:
    callbacks: list[tf_keras.callbacks.Callback] = []
    if options.paths.summaries_dir:
        run_dir = Path(options.paths.summaries_dir) / time.strftime("%Y%m%d-%H%M%S")
        callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=str(run_dir)))
    if options.schedule.early_stopping_patience > 0:
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_loss" if has_validation else "loss",
            patience=options.schedule.early_stopping_patience, restore_best_weights=True))
    return callbacks


def _image_batches(run: PreparedRun, files: LabelledFiles, shuffle_seed: int | None = None,
                   weights: np.ndarray | None = None,
                   augment_fn: augment.Augment | None = None) -> tf.data.Dataset:
    """Streaming batches, or (``--nouse_tf_data_input``) batches of images held in memory."""
    if run.options.runtime.use_tf_data_input:
        return image_dataset(files, run.preprocessing, run.batch_size, shuffle_seed, augment_fn,
                             weights)
    loaded = np.stack([load_image(p, run.preprocessing) for p in files.paths])
    return shuffled(files, loaded, shuffle_seed, weights).batch(run.batch_size)


def _fit(run: PreparedRun) -> Fitted:
    """Run each stage of the schedule: the head alone, then (fine-tuning) the backbone too."""
    fitted = Fitted()
    started = time.time()
    for stage in run.options.schedule.stages():
        run.backbone.model.trainable = stage.backbone_trainable
        backbone = ("trained, batch norm in inference mode" if stage.backbone_trainable
                    else "frozen")
        print(f"stage {stage.name}: epochs {stage.first_epoch + 1}-{stage.end_epoch}, "
              f"{run.options.schedule.optimizer} learning rate {stage.learning_rate:g}, "
              f"backbone {backbone}")
        if (not stage.backbone_trainable and run.options.augmentation.augments
                and run.options.runtime.cache_features and not run.options.uses_feature_cache):
            print("feature cache: off, as augmentation changes every epoch's images "
                  "(--augmented_views K caches K views instead)")
        if not stage.backbone_trainable and run.options.uses_feature_cache:
            history, fitted.cache_info = _fit_on_cached_features(run, stage)
        else:
            history = _fit_on_images(run, stage)
        fitted.add(stage, history)
    fitted.fit_time = time.time() - started
    return fitted


def _augmenter(run: PreparedRun) -> augment.Augment | None:
    """The training images' augmentation: the original transforms, then the orbit ones."""
    options = run.options
    steps = []
    if options.augmentation.do_data_augmentation:
        steps.append(augment.keras_transforms(options.augmentation.keras_ranges))
    if options.augmentation.orbit_augmentation:
        steps.append(options.augmentation.orbit)
    return augment.chain(steps, options.recipe.seed)


def _fit_on_images(run: PreparedRun, stage: Stage) -> dict[str, list[float]]:
    """Train the classifier on decoded images (fine-tuning or augmentation)."""
    options = run.options
    with run.strategy.scope():
        compile_model(run.classifier, options, stage.learning_rate)
    train_data = _image_batches(run, run.train_files, options.recipe.seed, run.weights,
                                augment_fn=_augmenter(run))
    val_data = _image_batches(run, run.val_files) if len(run.val_idx) else None
    fitted = run.classifier.fit(
        train_data, validation_data=val_data, initial_epoch=stage.first_epoch,
        epochs=stage.end_epoch, callbacks=_callbacks(options, val_data is not None), verbose=2)
    return _history(fitted)


def _fit_on_cached_features(run: PreparedRun, stage: Stage) -> tuple[dict, dict]:
    """Frozen backbone: compute its features once (kept on disk), then train the head alone.

    The classifier shares the head, so it behaves exactly as if trained end to end.
    Without ``--cache_dir`` the features live in a temporary folder for this run only.
    """
    if not run.options.paths.cache_dir:
        with tempfile.TemporaryDirectory(prefix="opssat-features-") as folder:
            return _fit_head(run, stage, Path(folder))
    return _fit_head(run, stage, Path(run.options.paths.cache_dir))


def _fit_head(run: PreparedRun, stage: Stage, folder: Path) -> tuple[dict, dict]:
    options, backbone = run.options, run.backbone
    cache = FeatureCache(folder, backbone.identity, run.preprocessing, run.files)
    in_order = _image_batches(run, run.files)

    # A compiled graph, not eager calls: extraction runs at the speed fit() would.
    features_of = tf.function(lambda batch: backbone.model(batch, training=False),
                              reduce_retracing=True)

    def extract(batch: tf.Tensor) -> np.ndarray:
        return features_of(batch).numpy()

    features, reused = cache.load_or_build(extract, in_order, backbone.feature_size)
    info = {"used": True, "reused": reused, "folder": str(folder), "key": cache.key}
    train_files = run.train_files
    if options.augmentation.augments:
        views = options.augmentation.augmented_views
        repeated = LabelledFiles(train_files.labels, train_files.paths * views,
                                 np.tile(train_files.targets, views))
        augmented = FeatureCache(folder / "augmented", backbone.identity, run.preprocessing,
                                 repeated, options.augmentation_identity)
        print(f"feature cache: {views} augmented views of each training image")
        view_features, view_reused = augmented.load_or_build(
            extract, _image_batches(run, repeated, augment_fn=_augmenter(run)),
            backbone.feature_size)
        info.update(augmented_views=views, augmented_reused=view_reused)
        train_data = feature_dataset(train_files, view_features, np.arange(len(train_files)),
                                     run.batch_size, options.recipe.seed, run.weights, views)
    else:
        train_data = feature_dataset(train_files, features, run.train_idx, run.batch_size,
                                     options.recipe.seed, run.weights)
    val_data = (feature_dataset(run.val_files, features, run.val_idx, run.batch_size)
                if len(run.val_idx) else None)
    with run.strategy.scope():
        compile_model(run.head, options, stage.learning_rate)
    fitted = run.head.fit(
        train_data, validation_data=val_data, initial_epoch=stage.first_epoch,
        epochs=stage.end_epoch, callbacks=_callbacks(options, val_data is not None), verbose=2)
    return _history(fitted), info


def _history(fitted: tf_keras.callbacks.History) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in fitted.history.items()}


def _validation_accuracy(run: PreparedRun) -> float | None:
    """Top-1 accuracy of the final Keras classifier on the validation images."""
    val_files = run.val_files
    if not len(val_files):
        return None
    data = image_dataset(val_files, run.preprocessing, run.batch_size)
    probabilities = run.classifier.predict(data, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == val_files.targets))


def _check_accuracy(options: TrainOptions, accuracy: float | None) -> None:
    wanted = options.recipe.assert_accuracy_at_least
    if wanted is not None and (accuracy is None or accuracy < wanted):
        raise UserError(
            f"validation accuracy {accuracy:.3f} is below --assert_accuracy_at_least {wanted}: "
            "nothing written, the previous model is kept"
        )


def _export(run: PreparedRun, outputs: atomic.OutputSet) -> dict[str, Path]:
    """Stage every output; returns the staged TFLite files by quantization name."""
    options, classifier = run.options, run.classifier
    if options.paths.labels_output_file:
        labels.write_labels(outputs.stage(Path(options.paths.labels_output_file)),
                            run.files.labels)
    if options.paths.saved_model_dir:
        classifier.save(str(outputs.stage(Path(options.paths.saved_model_dir))),
                        save_format="tf")
    written: dict[str, Path] = {}
    if options.paths.tflite_output_file:
        float_file = Path(options.paths.tflite_output_file)
        variants = ["none"] + [q for q in dict.fromkeys(options.recipe.quantize) if q != "none"]
        calibration = _calibration(run.train_files, run.preprocessing)
        for name in variants:
            target = float_file if name == "none" else tflite_variant(float_file, name)
            data = export.tflite_bytes(classifier, name, calibration)
            staged = outputs.stage(target)
            staged.write_bytes(data)
            written[name] = staged
    return written

def _calibration(files: LabelledFiles, preprocessing: Preprocessing):
    """int8 calibration batches: up to CALIBRATION_IMAGES training images."""
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(files))[:CALIBRATION_IMAGES]

    def batches():
        for index in chosen:
            yield load_image(files.paths[index], preprocessing)[np.newaxis]

    return batches


def evaluate_tflite(model_files: dict[str, Path], label_list: list[str],
                    files: LabelledFiles, preprocessing: Preprocessing) -> dict[str, float | None]:
    """Top-1 accuracy of each TFLite model on ``files``, run as LiteRT runs it.

    Each image is decoded once and fed to every model, streaming.
    """
    from opssat.infer import Classifier

    if not len(files):
        return dict.fromkeys(model_files)
    classifiers = {name: Classifier(path, labels=label_list) for name, path in model_files.items()}
    correct = dict.fromkeys(model_files, 0)
    for path, target in zip(files.paths, files.targets, strict=True):
        model_input = load_image(path, preprocessing)
        for name, classifier in classifiers.items():
            probabilities, _ = classifier.classify(model_input)
            correct[name] += int(np.argmax(probabilities) == target)
    return {name: hits / len(files) for name, hits in correct.items()}


def _record_path(options: TrainOptions) -> Path:
    if options.paths.record_file:
        return Path(options.paths.record_file)
    paths = options.paths
    anchor = paths.tflite_output_file or paths.labels_output_file or paths.saved_model_dir
    return Path(anchor).parent / TRAIN_RECORD


def _record(run: PreparedRun, fitted: Fitted, val_accuracy: float | None,
            variant_accuracy: dict[str, float | None]) -> dict:
    """Everything needed to know later how a model was made."""
    backbone, files, history = run.backbone, run.files, fitted.history
    best_epoch = fitted.best_epoch
    best = {name: values[best_epoch - 1] for name, values in history.items()
            if len(values) >= best_epoch}
    return {
        "options": run.options.flat(),
        "backbone": {"name": backbone.name, "source": backbone.source,
                     "image_size": backbone.image_size, "feature_size": backbone.feature_size},
        "labels": files.labels,
        "target_runtime": export.TARGET_RUNTIME,
        "class_counts": {"all": files.class_counts(),
                         "training": run.train_files.class_counts(),
                         "validation": run.val_files.class_counts()},
        "class_weights": dict(zip(files.labels, map(float, run.weights), strict=True)),
        "training_files_sha256": files.fingerprint(),
        "skipped_files": [str(p) for p in files.skipped],
        "stages": fitted.stages,
        "history": history,
        "epochs_run": len(history["loss"]),
        "best_epoch": best_epoch,
        "best_epoch_metrics": best,
        "validation_accuracy": val_accuracy,
        "tflite_validation_accuracy": variant_accuracy,
        "feature_cache": fitted.cache_info,
        "versions": _versions(),
        "fit_time_s": round(fitted.fit_time, 2),
        "wall_time_s": round(time.time() - run.started, 2),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _versions() -> dict[str, str]:
    names = ["tensorflow", "tf-keras", "tensorflow-hub", "ai-edge-litert", "numpy", "pillow"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _sha256_tree(path: Path) -> str:
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
