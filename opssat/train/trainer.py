"""The trainer: TF Hub's ``make_image_classifier`` rebuilt on TensorFlow 2.21,
one function per step, plus what small, imbalanced OPS-SAT data needs
(stratified validation, class weights, early stopping, cached features, a
two-stage fine-tuning schedule with batch norm kept in inference mode, quantized
exports, outputs that replace the last good model only on success).

Its options are declared in ``options``, what the steps read (and the feature
cache) is built in ``prepared``, and ``record`` writes train_record.json.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.core.paths import tflite_variant
from opssat.core.tf_setup import tf, tf_keras
from opssat.data import labels
from opssat.judge import metrics
from opssat.judge.infer import VariantAnswers, judge_variants
from opssat.train import averaging, export
from opssat.train.backbones import (
    Backbone,
    check_feature_extractor,
    load_backbone,
    with_exposure_shares,
)
from opssat.train.dataset import (
    LabelledFiles,
    Preprocessing,
    image_dataset,
    list_labelled_files,
    load_image,
    stratified_split,
)
from opssat.train.options import Stage, TrainOptions, temperature_value
from opssat.train.prepared import PreparedRun, augmenter, cached_head_data, image_batches
from opssat.train.record import TrainRecord, record_path, sha256_tree, versions
from opssat.train.two_rates import TwoRateTraining

#: Images used to calibrate int8 quantization.
CALIBRATION_IMAGES = 64


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
    record: TrainRecord


def train(options: TrainOptions) -> TrainResult:
    """Train (each ``--ensemble_seeds`` member), fold the temperature into the model,
    export and, only if all of it succeeded, replace the previous outputs."""
    options.check()
    started = time.time()
    members = [_train_member(member, started, options.recipe.seed)
               for member in member_options(options)]
    run, fitted = members[0]
    runs = [r for r, _ in members]
    if options.recipe.ensemble == "soup":
        runs = [_soup(runs)]
    val_accuracy = _validation_accuracy(run, [r.classifier for r in runs])
    _check_accuracy(options, val_accuracy)
    temperature = calibrate(runs)
    targets, record = _write_outputs(run, fitted, val_accuracy, runs, temperature)
    return TrainResult(run.files.labels, fitted.history, fitted.best_epoch, val_accuracy,
                       targets, record)


def member_options(options: TrainOptions) -> list[TrainOptions]:
    """One options value per ensemble member: seeds --seed, --seed+1, ..."""
    seed = options.recipe.seed
    return [replace(options, recipe=replace(options.recipe, seed=seed + k))
            for k in range(options.recipe.ensemble_seeds)]


def _train_member(options: TrainOptions, started: float, split_seed: int
                  ) -> tuple[PreparedRun, Fitted]:
    """One member, seeded by its options; every member holds out the same validation
    images (``split_seed``)."""
    tf_keras.utils.set_random_seed(options.recipe.seed)
    policy = "mixed_float16" if options.runtime.mixed_precision else "float32"
    tf_keras.mixed_precision.set_global_policy(policy)
    try:
        run = _prepare(options, started, split_seed)
        return run, _fit(run)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def _prepare(options: TrainOptions, started: float, split_seed: int) -> PreparedRun:
    """The labelled files and their split, the backbone, the head and the classifier."""
    strategy = _strategy(options)
    recipe = options.recipe
    files = list_labelled_files(Path(options.paths.image_dir))
    files.fingerprint()  # now, as the data is: the record's, however the folder changes
    _warn_if_labels_changed(options, files.labels)
    train_idx, val_idx = stratified_split(files, recipe.validation_split, split_seed)
    print(f"labels: {', '.join(files.labels)}; training {len(train_idx)}, "
          f"validation {len(val_idx)} images")
    if options.paths.summaries_dir:
        print(f"watch training with: tensorboard --logdir {options.paths.summaries_dir}")
    with strategy.scope():
        backbone = _load_backbone(options)
    check_feature_extractor(backbone)
    with strategy.scope():
        head = build_head(len(files.labels), options)
        classifier = build_classifier(backbone, head)
    size = (backbone.image_size, backbone.image_size)
    return PreparedRun(
        options=options, strategy=strategy, files=files, train_idx=train_idx, val_idx=val_idx,
        weights=class_weights(files.subset(train_idx), recipe.class_weights),
        backbone=backbone, head=head, classifier=classifier,
        preprocessing=options.preprocessing.preprocessing(size=size),
        batch_size=options.schedule.batch_size * strategy.num_replicas_in_sync,
        started=started)


def _write_outputs(run: PreparedRun, fitted: Fitted, val_accuracy: float | None,
                   runs: list[PreparedRun], temperature: dict
                   ) -> tuple[list[Path], TrainRecord]:
    """Stage the models, labels and record; replace the old ones only once all are staged."""
    outputs = atomic.OutputSet()
    try:
        written = _export(run, runs, outputs)
        answers = judge_variants(written, run.files.labels, run.val_files.paths,
                                 [run.preprocessing.mode], run.preprocessing.onboard_channels)
        variant_accuracy = _accuracy(answers, run.val_files.targets)
        record = _record(run, fitted, val_accuracy, variant_accuracy)
        record.temperature = temperature
        record.ensemble_seeds = [member.recipe.seed for member in member_options(run.options)]
        record.tflite_files = {name: str(_final_target(run, name)) for name in written}
        record.outputs = {str(target): sha256_tree(staged)
                          for target, staged in outputs.staged().items()}
        outputs.stage(record_path(run.options.paths)).write_text(record.to_json())
        return outputs.commit(), record
    except BaseException:
        outputs.discard()
        raise


def _accuracy(answers: VariantAnswers, targets: np.ndarray) -> dict[str, float | None]:
    """Top-1 accuracy of each variant (None without images)."""
    found = {}
    for (_, name), probs in answers.probabilities.items():
        found[name] = float(np.mean(probs.argmax(axis=1) == targets)) if len(targets) else None
    return found


# --- temperature scaling and ensembles ---------------------------------------------


def calibrate(runs: list[PreparedRun]) -> dict:
    """Fold ``--temperature`` into every member's last dense layer (weights and bias / T:
    the logits / T, no new operator); returns what train_record.json keeps of it."""
    setting = temperature_value(runs[0].options.recipe.temperature)
    val_files = runs[0].val_files
    if setting == "off":
        return {"T": 1.0, "fitted_on": "off (--temperature off)"}
    if isinstance(setting, float):
        t, where = setting, "given (--temperature)"
    elif not len(val_files):
        print("temperature: no validation split to fit on, T = 1 (pass --temperature with "
              "the T crossval.py fitted out of fold)")
        return {"T": 1.0, "fitted_on": "none: no validation split (--temperature auto)"}
    else:
        data = image_dataset(val_files, runs[0].preprocessing, runs[0].batch_size)
        members = [r.classifier.predict(data, verbose=0) for r in runs]
        t = metrics.fit_temperature(members, val_files.targets)
        where = f"validation split ({len(val_files)} images)" + (
            ": no top-1 error, nothing to fit" if t == 1.0 else "")
    for run in runs:
        dense = run.head.layers[-1]
        kernel, bias = dense.get_weights()
        dense.set_weights([kernel / t, bias / t])
    print(f"temperature: T = {t:.4f}, {where}, folded into the last dense layer")
    return {"T": float(t), "fitted_on": where}


def _soup(runs: list[PreparedRun]) -> PreparedRun:
    """The first member, given the mean of every member's weights (--ensemble soup)."""
    if len(runs) > 1:
        runs[0].classifier.set_weights(averaging.mean_weights([r.classifier for r in runs]))
        print(f"weights: the mean of {len(runs)} members' (--ensemble soup)")
    return runs[0]


