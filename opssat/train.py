"""The trainer: TF Hub's ``make_image_classifier`` rebuilt on TensorFlow 2.21,
one function per step, plus what small, imbalanced OPS-SAT data needs
(stratified validation, class weights, early stopping, cached features,
quantized exports, outputs that replace the last good model only on success).
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

from opssat import atomic, export, images, labels
from opssat.backbones import (
    DEFAULT_TFHUB_MODULE,
    Backbone,
    check_feature_extractor,
    load_backbone,
)
from opssat.cli import UserError, warn
from opssat.dataset import (
    FeatureCache,
    LabelledFiles,
    Preprocessing,
    augmenter,
    feature_dataset,
    image_dataset,
    list_labelled_files,
    load_image,
    shuffled,
    stratified_split,
)
from opssat.paths import tflite_variant
from opssat.tf_setup import tf, tf_keras

DISTRIBUTION_STRATEGIES = ("none", "mirrored")
CLASS_WEIGHTS = ("balanced", "none")
#: Images used to calibrate int8 quantization.
CALIBRATION_IMAGES = 64


@dataclass
class TrainOptions:
    """The flags of TF Hub's make_image_classifier (same defaults), then ours."""

    image_dir: str
    tfhub_module: str = DEFAULT_TFHUB_MODULE
    image_size: int | None = None
    saved_model_dir: str | None = None
    tflite_output_file: str | None = None
    labels_output_file: str | None = None
    summaries_dir: str | None = None
    assert_accuracy_at_least: float | None = None
    train_epochs: int = 5
    do_fine_tuning: bool = False
    batch_size: int = 32
    learning_rate: float = 0.005
    momentum: float = 0.9
    dropout_rate: float = 0.2
    l1_regularizer: float = 0.0
    l2_regularizer: float = 0.0001
    label_smoothing: float = 0.1
    validation_split: float = 0.2
    do_data_augmentation: bool = False
    rotation_range: float = 40
    horizontal_flip: bool = True
    width_shift_range: float = 0.2
    height_shift_range: float = 0.2
    shear_range: float = 0.0
    zoom_range: float = 0.2
    use_tf_data_input: bool = True
    # Beyond the original tool.
    backbone: str | None = None
    backbone_weights: str | None = None
    class_weights: str = "balanced"
    early_stopping_patience: int = 0
    seed: int = 42
    quantize: list[str] = field(default_factory=list)
    cache_features: bool = True
    cache_dir: str | None = None
    train_preprocess: str = "ground"
    onboard_channels: int = 1
    record_file: str | None = None
    distribution_strategy: str = "none"
    set_memory_growth: bool = False
    mixed_precision: bool = False

    def check(self) -> None:
        """Refuse impossible combinations before any slow work starts."""
        for name in self.quantize:
            export.check_quantization(name)
        if self.distribution_strategy not in DISTRIBUTION_STRATEGIES:
            raise UserError(f"unknown --distribution_strategy {self.distribution_strategy!r}: "
                            f"use one of {', '.join(DISTRIBUTION_STRATEGIES)}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise UserError(f"unknown --class_weights {self.class_weights!r}: "
                            f"use one of {', '.join(CLASS_WEIGHTS)}")
        images.check_preprocessing(self.train_preprocess, self.onboard_channels,
                                   "--train_preprocess")
        if not 0 <= self.validation_split < 1:
            raise UserError("--validation_split must be in [0, 1)")
        if self.train_epochs < 1 or self.batch_size < 1:
            raise UserError("--train_epochs and --batch_size must be at least 1")
        if self.image_size is not None and self.image_size < 32:
            raise UserError(f"--image_size {self.image_size} is too small (at least 32)")
        if self.assert_accuracy_at_least is not None and self.validation_split == 0:
            raise UserError("--assert_accuracy_at_least needs a validation split above 0")
        outputs = (self.saved_model_dir, self.tflite_output_file, self.labels_output_file)
        if not any(outputs):
            raise UserError("nothing to write: give --tflite_output_file and/or "
                            "--saved_model_dir and --labels_output_file")
        atomic.check_writable(*outputs, self.record_file, self.summaries_dir, self.cache_dir)

    @property
    def uses_feature_cache(self) -> bool:
        """Features are cached when the backbone is frozen and inputs are not augmented."""
        return self.cache_features and not self.do_fine_tuning and not self.do_data_augmentation


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
    tf_keras.utils.set_random_seed(options.seed)
    strategy = _strategy(options)
    files = list_labelled_files(Path(options.image_dir))
    _warn_if_labels_changed(options, files.labels)
    train_idx, val_idx = stratified_split(files, options.validation_split, options.seed)
    train_files, val_files = files.subset(train_idx), files.subset(val_idx)
    weights = class_weights(train_files, options.class_weights)
    print(f"labels: {', '.join(files.labels)}; training {len(train_files)}, "
          f"validation {len(val_files)} images")
    if options.summaries_dir:
        print(f"watch training with: tensorboard --logdir {options.summaries_dir}")

    policy = "mixed_float16" if options.mixed_precision else "float32"
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            backbone = load_backbone(options.backbone, options.tfhub_module, options.image_size,
                                     options.backbone_weights, trainable=options.do_fine_tuning)
        check_feature_extractor(backbone)
        with strategy.scope():
            head = build_head(len(files.labels), options)
            classifier = build_classifier(backbone, head)
            compile_model(classifier, options)
            compile_model(head, options)
        preprocessing = Preprocessing(options.train_preprocess, options.onboard_channels,
                                      (backbone.image_size, backbone.image_size))
        batch_size = options.batch_size * strategy.num_replicas_in_sync
        fit = _fit_on_cached_features if options.uses_feature_cache else _fit_on_images
        fit_started = time.time()
        history, cache_info = fit(options, files, train_idx, val_idx, backbone, classifier, head,
                                  preprocessing, weights, batch_size)
        fit_time = time.time() - fit_started
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    best_epoch = _best_epoch(history)
    val_accuracy = _validation_accuracy(classifier, val_files, preprocessing, batch_size)

    _check_accuracy(options, val_accuracy)

    outputs = atomic.OutputSet()
    try:
        written = _export(options, classifier, files.labels, train_files, preprocessing, outputs)
        variant_accuracy = evaluate_tflite(written, files.labels, val_files, preprocessing)
        record = _record(options, backbone, files, train_files, val_files, weights, history,
                         best_epoch, val_accuracy, variant_accuracy, cache_info, started,
                         fit_time)
        record["outputs"] = {str(target): _sha256_tree(staged)
                             for target, staged in outputs.staged().items()}
        record_path = _record_path(options)
        outputs.stage(record_path).write_text(json.dumps(record, indent=2))
        targets = outputs.commit()
    except BaseException:
        outputs.discard()
        raise
    return TrainResult(files.labels, history, best_epoch, val_accuracy, targets, record)


