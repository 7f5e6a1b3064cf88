"""Command line of the trainer, flag for flag TF Hub's ``make_image_classifier``
(same names, defaults and absl-style booleans: ``--flag``, ``--flag=false``,
``--noflag``), plus the toolkit's own flags. Old command lines run unchanged.

    python -m opssat.make_image_classifier --image_dir DIR --tflite_output_file F ...
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from opssat import cli, export, images
from opssat.backbones import BUILTIN_BACKBONES
from opssat.paths import ModelPaths, model_paths
from opssat.train import (
    CLASS_WEIGHTS,
    OPTIMIZERS,
    TrainOptions,
    option_help,
    train,
)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """Every TrainOptions field as a flag; its help text is the field's documentation."""
    d = TrainOptions(image_dir="")
    helps = option_help()
    p = cli.ArgumentParser(
        prog="make_image_classifier",
        description="Train an image classifier on a backbone and export it for TFLite.",
    )

    def add(group, name: str, **kwargs) -> None:
        default = kwargs.pop("default", getattr(d, name))
        shown = "" if default in (None, []) else " (default: %(default)s)"
        group.add_argument(f"--{name}", default=default, help=helps[name] + shown, **kwargs)

    def add_bool(group, name: str) -> None:
        default = getattr(d, name)
        group.add_argument(f"--{name}", nargs="?", const=True, default=default, type=_bool,
                           metavar="BOOL",
                           help=f"{helps[name]} (default: {str(default).lower()})")
        group.add_argument(f"--no{name}", dest=name, action="store_false",
                           help=argparse.SUPPRESS)

    add(p, "image_dir", default=None)
    add(p, "tfhub_module")
    add(p, "image_size", type=int)
    for name in ("saved_model_dir", "tflite_output_file", "labels_output_file",
                 "summaries_dir"):
        add(p, name)
    add(p, "assert_accuracy_at_least", type=float)
    add(p, "train_epochs", type=int)
    add_bool(p, "do_fine_tuning")
    add(p, "batch_size", type=int)
    for name in ("learning_rate", "momentum", "dropout_rate", "l1_regularizer",
                 "l2_regularizer", "label_smoothing", "validation_split"):
        add(p, name, type=float)
    add_bool(p, "do_data_augmentation")
    add(p, "rotation_range", type=float)
    add_bool(p, "horizontal_flip")
    for name in ("width_shift_range", "height_shift_range", "shear_range", "zoom_range"):
        add(p, name, type=float)
    add_bool(p, "use_tf_data_input")

    extra = p.add_argument_group("beyond the original make_image_classifier")
    extra.add_argument("--model", help="a repo/<model>/ folder: its data/training is the image "
                       "dir and every output goes to its usual place there (train.sh uses it)")
    add(extra, "backbone", choices=BUILTIN_BACKBONES)
    add(extra, "backbone_weights")
    add(extra, "class_weights", choices=CLASS_WEIGHTS)
    add(extra, "early_stopping_patience", type=int)
    add(extra, "seed", type=int)
    add(extra, "quantize", action="append", default=[], choices=export.QUANTIZATIONS)
    add_bool(extra, "cache_features")
    add(extra, "cache_dir")
    add(extra, "train_preprocess", choices=images.PREPROCESS_MODES)
    add(extra, "onboard_channels", type=int, choices=images.ONBOARD_CHANNEL_CHOICES)
    add(extra, "record_file")
    add(extra, "distribution_strategy")
    add_bool(extra, "set_memory_growth")
    add_bool(extra, "mixed_precision")

    stages = p.add_argument_group("two-stage fine-tuning")
    add(stages, "fine_tune_after_epochs", type=int)
    add(stages, "fine_tuning_learning_rate", type=float)
    add(stages, "optimizer", choices=OPTIMIZERS)

    orbit = p.add_argument_group("augmentation for orbit imagery")
    add_bool(orbit, "orbit_augmentation")
    add_bool(orbit, "augment_flips")
    for name in ("brightness_delta", "contrast_range", "exposure_stops"):
        add(orbit, name, type=float)
    add(orbit, "augmented_views", type=int)
    return p


def options_from_args(argv: list[str] | None = None) -> TrainOptions:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if args["model"]:
        _fill_model_paths(args, model_paths(args["model"]).require_model_dir())
    if not args["image_dir"]:
        parser.error("--image_dir (or --model) is required")
    names = {f.name for f in fields(TrainOptions)}
    return TrainOptions(**{k: v for k, v in args.items() if k in names})


def _fill_model_paths(args: dict, paths: ModelPaths) -> None:
    """Default every input and output to its place in ``repo/<model>/``."""
    defaults = {
        "image_dir": paths.training_dir,
        "saved_model_dir": paths.saved_model_dir,
        "tflite_output_file": paths.tflite_model,
        "labels_output_file": paths.labels_file,
        "summaries_dir": paths.summaries_dir,
        "record_file": paths.train_record,
        "cache_dir": paths.cache_dir,
    }
    for name, value in defaults.items():
        if not args[name]:
            args[name] = str(value)


def main(argv: list[str] | None = None) -> int:
    options = options_from_args(argv)
    result = train(options)
    done = options.tflite_output_file or options.saved_model_dir
    cli.on_interrupt(f"training had finished; the new model is complete and in place ({done})")
    accuracy = result.validation_accuracy
    shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
    print(f"validation accuracy {shown} (best epoch {result.best_epoch}); wrote:")
    for path in result.outputs:
        print(f"  {path}")
    return 0


def run() -> None:
    cli.run(main)


if __name__ == "__main__":
    run()
