"""The trainer's options, each declared once (its flag, default, help, choices and
limits), in small groups as MediaPipe Model Maker has them: where files go, the
recipe, the schedule, augmentation and runtime. TF Hub's make_image_classifier
flags keep their names and their defaults, all but ``--shear_range``'s
(docs/development.md says what else differs); the command line stays one flat list
of flags generated from these declarations (see ``opssat.core.flags``).

Every check runs in ``TrainOptions.check``, before any slow work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from opssat.core import atomic, flags
from opssat.core.cli import ArgumentParser
from opssat.core.errors import UserError
from opssat.core.flags import Limits, option
from opssat.data.preprocess import PreprocessOptions
from opssat.train import augment, recipes
from opssat.train.catalog import BUILTIN_BACKBONES, DEFAULT_TFHUB_MODULE, QUANTIZATIONS

DISTRIBUTION_STRATEGIES = ("none", "mirrored")
CLASS_WEIGHTS = ("balanced", "none")
OPTIMIZERS = ("sgd", "adam")
ENSEMBLES = ("average", "soup")

#: Fine-tuning after a head-only stage runs at --learning_rate divided by this by default
#: (Keras' transfer learning guide: 1e-5 after 1e-3); cross-validated in docs/results.md.
FINE_TUNING_RATE_DIVISOR = 100
_FRACTION = Limits(0, 1, high_open=True)
_POSITIVE = Limits(0, low_open=True)
_ORBIT = augment.OrbitAugmentation()


def _orbit_limits(name: str) -> Limits:
    low, high = augment.LIMITS[name]
    return Limits(low, high)


@dataclass
class PathOptions:
    """inputs and outputs"""

    image_dir: str | None = option(
        None, "folder with one sub-folder of images per label", tfhub=True)
    tflite_output_file: str | None = option(
        None, "where to write the float TFLite model", tfhub=True)
    labels_output_file: str | None = option(
        None, "where to write labels.txt (model output order)", tfhub=True)
    saved_model_dir: str | None = option(
        None, "where to write the trained SavedModel", tfhub=True)
    summaries_dir: str | None = option(
        None, "where to write TensorBoard summaries", tfhub=True)
    record_file: str | None = option(
        None, "train_record.json path (default: beside the TFLite model)")
    cache_dir: str | None = option(
        None, "where the feature cache lives between runs (default: a temporary folder)")

    def check(self) -> None:
        outputs = (self.saved_model_dir, self.tflite_output_file, self.labels_output_file)
        if not any(outputs):
            raise UserError("nothing to write: give --tflite_output_file and/or "
                            "--saved_model_dir and --labels_output_file")
        atomic.check_writable(*outputs, self.record_file, self.summaries_dir, self.cache_dir)


@dataclass
class RecipeOptions:
    """recipe: backbone, input, head, data"""

    tfhub_module: str = option(
        DEFAULT_TFHUB_MODULE, "TF Hub handle or local SavedModel folder of an image feature "
        "vector module (TF2 format)", tfhub=True)
    backbone: str | None = option(
        None, "a built-in backbone instead of --tfhub_module", choices=BUILTIN_BACKBONES)
    backbone_weights: str | None = option(
        None, "weights file for --backbone (offline use), instead of a download")
    image_size: int | None = option(
        None, "height and width of the model input (default: the backbone's, 224)",
        limits=Limits(32), tfhub=True)
    dropout_rate: float = option(
        0.2, "dropout before the head's dense layer", limits=_FRACTION, tfhub=True)
    l1_regularizer: float = option(
        0.0, "L1 weight penalty of the head's dense layer", tfhub=True)
    l2_regularizer: float = option(
        0.0001, "L2 weight penalty of the head's dense layer", tfhub=True)
    label_smoothing: float = option(
        0.1, "label smoothing of the cross-entropy loss", tfhub=True)
    validation_split: float = option(
        0.2, "fraction of the images kept aside for validation, in whole acquisition bursts",
        limits=_FRACTION, tfhub=True)
    class_weights: str = option(
        "balanced", "balanced: every label weighs as much in the loss; none: every image "
        "weighs 1", choices=CLASS_WEIGHTS)
    seed: int = option(42, "seed for everything random")
    quantize: list[str] = option(
        [], "also write tflite_model_<q>.tflite (repeatable); every variant keeps float32 "
        "input and output, as SmartCam needs", choices=QUANTIZATIONS)
    assert_accuracy_at_least: float | None = option(
        None, "fail, keeping the previous outputs, below this validation accuracy",
        limits=Limits(0, 1), tfhub=True)
    temperature: str = option(
        "auto", "temperature scaling folded into the last dense layer (weights and bias / T): "
        "auto fits T on the validation split (T=1 without one), a number uses that T "
        "(e.g. one crossval.py fitted out of fold), off leaves the probabilities as trained")
    exposure_features: bool = option(
        False, "append the image's shares of clipped, bright and dark pixels to the backbone's "
        "features, so the head can tell an over-exposed frame from a bright valid one")
    ensemble_seeds: int = option(
        1, "train this many members (seeds --seed, --seed+1, ...) and export one model "
        "made of them (--ensemble)", limits=Limits(1))
    ensemble: str = option(
        "average", "how --ensemble_seeds members make one model: average: one graph "
        "averaging their softmax outputs (a fine-tuned member's time on board each); soup: "
        "one model with the mean of their weights (one model's size and time)",
        choices=ENSEMBLES)

    def check(self) -> None:
        flags.check_values(self)
        temperature_value(self.temperature)
        if self.assert_accuracy_at_least is not None and self.validation_split == 0:
            raise UserError("--assert_accuracy_at_least needs a validation split above 0")

    @property
    def quantized_variants(self) -> list[str]:
        """The ``--quantize`` variants written beside the float model, each once, in order."""
        return [q for q in dict.fromkeys(self.quantize) if q != "none"]


def temperature_value(text: str) -> float | str:
    """``--temperature``: ``auto``, ``off`` or a positive finite number."""
    if text in ("auto", "off"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise UserError(f"--temperature {text}: use auto, off or a positive number such as 1.5")
    return value


@dataclass(frozen=True)
class Stage:
    """Epochs ``first_epoch`` (0-based) up to ``end_epoch``: the backbone (when trainable)
    at ``learning_rate``, the head at ``head_learning_rate`` (by default the same)."""

    name: str
    first_epoch: int
    end_epoch: int
    learning_rate: float
    backbone_trainable: bool
    head_learning_rate: float | None = None

    @property
    def head_rate(self) -> float:
        return self.learning_rate if self.head_learning_rate is None else self.head_learning_rate


@dataclass
class ScheduleOptions:
    """schedule: epochs, optimizer, two-stage fine-tuning"""

    train_epochs: int = option(
        5, "epochs in all, head-only epochs of a two-stage run included", limits=Limits(1),
        tfhub=True)
    batch_size: int = option(32, "images per training step", limits=Limits(1), tfhub=True)
    optimizer: str = option("sgd", "sgd (with --momentum, the original) or adam",
                            choices=OPTIMIZERS)
    learning_rate: float = option(
        0.005, "learning rate of the head (of the whole model when fine-tuning in one stage)",
        limits=_POSITIVE, tfhub=True)
    momentum: float = option(0.9, "SGD momentum (ignored by adam)", limits=_FRACTION,
                             tfhub=True)
    do_fine_tuning: bool = option(
        False, "train the backbone too; its batch-norm layers stay in inference mode (moving "
        "statistics frozen), as small data needs", tfhub=True)
    fine_tune_after_epochs: int | None = option(
        None, "with --do_fine_tuning, train the (untrained) head alone for this many of the "
        "--train_epochs first, then unfreeze the backbone (default: half of them, rounded "
        "down; 0: fine-tune from the start, TF Hub's one-stage schedule)")
    fine_tuning_learning_rate: float | None = option(
        None, "learning rate once the backbone is unfrozen (default: --learning_rate / "
        f"{FINE_TUNING_RATE_DIVISOR:g} after a head-only stage, --learning_rate in one stage "
        "as TF Hub's)", limits=_POSITIVE)
    fine_tuning_head_learning_rate: float | None = option(
        None, "learning rate of the head once the backbone is unfrozen after a head-only "
        "stage (default: --learning_rate, so the head trains as long as a frozen run's while "
        "the backbone moves at --fine_tuning_learning_rate; one stage: --learning_rate)",
        limits=_POSITIVE)
    early_stopping_patience: int = option(
        0, "stop after N epochs without a better validation loss and keep the best epoch's "
        "weights (0: off; counted per stage)", limits=Limits(0))
    average_last_epochs: int = option(
        0, "export the mean of the weights after each of the last N epochs of the final "
        "stage instead of the last epoch's (0: off): less spread from seed to seed",
        limits=Limits(0))

    def check(self) -> None:
        flags.check_values(self)
        if self.average_last_epochs and self.early_stopping_patience:
            raise UserError("--average_last_epochs and --early_stopping_patience exclude each "
                            "other: early stopping keeps one epoch's weights")
        for name in ("fine_tune_after_epochs", "fine_tuning_head_learning_rate"):
            if getattr(self, name) and not self.do_fine_tuning:
                raise UserError(f"--{name} needs --do_fine_tuning")
        after = self.head_epochs
        if not 0 <= after < self.train_epochs:
            raise UserError(f"--fine_tune_after_epochs must be in [0, --train_epochs "
                            f"{self.train_epochs}), not {after}: the rest are fine-tuning")

    def stages(self) -> list[Stage]:
        """Head-only epochs, then fine-tuning epochs (either may be absent)."""
        if not self.do_fine_tuning:
            return [Stage("head", 0, self.train_epochs, self.learning_rate, False)]
        after = self.head_epochs
        rate = self.fine_tuning_learning_rate or (
            self.learning_rate / FINE_TUNING_RATE_DIVISOR if after else self.learning_rate)
        if not after:
            return [Stage("fine-tuning", 0, self.train_epochs, rate, True)]
        head_rate = self.fine_tuning_head_learning_rate or self.learning_rate
        return [Stage("head", 0, after, self.learning_rate, False),
                Stage("fine-tuning", after, self.train_epochs, rate, True, head_rate)]

    @property
    def head_epochs(self) -> int:
        """Head-only epochs of a fine-tuning run: --fine_tune_after_epochs, by default half
        of --train_epochs. A head that starts untrained and is unfrozen with the backbone
        at once sends large, random gradients into it: with SGD at 0.005 and momentum 0.9
        that wrecked Lite0 (every image called ``earth``)."""
        if not self.do_fine_tuning:
            return 0
        if self.fine_tune_after_epochs is None:
            return self.train_epochs // 2
        return self.fine_tune_after_epochs


@dataclass
class AugmentationOptions:
    """augmentation: the original Keras transforms, and the one for orbit imagery"""

    do_data_augmentation: bool = option(
        False, "the original augmentation: random rotations, shifts, shear, zoom and flips "
        "(Keras ImageDataGenerator, the ranges below)", tfhub=True)
    rotation_range: float = option(40, "degrees of random rotation (original augmentation)",
                                   limits=Limits(0, 360), tfhub=True)
    horizontal_flip: bool = option(True, "random horizontal flips (original augmentation)",
                                   tfhub=True)
    width_shift_range: float = option(
        0.2, "random horizontal shift, fraction of the width (original augmentation)",
        limits=Limits(0, 1), tfhub=True)
    height_shift_range: float = option(
        0.2, "random vertical shift, fraction of the height (original augmentation)",
        limits=Limits(0, 1), tfhub=True)
    shear_range: float = option(0.0, "random shear in degrees (original augmentation)",
                                limits=Limits(0, 90), tfhub=True)
    zoom_range: float = option(0.2, "random zoom range (original augmentation)",
                               limits=Limits(0, 1), tfhub=True)
    orbit_augmentation: bool = option(
        False, "augment training images as orbit imagery needs, on the model input as "
        "--preprocess makes it: flips and quarter turns, brightness, contrast and "
        "exposure changes that saturate toward white and black (after the original "
        "augmentation when both are on)")
    augment_flips: bool = option(
        _ORBIT.flips, "orbit augmentation flips and turns images by multiples of 90 degrees")
    brightness_delta: float = option(
        _ORBIT.brightness_delta, "orbit augmentation adds an offset drawn from [-d, d]",
        limits=_orbit_limits("brightness_delta"))
    contrast_range: float = option(
        _ORBIT.contrast_range, "orbit augmentation scales contrast by a factor drawn from "
        "[1 - r, 1 + r]", limits=_orbit_limits("contrast_range"))
    exposure_stops: float = option(
        _ORBIT.exposure_stops, "orbit augmentation multiplies by 2**s, s drawn from [-e, e]",
        limits=_orbit_limits("exposure_stops"))
    augmented_views: int = option(
        0, "with augmentation and a frozen backbone (or the head-only stage), cache backbone "
        "features of this many augmented views of each training image and draw one per "
        "image each epoch (0: augmentation turns the feature cache off and every epoch "
        "decodes and augments afresh)", limits=Limits(0, 100))

    def check(self) -> None:
        flags.check_values(self)
        if self.augmented_views and not self.augments:
            raise UserError("--augmented_views needs --orbit_augmentation or "
                            "--do_data_augmentation")

    @property
    def augments(self) -> bool:
        return self.do_data_augmentation or self.orbit_augmentation

    @property
    def orbit(self) -> augment.OrbitAugmentation:
        return augment.OrbitAugmentation(self.augment_flips, self.brightness_delta,
                                         self.contrast_range, self.exposure_stops)

    @property
    def keras_ranges(self) -> dict[str, Any]:
        """The original augmentation's ImageDataGenerator arguments."""
        return dict(rotation_range=self.rotation_range, horizontal_flip=self.horizontal_flip,
                    width_shift_range=self.width_shift_range,
                    height_shift_range=self.height_shift_range,
                    shear_range=self.shear_range, zoom_range=self.zoom_range)

    def identity(self, seed: int) -> str:
        """What decides the augmented views (for the feature cache key)."""
        original = (f"keras:{self.rotation_range},{self.horizontal_flip},"
                    f"{self.width_shift_range},{self.height_shift_range},{self.shear_range},"
                    f"{self.zoom_range}" if self.do_data_augmentation else "")
        orbit = f"orbit:{self.orbit.identity}" if self.orbit_augmentation else ""
        return f"{original};{orbit};seed={seed};views={self.augmented_views}"