# --- steps -------------------------------------------------------------------------


def _strategy(options: TrainOptions) -> tf.distribute.Strategy:
    gpus = tf.config.list_physical_devices("GPU")
    if options.set_memory_growth:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    if options.distribution_strategy == "none":
        return tf.distribute.get_strategy()
    strategy = tf.distribute.MirroredStrategy()
    where = f"{len(gpus)} GPU(s)" if gpus else "no GPU found, one CPU replica"
    print(f"distribution: MirroredStrategy with {strategy.num_replicas_in_sync} replica(s) "
          f"({where}); global batch {options.batch_size} x {strategy.num_replicas_in_sync}")
    return strategy


def _warn_if_labels_changed(options: TrainOptions, new_labels: list[str]) -> None:
    if not options.labels_output_file or not Path(options.labels_output_file).is_file():
        return
    try:
        old = labels.read_labels(Path(options.labels_output_file))
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
    regularizer = tf_keras.regularizers.l1_l2(options.l1_regularizer, options.l2_regularizer)
    return tf_keras.Sequential([
        tf_keras.layers.Dropout(options.dropout_rate),
        tf_keras.layers.Dense(num_labels, activation="softmax", kernel_regularizer=regularizer,
                              dtype="float32"),
    ], name="head")


def build_classifier(backbone: Backbone, head: tf_keras.Sequential) -> tf_keras.Model:
    """[0, 1] image -> backbone features -> head; the head object is shared, not copied."""
    size = backbone.image_size
    inputs = tf_keras.Input((size, size, 3), name="image")
    features = backbone.model(inputs, training=None if backbone.model.trainable else False)
    return tf_keras.Model(inputs, head(features), name="classifier")