def ensemble_model(runs: list[PreparedRun]) -> tf_keras.Model:
    """The model to export: the classifier, or the mean of the members' softmax outputs.
    Frozen members share the backbone's ImageNet weights, so they share one backbone."""
    classifiers = [_computing_in_float32(run) for run in runs]
    if len(classifiers) == 1:
        return classifiers[0]
    size = runs[0].backbone.image_size
    inputs = tf_keras.Input((size, size, 3), name="image")
    frozen = not runs[0].options.schedule.do_fine_tuning
    members = [c.get_layer("head") if frozen else c for c in classifiers]
    for k, member in enumerate(members):
        member._name = f"member{k + 1}"  # one graph needs unique layer names
    if frozen:
        features = classifiers[0].layers[1](inputs, training=False)
        outputs = [head(features) for head in members]
    else:
        outputs = [member(inputs) for member in members]
    return tf_keras.Model(inputs, tf_keras.layers.Average()(outputs), name="ensemble")


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


def _load_backbone(options: TrainOptions) -> Backbone:
    """The backbone ``options`` name, trainable when fine-tuning."""
    recipe = options.recipe
    backbone = load_backbone(recipe.backbone, recipe.tfhub_module, recipe.image_size,
                             recipe.backbone_weights, trainable=options.schedule.do_fine_tuning)
    return with_exposure_shares(backbone) if recipe.exposure_features else backbone


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
    if mode == "none":
        return np.ones(len(files.labels))
    counts = np.bincount(files.targets, minlength=len(files.labels)).astype(np.float64)
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


