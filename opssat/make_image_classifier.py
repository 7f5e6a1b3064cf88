"""Command line of the trainer, flag for flag TF Hub's ``make_image_classifier``
(same names, defaults and absl-style booleans: ``--flag``, ``--flag=false``,
``--noflag``), plus the toolkit's own flags. Old command lines run unchanged.
The flags are generated from the option declarations in ``opssat.train_options``.

    python -m opssat.make_image_classifier --image_dir DIR --tflite_output_file F ...
"""

from __future__ import annotations

import argparse

from opssat import cli, train_options
from opssat.paths import ModelPaths, model_paths
from opssat.train import train
from opssat.train_options import TrainOptions


def build_parser() -> argparse.ArgumentParser:
    """Every trainer option as a flag, and ``--model`` for the repo/<model>/ layout."""
    parser = cli.ArgumentParser(
        prog="make_image_classifier",
        description="Train an image classifier on a backbone and export it for TFLite.",
    )
    parser.add_argument("--model", help="a repo/<model>/ folder: its data/training is the "
                        "image dir and every output goes to its usual place there (train.sh "
                        "uses it)")
    train_options.add_flags(parser)
    return parser


def options_from_args(argv: list[str] | None = None) -> TrainOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model:
        _fill_model_paths(args, model_paths(args.model).require_model_dir())
    if not args.image_dir:
        parser.error("--image_dir (or --model) is required")
    return train_options.from_namespace(args)


def _fill_model_paths(args: argparse.Namespace, paths: ModelPaths) -> None:
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
        if not getattr(args, name):
            setattr(args, name, str(value))


def main(argv: list[str] | None = None) -> int:
    options = options_from_args(argv)
    result = train(options)
    done = options.paths.tflite_output_file or options.paths.saved_model_dir
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