def compile_model(model: tf_keras.Model, options: TrainOptions) -> None:
    model.compile(
        optimizer=tf_keras.optimizers.SGD(options.learning_rate, momentum=options.momentum),
        loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=options.label_smoothing),
        metrics=["accuracy"],
    )


def _callbacks(options: TrainOptions, has_validation: bool) -> list[tf_keras.callbacks.Callback]:
    callbacks: list[tf_keras.callbacks.Callback] = []
    if options.summaries_dir:
        run_dir = Path(options.summaries_dir) / time.strftime("%Y%m%d-%H%M%S")
        callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=str(run_dir)))
    if options.early_stopping_patience > 0:
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_loss" if has_validation else "loss",
            patience=options.early_stopping_patience, restore_best_weights=True))
    return callbacks


def _image_batches(files: LabelledFiles, preprocessing: Preprocessing, batch_size: int,
                   options: TrainOptions, shuffle_seed: int | None = None,
                   weights: np.ndarray | None = None, augment=None) -> tf.data.Dataset:
    """Streaming batches, or (``--nouse_tf_data_input``) batches of images held in memory."""
    if options.use_tf_data_input:
        return image_dataset(files, preprocessing, batch_size, shuffle_seed, augment, weights)
    if augment is not None:
        raise UserError("--do_data_augmentation needs tf.data input (--use_tf_data_input)")
    loaded = np.stack([load_image(p, preprocessing) for p in files.paths])
    return shuffled(files, loaded, shuffle_seed, weights).batch(batch_size)


def _fit_on_images(options, files, train_idx, val_idx, backbone, classifier, head,
                   preprocessing, weights, batch_size):
    """Train backbone and head on decoded images (fine-tuning or augmentation)."""
    augment = None
    if options.do_data_augmentation:
        augment = augmenter(dict(
            rotation_range=options.rotation_range, horizontal_flip=options.horizontal_flip,
            width_shift_range=options.width_shift_range,
            height_shift_range=options.height_shift_range,
            shear_range=options.shear_range, zoom_range=options.zoom_range,
        ), options.seed)
    train_files, val_files = files.subset(train_idx), files.subset(val_idx)
    train_data = _image_batches(train_files, preprocessing, batch_size, options,
                                options.seed, weights, augment)
    val_data = (_image_batches(val_files, preprocessing, batch_size, options)
                if len(val_files) else None)
    fitted = classifier.fit(train_data, validation_data=val_data, epochs=options.train_epochs,
                            callbacks=_callbacks(options, val_data is not None), verbose=2)
    return _history(fitted), {"used": False}


def _fit_on_cached_features(options, files, train_idx, val_idx, backbone, classifier, head,
                            preprocessing, weights, batch_size):
    """Frozen backbone: compute its features once (kept on disk), then train the head alone.

    The classifier shares the head, so it behaves exactly as if trained end to end.
    Without ``--cache_dir`` the features live in a temporary folder for this run only.
    """
    if not options.cache_dir:
        with tempfile.TemporaryDirectory(prefix="opssat-features-") as folder:
            return _fit_head(options, files, train_idx, val_idx, backbone, head,
                             preprocessing, weights, batch_size, Path(folder))
    return _fit_head(options, files, train_idx, val_idx, backbone, head, preprocessing,
                     weights, batch_size, Path(options.cache_dir))


