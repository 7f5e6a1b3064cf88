#!/usr/bin/env python3
"""Cross-validate a training recipe on repo/<model>/data/all.

k folds, stratified by label and grouped by acquisition burst as split_data.py
groups them; each fold trains with the toolkit's trainer (every flag after the
model name that is not crossval's own goes to it, as for train.sh) into a
temporary folder, and is judged through its TFLite files on the images it did
not see, as the spacecraft sees them (onboard) and as the ground does.
Each fold is also judged on its stress set: its held-out frames with exposure
failures applied as on board (saturated, washed out, dark, noisy), labelled bad
when their scene is destroyed (rule in opssat/data/stress.py), through the on-board
chain; so is its bright-but-valid family (earth and edge frames made brighter below
the bad line, labels kept). Prints per-fold and mean ± sd accuracy, macro-F1 and Cohen's
kappa (the stress families' beside the plain folds), the out-of-fold calibration (ECE,
Brier, NLL, before and after temperature scaling fitted on the other folds) and the
temperature to train with (--temperature T), and writes every image's out-of-fold
confidences and the stress set's to repo/<model>/crossval/. The model's own
files are left as they are.

  python crossval.py mymodel --folds 5 --backbone efficientnet_lite0 \\
      --train_epochs 15 --train_preprocess onboard --quantize int8
"""

from __future__ import annotations

import argparse

from opssat.core import cli, flags
from opssat.core.paths import model_paths
from opssat.data import split, topup
from opssat.judge.shared_options import Bursts, SmartCamRuntime, TopUp
from opssat.onboard import flight
from opssat.train import recipes
from opssat.train.crossval_options import CrossvalOptions


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    flags.add_flags(parser, [CrossvalOptions, recipes.RecipeName, Bursts, TopUp,
                             SmartCamRuntime])
    return parser


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """crossval's own flags, and the rest for the trainer."""
    return build_parser().parse_known_args()


def main() -> int:
    args, trainer_args = parse_args()
    from opssat.train import crossval  # scikit-learn and TensorFlow: after --help

    paths = model_paths(args.model).require_model_dir()
    top_up = [topup.parse_top_up(text) for text in args.top_up]
    if args.recipe:
        recipe = recipes.get(args.recipe)
        trainer_args = [*recipe.flags, *trainer_args]
        top_up = top_up or list(recipe.top_up)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    folder = flight.smartcam_dir(args.smartcam_dir)
    runtime = flight.Runtime(folder, args.smartcam_arch) \
        if folder is not None and flight.MODE in modes else None
    group_seconds = split.parse_group_seconds(args.group_seconds)
    result = crossval.run(paths, trainer_args, args.folds, args.fold_seed, group_seconds,
                          top_up, modes, with_stress=args.stress, runtime=runtime)
    print()
    print(crossval.format_summary(result))
    for mode, path in result.oof_csvs.items():
        print(f"out-of-fold confidences ({mode}): {path}")
    if crossval.STRESS in result.oof_csvs:
        print(f"stress set (each frame's source, kind, severity, scene r², label): "
              f"{paths.crossval_dir / crossval.STRESS_SET_NAME}")
    return 0


if __name__ == "__main__":
    cli.run(main)