def make_optimizer(options: TrainOptions, rate: float) -> tf_keras.optimizers.Optimizer:
    """The ``--optimizer`` at ``rate``."""
    if options.schedule.optimizer == "adam":
        return tf_keras.optimizers.Adam(rate)
    return tf_keras.optimizers.SGD(rate, momentum=options.schedule.momentum)


def compile_model(model: tf_keras.Model, options: TrainOptions,
                  learning_rate: float | None = None,
                  optimizer: tf_keras.optimizers.Optimizer | None = None) -> None:
    """Loss and ``optimizer`` (default a new ``--optimizer``) at ``learning_rate``
    (default --learning_rate)."""
    rate = options.schedule.learning_rate if learning_rate is None else learning_rate
    if optimizer is not None:
        optimizer.learning_rate = rate
    model.compile(
        optimizer=optimizer or make_optimizer(options, rate),
        loss=tf_keras.losses.CategoricalCrossentropy(
            label_smoothing=options.recipe.label_smoothing),
        metrics=["accuracy"],
    )


def _callbacks(options: TrainOptions, has_validation: bool, stage: Stage
               ) -> list[tf_keras.callbacks.Callback]:
    callbacks: list[tf_keras.callbacks.Callback] = []
    schedule = options.schedule
    if schedule.average_last_epochs and stage.end_epoch == schedule.train_epochs:
        first = max(stage.first_epoch, stage.end_epoch - schedule.average_last_epochs)
        callbacks.append(averaging.LastEpochsAverage(first))
    if options.paths.summaries_dir:
        run_dir = Path(options.paths.summaries_dir) / time.strftime("%Y%m%d-%H%M%S")
        callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=str(run_dir)))
    if options.schedule.early_stopping_patience > 0:
        callbacks.append(tf_keras.callbacks.EarlyStopping(
            monitor="val_loss" if has_validation else "loss",
            patience=options.schedule.early_stopping_patience, restore_best_weights=True))
    return callbacks


def _fit(run: PreparedRun) -> Fitted:
    """Run each stage of the schedule: the head alone, then (fine-tuning) the backbone too."""
    fitted = Fitted()
    started = time.time()
    head_optimizer = None
    for stage in run.options.schedule.stages():
        run.backbone.model.trainable = stage.backbone_trainable
        backbone = ("trained, batch norm in inference mode" if stage.backbone_trainable
                    else "frozen")
        print(f"stage {stage.name}: epochs {stage.first_epoch + 1}-{stage.end_epoch}, "
              f"{run.options.schedule.optimizer} learning rate {_rates(stage)}, "
              f"backbone {backbone}")
        if (not stage.backbone_trainable and run.options.augmentation.augments
                and run.options.runtime.cache_features and not run.options.uses_feature_cache):
            print("feature cache: off, as augmentation changes every epoch's images "
                  "(--augmented_views K caches K views instead)")
        if not stage.backbone_trainable and run.options.uses_feature_cache:
            history, fitted.cache_info = _fit_on_cached_features(run, stage)
            head_optimizer = run.head.optimizer
        else:
            history, head_optimizer = _fit_on_images(run, stage, head_optimizer)
        fitted.add(stage, history)
    fitted.fit_time = time.time() - started
    return fitted