@dataclass
class RuntimeOptions:
    """runtime: input pipeline, feature cache, devices"""

    use_tf_data_input: bool = option(
        True, "stream images from disk with tf.data (false: load them all into memory)",
        tfhub=True)
    cache_features: bool = option(
        True, "with a frozen backbone (or the head-only stage), compute backbone features "
        "once and train the head on them")
    distribution_strategy: str = option(
        "none", "none, or mirrored (tf.distribute.MirroredStrategy)",
        choices=DISTRIBUTION_STRATEGIES)
    set_memory_growth: bool = option(False, "let TensorFlow take GPU memory as needed")
    mixed_precision: bool = option(
        False, "train in mixed float16 on GPUs (the exported model stays float32)")

    def check(self) -> None:
        flags.check_values(self)


@dataclass
class ModelFolderOptions:
    """model folder: train.sh's layout of repo/<model>/"""

    model: str | None = option(
        None, "a repo/<model>/ folder: its data/training is the image dir and every output "
        "goes to its usual place there (train.sh gives it)")
    all_data: bool = option(
        False, "with --model: train on all of its data/all (top-up included), not "
        "data/training, and write every output to repo/<model>/all_data/: the model to uplink "
        "once cross-validation has chosen the recipe; the test split's model and its figures "
        "stay as they are")


