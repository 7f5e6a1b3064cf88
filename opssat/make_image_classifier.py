"""Command line of the trainer, flag for flag TF Hub's ``make_image_classifier``
(same names, defaults and absl-style booleans: ``--flag``, ``--flag=false``,
``--noflag``), plus the toolkit's own flags. Old command lines run unchanged.

    python -m opssat.make_image_classifier --image_dir DIR --tflite_output_file F ...
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from opssat import cli, export, images
from opssat.backbones import BUILTIN_BACKBONES, DEFAULT_TFHUB_MODULE
from opssat.paths import ModelPaths, model_paths
from opssat.train import CLASS_WEIGHTS, DISTRIBUTION_STRATEGIES, TrainOptions, train


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    parser.add_argument(f"--{name}", nargs="?", const=True, default=default, type=_bool,
                        metavar="BOOL", help=f"{help} (default: {str(default).lower()})")
    parser.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    d = TrainOptions(image_dir="")
    p = cli.ArgumentParser(
        prog="make_image_classifier",
        description="Train an image classifier on a backbone and export it for TFLite.",
    )
    p.add_argument("--image_dir", help="folder with one sub-folder of images per label")
    p.add_argument("--tfhub_module", default=DEFAULT_TFHUB_MODULE,
                   help="TF Hub handle or local SavedModel folder of an image feature vector "
                        "module (TF2 format)")
    p.add_argument("--image_size", type=int, default=None,
                   help="height and width of the model input (default: the backbone's, 224)")
    p.add_argument("--saved_model_dir", help="where to write the trained SavedModel")
    p.add_argument("--tflite_output_file", help="where to write the float TFLite model")
    p.add_argument("--labels_output_file", help="where to write labels.txt (model output order)")
    p.add_argument("--summaries_dir", help="where to write TensorBoard summaries")
    p.add_argument("--assert_accuracy_at_least", type=float, default=None,
                   help="fail, keeping the previous outputs, below this validation accuracy")
    p.add_argument("--train_epochs", type=int, default=d.train_epochs)
    _add_bool(p, "do_fine_tuning", d.do_fine_tuning, "train the backbone too")
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--learning_rate", type=float, default=d.learning_rate)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--dropout_rate", type=float, default=d.dropout_rate)
    p.add_argument("--l1_regularizer", type=float, default=d.l1_regularizer)
    p.add_argument("--l2_regularizer", type=float, default=d.l2_regularizer)
    p.add_argument("--label_smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--validation_split", type=float, default=d.validation_split)
    _add_bool(p, "do_data_augmentation", d.do_data_augmentation,
              "randomly rotate, shift, shear, zoom and flip training images")
    p.add_argument("--rotation_range", type=float, default=d.rotation_range)
    _add_bool(p, "horizontal_flip", d.horizontal_flip, "augmentation flips images")
    p.add_argument("--width_shift_range", type=float, default=d.width_shift_range)
    p.add_argument("--height_shift_range", type=float, default=d.height_shift_range)
    p.add_argument("--shear_range", type=float, default=d.shear_range)
    p.add_argument("--zoom_range", type=float, default=d.zoom_range)
    _add_bool(p, "use_tf_data_input", d.use_tf_data_input,
              "stream images from disk with tf.data (false: load them all into memory)")

    extra = p.add_argument_group("beyond the original make_image_classifier")
    extra.add_argument("--model", help="a repo/<model>/ folder: its data/training is the image "
                       "dir and every output goes to its usual place there (train.sh uses it)")
    extra.add_argument("--backbone", choices=BUILTIN_BACKBONES,
                       help="a built-in backbone instead of --tfhub_module")
    extra.add_argument("--backbone_weights",
                       help="weights file for --backbone (offline use), instead of a download")
    extra.add_argument("--class_weights", choices=CLASS_WEIGHTS, default=d.class_weights,
                       help="balanced: every label weighs as much in the loss (default)")
    extra.add_argument("--early_stopping_patience", type=int, default=0,
                       help="stop after N epochs without a better validation loss and keep "
                            "the best epoch's weights (0: off)")
    extra.add_argument("--seed", type=int, default=d.seed, help="seed for everything random")
    extra.add_argument("--quantize", action="append", default=[], choices=export.QUANTIZATIONS,
                       help="also write tflite_model_<q>.tflite (repeatable); every variant "
                            "keeps float32 input and output, as SmartCam needs")
    _add_bool(extra, "cache_features", d.cache_features,
              "with a frozen backbone and no augmentation, compute backbone features once")
    extra.add_argument("--cache_dir", help="where the feature cache lives between runs")
    extra.add_argument("--train_preprocess", choices=images.PREPROCESS_MODES,
                       default=d.train_preprocess,
                       help="onboard: train on images prepared as SmartCam prepares them")
    extra.add_argument("--onboard_channels", type=int, choices=images.ONBOARD_CHANNEL_CHOICES,
                       default=d.onboard_channels)
    extra.add_argument("--record_file",
                       help="train_record.json path (default: beside the TFLite model)")
    extra.add_argument("--distribution_strategy", default=d.distribution_strategy,
                       help=f"one of {', '.join(DISTRIBUTION_STRATEGIES)}")
    _add_bool(extra, "set_memory_growth", d.set_memory_growth,
              "let TensorFlow take GPU memory as needed")
    _add_bool(extra, "mixed_precision", d.mixed_precision,
              "train in mixed float16 on GPUs (the exported model stays float32)")
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