def _rates(stage: Stage) -> str:
    if stage.head_rate == stage.learning_rate:
        return f"{stage.learning_rate:g}"
    return f"{stage.learning_rate:g} (backbone), {stage.head_rate:g} (head)"


def _fit_on_images(run: PreparedRun, stage: Stage,
                   head_optimizer: tf_keras.optimizers.Optimizer | None = None
                   ) -> tuple[dict[str, list[float]], tf_keras.optimizers.Optimizer]:
    """Train the classifier on decoded images (fine-tuning or augmentation); return the
    history and the optimizer that trained the head.

    With two rates the head goes on with ``head_optimizer``, the head stage's, momentum
    and all: a new one would restart from rest, and with a few steps an epoch (SGD
    momentum 0.9 needs about ten to get up to speed) the head would end less trained
    than the frozen backbone's after the same epochs. Its batches go on too, shuffled
    from the stage's first epoch on, as a frozen run's do; seeded as the head stage's,
    they would replay its batch orders. One rate starts the whole model's optimizer
    anew, a second run, and shuffles as a run with ``--seed`` does.
    """
    options = run.options
    with run.strategy.scope():
        model = _trainable_model(run, stage)
        carried = head_optimizer if isinstance(model, TwoRateTraining) else None
        compile_model(model, options, stage.head_rate, carried)
    shuffle_seed = options.recipe.seed + (stage.first_epoch if carried is not None else 0)
    train_data = image_batches(run, run.train_files, shuffle_seed, run.weights,
                               augment_fn=augmenter(options))
    val_data = image_batches(run, run.val_files) if len(run.val_idx) else None
    fitted = model.fit(
        train_data, validation_data=val_data, initial_epoch=stage.first_epoch,
        epochs=stage.end_epoch, callbacks=_callbacks(options, val_data is not None, stage),
        verbose=2)
    return _history(fitted), model.optimizer


def _trainable_model(run: PreparedRun, stage: Stage) -> tf_keras.Model:
    """The classifier, or, when the head and the unfrozen backbone learn at different
    rates, a wrapper that trains it so (``two_rates``)."""
    if not stage.backbone_trainable or stage.head_rate == stage.learning_rate:
        return run.classifier
    return TwoRateTraining(run.classifier, run.backbone.model.trainable_variables,
                           make_optimizer(run.options, stage.learning_rate))


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
    data = cached_head_data(run, folder)
    with run.strategy.scope():
        compile_model(run.head, run.options, stage.learning_rate)
    fitted = run.head.fit(
        data.train, validation_data=data.validation, initial_epoch=stage.first_epoch,
        epochs=stage.end_epoch,
        callbacks=_callbacks(run.options, data.validation is not None, stage), verbose=2)
    return _history(fitted), data.info


def _history(fitted: tf_keras.callbacks.History) -> dict[str, list[float]]:
    return {name: [float(v) for v in values] for name, values in fitted.history.items()}


def _validation_accuracy(run: PreparedRun, classifiers: list[tf_keras.Model]) -> float | None:
    """Top-1 accuracy of the final Keras model (the members' mean) on the validation images."""
    val_files = run.val_files
    if not len(val_files):
        return None
    data = image_dataset(val_files, run.preprocessing, run.batch_size)
    probabilities = np.mean([c.predict(data, verbose=0) for c in classifiers], axis=0)
    return float(np.mean(probabilities.argmax(axis=1) == val_files.targets))


def _check_accuracy(options: TrainOptions, accuracy: float | None) -> None:
    wanted = options.recipe.assert_accuracy_at_least
    if wanted is not None and (accuracy is None or accuracy < wanted):
        raise UserError(
            f"validation accuracy {accuracy:.3f} is below --assert_accuracy_at_least {wanted}: "
            "nothing written, the previous model is kept"
        )