#: The option groups, in the order of --help and of the docs' flag table.
GROUPS = (PathOptions, RecipeOptions, PreprocessOptions, ScheduleOptions, AugmentationOptions,
          RuntimeOptions)
#: The trainer's command line: where its options come from, then the options.
COMMAND_GROUPS = (ModelFolderOptions, recipes.RecipeName, *GROUPS)


@dataclass
class TrainOptions:
    """Everything one training run needs, by concern."""

    paths: PathOptions = field(default_factory=PathOptions)
    recipe: RecipeOptions = field(default_factory=RecipeOptions)
    preprocessing: PreprocessOptions = field(default_factory=PreprocessOptions)
    schedule: ScheduleOptions = field(default_factory=ScheduleOptions)
    augmentation: AugmentationOptions = field(default_factory=AugmentationOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    @classmethod
    def from_flags(cls, **values: Any) -> TrainOptions:
        """Options from flag names and values (the rest keep their defaults), e.g.
        ``TrainOptions.from_flags(image_dir="data", optimizer="adam")``; an old name
        (``train_preprocess``) is taken too."""
        names = flags.names_of(GROUPS)
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(f"unknown trainer options: {', '.join(unknown)}")
        values = {names[name]: value for name, value in values.items()}
        groups = [flags.from_values(group, values) for group in GROUPS]
        return cls(*groups)

    def with_paths(self, **values: str | None) -> TrainOptions:
        """A copy whose inputs and outputs are ``values`` (the others unset)."""
        return dataclasses.replace(self, paths=PathOptions(**values))

    def flat(self) -> dict[str, Any]:
        """Every option by flag name (as train_record.json keeps them)."""
        found: dict[str, Any] = {}
        for group in dataclasses.fields(self):
            found.update(asdict(getattr(self, group.name)))
        return found

    def check(self) -> None:
        """Refuse impossible values and combinations before any slow work starts."""
        self.check_settings()
        self.paths.check()

    def check_settings(self) -> None:
        """Every check but those of the input and output paths."""
        self.recipe.check()
        self.preprocessing.check()
        self.schedule.check()
        self.augmentation.check()
        self.runtime.check()
        if self.augmentation.augments and not self.runtime.use_tf_data_input:
            raise UserError("augmentation needs tf.data input (--use_tf_data_input)")

    @property
    def uses_feature_cache(self) -> bool:
        """Whether the head-only epochs (all of them with a frozen backbone) read cached
        features: augmented inputs need ``augmented_views`` above 0."""
        augmentation = self.augmentation
        return (self.runtime.cache_features
                and (not augmentation.augments or augmentation.augmented_views > 0)
                and any(not stage.backbone_trainable for stage in self.schedule.stages()))

    @property
    def augmentation_identity(self) -> str:
        """What decides the augmented views (for the feature cache key)."""
        return self.augmentation.identity(self.recipe.seed)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Every option of the trainer's command line as a flag of ``parser``, one --help
    section per group."""
    flags.add_flags(parser, COMMAND_GROUPS)


def from_namespace(args: argparse.Namespace) -> TrainOptions:
    """Options from a namespace parsed with ``add_flags``' flags (other names ignored)."""
    values = vars(args)
    return TrainOptions(*(flags.from_values(group, values) for group in GROUPS))


def parse_flags(argv: Sequence[str], prog: str = "make_image_classifier") -> TrainOptions:
    """Options from trainer flags, as the trainer's command line reads them (a usage
    error is one line and exit 2)."""
    parser = ArgumentParser(prog=prog)
    add_flags(parser)
    return from_namespace(parser.parse_args(list(argv)))


def flags_document() -> str:
    """docs/flags.md: every trainer flag, from the declarations above
    (``tools/write_flags_doc.py`` writes it; a test fails when it is stale)."""
    intro = [
        "# Trainer flags",
        "",
        "<!-- Generated from opssat/train/options.py by tools/write_flags_doc.py: "
        "do not edit. -->",
        "",
        "`train.sh <model> <epochs> [flags]` and `python -m opssat.train.make_image_classifier "
        "[flags]` take these flags; `--help` prints the same. TF Hub's make_image_classifier "
        "flags keep its names (marked TF Hub's) and its defaults but `--shear_range` (TF "
        "Hub's: 0.2); class weights, fine-tuning and the validation hold-out differ too "
        "([how](development.md#the-trainer-make_image_classifier)). Booleans are absl-style: "
        "`--flag`, `--flag=false`, `--noflag`. `--model <name>` sets every path of the "
        "inputs and outputs table to its place in `repo/<name>/`. The other scripts' flags "
        "are in [scripts.md](scripts.md).",
        "",
    ]
    return "\n".join(intro) + "\n" + flags.markdown_table(COMMAND_GROUPS)