def _fit_head(options, files, train_idx, val_idx, backbone, head, preprocessing, weights,
              batch_size, folder):
    cache = FeatureCache(folder, backbone.identity, preprocessing, files)
    in_order = _image_batches(files, preprocessing, batch_size, options)

    # A compiled graph, not eager calls: extraction runs at the speed fit() would.
    features_of = tf.function(lambda batch: backbone.model(batch, training=False),
                              reduce_retracing=True)

    def extract(batch: tf.Tensor) -> np.ndarray:
        return features_of(batch).numpy()

    features, reused = cache.load_or_build(extract, in_order, backbone.feature_size)
    train_files, val_files = files.subset(train_idx), files.subset(val_idx)
    train_data = feature_dataset(train_files, features, train_idx, batch_size, options.seed,
                                 weights)
    val_data = (feature_dataset(val_files, features, val_idx, batch_size)
                if len(val_files) else None)
    fitted = head.fit(train_data, validation_data=val_data, epochs=options.train_epochs,
                      callbacks=_callbacks(options, val_data is not None), verbose=2)
    return _history(fitted), {"used": True, "reused": reused, "folder": str(folder),
                              "key": cache.key}


def _history(fitted: tf_keras.callbacks.History) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in fitted.history.items()}


def _best_epoch(history: dict[str, list[float]]) -> int:
    """1-based epoch with the lowest validation loss (training loss without validation)."""
    losses = history.get("val_loss") or history["loss"]
    return int(np.argmin(losses)) + 1


def _validation_accuracy(classifier: tf_keras.Model, val_files: LabelledFiles,
                         preprocessing: Preprocessing, batch_size: int) -> float | None:
    """Top-1 accuracy of the final Keras classifier on the validation images."""
    if not len(val_files):
        return None
    data = image_dataset(val_files, preprocessing, batch_size)
    probabilities = classifier.predict(data, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == val_files.targets))


def _check_accuracy(options: TrainOptions, accuracy: float | None) -> None:
    wanted = options.assert_accuracy_at_least
    if wanted is not None and (accuracy is None or accuracy < wanted):
        raise UserError(
            f"validation accuracy {accuracy:.3f} is below --assert_accuracy_at_least {wanted}: "
            "nothing written, the previous model is kept"
        )


def _export(options: TrainOptions, classifier: tf_keras.Model, label_list: list[str],
            train_files: LabelledFiles, preprocessing: Preprocessing,
            outputs: atomic.OutputSet) -> dict[str, Path]:
    """Stage every output; returns the staged TFLite files by quantization name."""
    if options.labels_output_file:
        labels.write_labels(outputs.stage(Path(options.labels_output_file)), label_list)
    if options.saved_model_dir:
        classifier.save(str(outputs.stage(Path(options.saved_model_dir))), save_format="tf")
    written: dict[str, Path] = {}
    if options.tflite_output_file:
        float_file = Path(options.tflite_output_file)
        variants = ["none"] + [q for q in dict.fromkeys(options.quantize) if q != "none"]
        for name in variants:
            target = float_file if name == "none" else tflite_variant(float_file, name)
            data = export.tflite_bytes(classifier, name, _calibration(train_files, preprocessing))
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
    if options.record_file:
        return Path(options.record_file)
    anchor = options.tflite_output_file or options.labels_output_file or options.saved_model_dir
    return Path(anchor).parent / "train_record.json"


def _record(options, backbone, files, train_files, val_files, weights, history, best_epoch,
            val_accuracy, variant_accuracy, cache_info, started, fit_time) -> dict:
    """Everything needed to know later how a model was made."""
    best = {name: values[best_epoch - 1] for name, values in history.items()}
    return {
        "options": asdict(options),
        "backbone": {"name": backbone.name, "source": backbone.source,
                     "image_size": backbone.image_size, "feature_size": backbone.feature_size},
        "labels": files.labels,
        "class_counts": {"all": files.class_counts(), "training": train_files.class_counts(),
                         "validation": val_files.class_counts()},
        "class_weights": dict(zip(files.labels, map(float, weights), strict=True)),
        "training_files_sha256": files.fingerprint(),
        "skipped_files": [str(p) for p in files.skipped],
        "history": history,
        "epochs_run": len(history["loss"]),
        "best_epoch": best_epoch,
        "best_epoch_metrics": best,
        "validation_accuracy": val_accuracy,
        "tflite_validation_accuracy": variant_accuracy,
        "feature_cache": cache_info,
        "versions": _versions(),
        "fit_time_s": round(fit_time, 2),
        "wall_time_s": round(time.time() - started, 2),
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