def _export(run: PreparedRun, runs: list[PreparedRun], outputs: atomic.OutputSet
            ) -> dict[str, Path]:
    """Stage every output; returns the staged TFLite files by quantization name."""
    options, classifier = run.options, ensemble_model(runs)
    if options.paths.labels_output_file:
        labels.write_labels(outputs.stage(Path(options.paths.labels_output_file)),
                            run.files.labels)
    if options.paths.saved_model_dir:
        classifier.save(str(outputs.stage(Path(options.paths.saved_model_dir))),
                        save_format="tf")
    written: dict[str, Path] = {}
    if options.paths.tflite_output_file:
        variants = ["none", *options.recipe.quantized_variants]
        calibration = _calibration(run.train_files, run.preprocessing)
        for name in variants:
            target = _final_target(run, name)
            data = export.tflite_bytes(classifier, name, calibration)
            staged = outputs.stage(target)
            staged.write_bytes(data)
            written[name] = staged
    return written

def _final_target(run: PreparedRun, name: str) -> Path:
    """Where variant ``name`` (``none``: the float model) is written."""
    float_file = Path(run.options.paths.tflite_output_file)
    return float_file if name == "none" else tflite_variant(float_file, name)


def _computing_in_float32(run: PreparedRun) -> tf_keras.Model:
    """The classifier to export: with --mixed_precision, the same model rebuilt under
    the float32 policy with the trained weights, because its float16 casts (CAST
    version 5) do not exist in SmartCam's TensorFlow Lite 2.5 (issue 18)."""
    if not run.options.runtime.mixed_precision:
        return run.classifier
    classifier = build_classifier(_load_backbone(run.options),
                                  build_head(len(run.files.labels), run.options))
    classifier.set_weights(run.classifier.get_weights())
    return classifier


def _calibration(files: LabelledFiles, preprocessing: Preprocessing):
    """int8 calibration batches: up to CALIBRATION_IMAGES training images."""
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(files))[:CALIBRATION_IMAGES]

    def batches():
        for index in chosen:
            yield load_image(files.paths[index], preprocessing)[np.newaxis]

    return batches


def _record(run: PreparedRun, fitted: Fitted, val_accuracy: float | None,
            variant_accuracy: dict[str, float | None]) -> TrainRecord:
    """Everything needed to know later how a model was made."""
    backbone, files, history = run.backbone, run.files, fitted.history
    best_epoch = fitted.best_epoch
    return TrainRecord(
        options=run.options.flat(),
        backbone={"name": backbone.name, "source": backbone.source,
                  "image_size": backbone.image_size, "feature_size": backbone.feature_size},
        preprocessing=run.preprocessing.to_dict(),
        labels=files.labels,
        target_runtime=export.TARGET_RUNTIME,
        class_counts={"all": files.class_counts(), "training": run.train_files.class_counts(),
                      "validation": run.val_files.class_counts()},
        class_weights=dict(zip(files.labels, map(float, run.weights), strict=True)),
        image_dir=run.options.paths.image_dir,
        files={"training": _names(run.train_files), "validation": _names(run.val_files)},
        training_files_sha256=files.fingerprint(),
        skipped_files=[str(p) for p in files.skipped],
        stages=fitted.stages,
        history=history,
        epochs_run=len(history["loss"]),
        best_epoch=best_epoch,
        best_epoch_metrics={name: values[best_epoch - 1] for name, values in history.items()
                            if len(values) >= best_epoch},
        validation_accuracy=val_accuracy,
        tflite_validation_accuracy=variant_accuracy,
        feature_cache=fitted.cache_info,
        versions=versions(),
        fit_time_s=round(fitted.fit_time, 2),
        wall_time_s=round(time.time() - run.started, 2),
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _names(files: LabelledFiles) -> list[str]:
    """``label/name`` of each file, sorted."""
    return sorted(f"{files.labels[target]}/{path.name}"
                  for path, target in zip(files.paths, files.targets, strict=True))
