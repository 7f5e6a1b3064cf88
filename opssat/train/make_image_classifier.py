"""Command line of the trainer, flag for flag TF Hub's ``make_image_classifier``
(same names and absl-style booleans: ``--flag``, ``--flag=false``, ``--noflag``; its
defaults but ``--shear_range``), plus the toolkit's own flags. Old command lines run
unchanged; docs/development.md says where the model they train differs.
The flags are generated from the option declarations in ``opssat.train.options``.

    python -m opssat.train.make_image_classifier --image_dir DIR --tflite_output_file F ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from opssat.core import cli
from opssat.core.paths import ModelPaths, model_paths
from opssat.train import options, recipes
from opssat.train.options import TrainOptions

if TYPE_CHECKING:
    from opssat.train.trainer import TrainResult


def build_parser() -> argparse.ArgumentParser:
    """Every trainer option as a flag, ``--model`` for the repo/<model>/ layout and
    ``--recipe``; building it imports no TensorFlow, so --help is instant."""
    parser = cli.ArgumentParser(
        prog="make_image_classifier",
        description="Train an image classifier on a backbone and export it for TFLite.",
    )
    options.add_flags(parser)
    return parser


def options_from_args(argv: list[str] | None = None) -> TrainOptions:
    parser = build_parser()
    args = parser.parse_args(recipes.expand(sys.argv[1:] if argv is None else argv))
    if args.all_data and not args.model:
        parser.error("--all_data needs --model (train.sh gives it)")
    if args.model:
        paths = model_paths(args.model).require_model_dir()
        if args.all_data:
            _fill_model_paths(args, paths.all_data, image_dir=paths.all_dir)
        else:
            _fill_model_paths(args, paths)
    if not args.image_dir:
        parser.error("--image_dir (or --model) is required")
    return options.from_namespace(args)


def _fill_model_paths(args: argparse.Namespace, paths: ModelPaths,
                      image_dir: Path | None = None) -> None:
    """Default every input and output to its place in ``repo/<model>/`` (``paths``),
    images from ``image_dir`` (default: its data/training)."""
    defaults = {
        "image_dir": image_dir or paths.training_dir,
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


def train(options: TrainOptions) -> TrainResult:
    """The trainer, imported only once the flags are good: TensorFlow takes seconds to
    load, and --help or a usage error should not wait for it."""
    from opssat.train.trainer import train as run_training

    return run_training(options)


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
