"""The trainer: TF Hub's ``make_image_classifier`` rebuilt on TensorFlow 2.21,
one function per step, plus what small, imbalanced OPS-SAT data needs
(stratified validation, class weights, early stopping, cached features, a
two-stage fine-tuning schedule with batch norm kept in inference mode, quantized
exports, outputs that replace the last good model only on success).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import platform
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from opssat import atomic, augment, export, images, labels
from opssat.backbones import (
    DEFAULT_TFHUB_MODULE,
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
from opssat.paths import tflite_variant
from opssat.tf_setup import tf, tf_keras

DISTRIBUTION_STRATEGIES = ("none", "mirrored")
CLASS_WEIGHTS = ("balanced", "none")
OPTIMIZERS = ("sgd", "adam")
#: Images used to calibrate int8 quantization.
CALIBRATION_IMAGES = 64


@dataclass
class TrainOptions:
    """The flags of TF Hub's make_image_classifier (same defaults), then ours.

    Each attribute is the command-line flag of the same name; the text below is
    its ``--help``.

    Attributes:
      image_dir: folder with one sub-folder of images per label
      tfhub_module: TF Hub handle or local SavedModel folder of an image feature vector
        module (TF2 format)
      image_size: height and width of the model input (default: the backbone's, 224)
      saved_model_dir: where to write the trained SavedModel
      tflite_output_file: where to write the float TFLite model
      labels_output_file: where to write labels.txt (model output order)
      summaries_dir: where to write TensorBoard summaries
      assert_accuracy_at_least: fail, keeping the previous outputs, below this validation
        accuracy
      train_epochs: epochs in all, head-only epochs of a two-stage run included
      do_fine_tuning: train the backbone too; its batch-norm layers stay in inference mode
        (moving statistics frozen), as small data needs
      batch_size: images per training step
      learning_rate: learning rate of the head (of the whole model when fine-tuning in one
        stage)
      momentum: SGD momentum (ignored by adam)
      dropout_rate: dropout before the head's dense layer
      l1_regularizer: L1 weight penalty of the head's dense layer
      l2_regularizer: L2 weight penalty of the head's dense layer
      label_smoothing: label smoothing of the cross-entropy loss
      validation_split: fraction of the images kept aside for validation, in whole
        acquisition bursts
      do_data_augmentation: the original augmentation: random rotations, shifts, shear,
        zoom and flips (Keras ImageDataGenerator, the ranges below)
      rotation_range: degrees of random rotation (original augmentation)
      horizontal_flip: random horizontal flips (original augmentation)
      width_shift_range: random horizontal shift, fraction of the width (original
        augmentation)
      height_shift_range: random vertical shift, fraction of the height (original
        augmentation)
      shear_range: random shear in degrees (original augmentation)
      zoom_range: random zoom range (original augmentation)
      use_tf_data_input: stream images from disk with tf.data (false: load them all into
        memory)
      backbone: a built-in backbone instead of --tfhub_module
      backbone_weights: weights file for --backbone (offline use), instead of a download
      class_weights: balanced: every label weighs as much in the loss; none: every image
        weighs 1
      early_stopping_patience: stop after N epochs without a better validation loss and keep
        the best epoch's weights (0: off; counted per stage)
      seed: seed for everything random
      quantize: also write tflite_model_<q>.tflite (repeatable); every variant keeps float32
        input and output, as SmartCam needs
      cache_features: with a frozen backbone (or the head-only stage), compute backbone
        features once and train the head on them
      cache_dir: where the feature cache lives between runs (default: a temporary folder)
      train_preprocess: onboard: train on images prepared as SmartCam prepares them
      onboard_channels: channels SmartCam's resizer keeps for --train_preprocess onboard
      record_file: train_record.json path (default: beside the TFLite model)
      distribution_strategy: none, or mirrored (tf.distribute.MirroredStrategy)
      set_memory_growth: let TensorFlow take GPU memory as needed
      mixed_precision: train in mixed float16 on GPUs (the exported model stays float32)
      fine_tune_after_epochs: with --do_fine_tuning, train the head alone for this many of
        the --train_epochs first, then unfreeze the backbone (0: fine-tune from the start,
        as the original)
      fine_tuning_learning_rate: learning rate once the backbone is unfrozen (default:
        --learning_rate); small data wants it low, e.g. 1e-5 with adam
      optimizer: sgd (with --momentum, the original) or adam
      orbit_augmentation: augment training images as orbit imagery needs, on the model
        input as --train_preprocess makes it: flips and quarter turns, brightness,
        contrast and exposure changes that saturate toward white and black (after the
        original augmentation when both are on)
      augment_flips: orbit augmentation flips and turns images by multiples of 90 degrees
      brightness_delta: orbit augmentation adds an offset drawn from [-d, d] (0 to 1)
      contrast_range: orbit augmentation scales contrast by a factor drawn from
        [1 - r, 1 + r] (0 to 1)
      exposure_stops: orbit augmentation multiplies by 2**s, s drawn from [-e, e] (0 to 4)
      augmented_views: with augmentation and a frozen backbone (or the head-only stage),
        cache backbone features of this many augmented views of each training image and
        draw one per image each epoch (0: augmentation turns the feature cache off and
        every epoch decodes and augments afresh); 0 to 100
    """

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
    fine_tune_after_epochs: int = 0
    fine_tuning_learning_rate: float | None = None
    optimizer: str = "sgd"
    orbit_augmentation: bool = False
    augment_flips: bool = True
    brightness_delta: float = 0.1
    contrast_range: float = 0.3
    exposure_stops: float = 1.0
    augmented_views: int = 0

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
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown --optimizer {self.optimizer!r}: "
                            f"use one of {', '.join(OPTIMIZERS)}")
        images.check_preprocessing(self.train_preprocess, self.onboard_channels,
                                   "--train_preprocess")
        if not 0 <= self.validation_split < 1:
            raise UserError("--validation_split must be in [0, 1)")
        if self.train_epochs < 1 or self.batch_size < 1:
            raise UserError("--train_epochs and --batch_size must be at least 1")
        self._check_schedule()
        self._check_augmentation()
        if self.image_size is not None and self.image_size < 32:
            raise UserError(f"--image_size {self.image_size} is too small (at least 32)")
        if self.assert_accuracy_at_least is not None and self.validation_split == 0:
            raise UserError("--assert_accuracy_at_least needs a validation split above 0")
        outputs = (self.saved_model_dir, self.tflite_output_file, self.labels_output_file)
        if not any(outputs):
            raise UserError("nothing to write: give --tflite_output_file and/or "
                            "--saved_model_dir and --labels_output_file")
        atomic.check_writable(*outputs, self.record_file, self.summaries_dir, self.cache_dir)

    def _check_schedule(self) -> None:
        for name in ("learning_rate", "fine_tuning_learning_rate"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise UserError(f"--{name} must be a positive number, not {value}")
        if not 0 <= self.momentum < 1:
            raise UserError(f"--momentum must be in [0, 1), not {self.momentum}")
        if not 0 <= self.dropout_rate < 1:
            raise UserError(f"--dropout_rate must be in [0, 1), not {self.dropout_rate}")
        if self.early_stopping_patience < 0:
            raise UserError("--early_stopping_patience must be 0 (off) or more")
        after = self.fine_tune_after_epochs
        if after and not self.do_fine_tuning:
            raise UserError("--fine_tune_after_epochs needs --do_fine_tuning")
        if not 0 <= after < self.train_epochs:
            raise UserError(f"--fine_tune_after_epochs must be in [0, --train_epochs "
                            f"{self.train_epochs}), not {after}: the rest are fine-tuning")

    def _check_augmentation(self) -> None:
        self.orbit.check()
        if not 0 <= self.augmented_views <= 100:
            raise UserError(f"--augmented_views must be in [0, 100], not {self.augmented_views}")
        if self.augmented_views and not self.augments:
            raise UserError("--augmented_views needs --orbit_augmentation or "
                            "--do_data_augmentation")
        ranges = {"rotation_range": 360, "width_shift_range": 1, "height_shift_range": 1,
                  "shear_range": 90, "zoom_range": 1}
        for name, high in ranges.items():
            value = getattr(self, name)
            if not 0 <= value <= high:
                raise UserError(f"--{name} must be in [0, {high}], not {value}")

    @property
    def orbit(self) -> augment.OrbitAugmentation:
        return augment.OrbitAugmentation(self.augment_flips, self.brightness_delta,
                                         self.contrast_range, self.exposure_stops)

    @property
    def augments(self) -> bool:
        return self.do_data_augmentation or self.orbit_augmentation

    @property
    def augmentation_identity(self) -> str:
        """What decides the augmented views (for the feature cache key)."""
        original = (f"keras:{self.rotation_range},{self.horizontal_flip},"
                    f"{self.width_shift_range},{self.height_shift_range},{self.shear_range},"
                    f"{self.zoom_range}" if self.do_data_augmentation else "")
        orbit = f"orbit:{self.orbit.identity}" if self.orbit_augmentation else ""
        return f"{original};{orbit};seed={self.seed};views={self.augmented_views}"

    @property
    def uses_feature_cache(self) -> bool:
        """Whether the head-only epochs (all of them with a frozen backbone) read cached
        features: augmented inputs need ``augmented_views`` above 0."""
        return (self.cache_features and (not self.augments or self.augmented_views > 0)
                and any(not stage.backbone_trainable for stage in schedule(self)))


def option_help() -> dict[str, str]:
    """Each option's help text, from the Attributes section of TrainOptions' docstring."""
    doc = inspect.getdoc(TrainOptions) or ""
    section = doc.split("Attributes:", 1)[1]
    found: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        entry = re.match(r"\s{0,2}(\w+): (.*)", line)
        if entry:
            name, text = entry.groups()
            found[name] = text
        elif name and line.strip():
            found[name] += " " + line.strip()
    return found


@dataclass(frozen=True)
class Stage:
    """Epochs ``first_epoch`` (0-based) up to ``end_epoch`` at one learning rate."""

    name: str
    first_epoch: int
    end_epoch: int
    learning_rate: float
    backbone_trainable: bool


def schedule(options: TrainOptions) -> list[Stage]:
    """Head-only epochs, then fine-tuning epochs (either may be absent)."""
    if not options.do_fine_tuning:
        return [Stage("head", 0, options.train_epochs, options.learning_rate, False)]
    after = options.fine_tune_after_epochs
    rate = options.fine_tuning_learning_rate or options.learning_rate
    head = [Stage("head", 0, after, options.learning_rate, False)] if after else []
    return [*head, Stage("fine-tuning", after, options.train_epochs, rate, True)]


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
    tf_keras.utils.set_random_seed(options.seed)
    strategy = _strategy(options)
    files = list_labelled_files(Path(options.image_dir))
    _warn_if_labels_changed(options, files.labels)
    train_idx, val_idx = stratified_split(files, options.validation_split, options.seed)
    weights = class_weights(files.subset(train_idx), options.class_weights)
    print(f"labels: {', '.join(files.labels)}; training {len(train_idx)}, "
          f"validation {len(val_idx)} images")
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
        run = PreparedRun(
            options, strategy, files, train_idx, val_idx, weights, backbone, head, classifier,
            Preprocessing(options.train_preprocess, options.onboard_channels,
                          (backbone.image_size, backbone.image_size)),
            options.batch_size * strategy.num_replicas_in_sync, started)
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
    rate = options.learning_rate if learning_rate is None else learning_rate
    if options.optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(rate)
    else:
        optimizer = tf_keras.optimizers.SGD(rate, momentum=options.momentum)
    model.compile(
        optimizer=optimizer,
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


def _image_batches(run: PreparedRun, files: LabelledFiles, shuffle_seed: int | None = None,
                   weights: np.ndarray | None = None,
                   augment_fn: augment.Augment | None = None) -> tf.data.Dataset:
    """Streaming batches, or (``--nouse_tf_data_input``) batches of images held in memory."""
    if run.options.use_tf_data_input:
        return image_dataset(files, run.preprocessing, run.batch_size, shuffle_seed, augment_fn,
                             weights)
    if augment_fn is not None:
        raise UserError("augmentation needs tf.data input (--use_tf_data_input)")
    loaded = np.stack([load_image(p, run.preprocessing) for p in files.paths])
    return shuffled(files, loaded, shuffle_seed, weights).batch(run.batch_size)


def _fit(run: PreparedRun) -> Fitted:
    """Run each stage of the schedule: the head alone, then (fine-tuning) the backbone too."""
    fitted = Fitted()
    started = time.time()
    for stage in schedule(run.options):
        run.backbone.model.trainable = stage.backbone_trainable
        backbone = ("trained, batch norm in inference mode" if stage.backbone_trainable
                    else "frozen")
        print(f"stage {stage.name}: epochs {stage.first_epoch + 1}-{stage.end_epoch}, "
              f"{run.options.optimizer} learning rate {stage.learning_rate:g}, "
              f"backbone {backbone}")
        if (not stage.backbone_trainable and run.options.augments
                and run.options.cache_features and not run.options.uses_feature_cache):
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
    if options.do_data_augmentation:
        steps.append(augment.keras_transforms(dict(
            rotation_range=options.rotation_range, horizontal_flip=options.horizontal_flip,
            width_shift_range=options.width_shift_range,
            height_shift_range=options.height_shift_range,
            shear_range=options.shear_range, zoom_range=options.zoom_range,
        )))
    if options.orbit_augmentation:
        steps.append(options.orbit)
    return augment.chain(steps, options.seed)


def _fit_on_images(run: PreparedRun, stage: Stage) -> dict[str, list[float]]:
    """Train the classifier on decoded images (fine-tuning or augmentation)."""
    options = run.options
    with run.strategy.scope():
        compile_model(run.classifier, options, stage.learning_rate)
    train_data = _image_batches(run, run.train_files, options.seed, run.weights,
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
    if not run.options.cache_dir:
        with tempfile.TemporaryDirectory(prefix="opssat-features-") as folder:
            return _fit_head(run, stage, Path(folder))
    return _fit_head(run, stage, Path(run.options.cache_dir))


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
    if options.augments:
        views = options.augmented_views
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
                                     run.batch_size, options.seed, run.weights, views)
    else:
        train_data = feature_dataset(train_files, features, run.train_idx, run.batch_size,
                                     options.seed, run.weights)
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
    wanted = options.assert_accuracy_at_least
    if wanted is not None and (accuracy is None or accuracy < wanted):
        raise UserError(
            f"validation accuracy {accuracy:.3f} is below --assert_accuracy_at_least {wanted}: "
            "nothing written, the previous model is kept"
        )


def _export(run: PreparedRun, outputs: atomic.OutputSet) -> dict[str, Path]:
    """Stage every output; returns the staged TFLite files by quantization name."""
    options, classifier = run.options, run.classifier
    if options.labels_output_file:
        labels.write_labels(outputs.stage(Path(options.labels_output_file)), run.files.labels)
    if options.saved_model_dir:
        classifier.save(str(outputs.stage(Path(options.saved_model_dir))), save_format="tf")
    written: dict[str, Path] = {}
    if options.tflite_output_file:
        float_file = Path(options.tflite_output_file)
        variants = ["none"] + [q for q in dict.fromkeys(options.quantize) if q != "none"]
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
    if options.record_file:
        return Path(options.record_file)
    anchor = options.tflite_output_file or options.labels_output_file or options.saved_model_dir
    return Path(anchor).parent / "train_record.json"


def _record(run: PreparedRun, fitted: Fitted, val_accuracy: float | None,
            variant_accuracy: dict[str, float | None]) -> dict:
    """Everything needed to know later how a model was made."""
    backbone, files, history = run.backbone, run.files, fitted.history
    best_epoch = fitted.best_epoch
    best = {name: values[best_epoch - 1] for name, values in history.items()
            if len(values) >= best_epoch}
    return {
        "options": asdict(run.options),
        "backbone": {"name": backbone.name, "source": backbone.source,
                     "image_size": backbone.image_size, "feature_size": backbone.feature_size},
        "labels": files.labels,
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
