"""Which training recipe should a SmartCam user follow? Grouped k-fold
cross-validation of several recipes on the bundled real sample (123 OPS-SAT
thumbnails), every model judged through its TFLite file on on-board input, as
the spacecraft sees images.

Each recipe is the toolkit's trainer with its own flags (see RECIPES); folds
are stratified by label and grouped by acquisition burst (opssat.crossval), the
same folds for every recipe. Prints, per recipe as it finishes, the mean ± sd
(over folds) of Cohen's kappa, accuracy and macro-F1, the pooled out-of-fold
kappa, and the training time per fold; quantized variants get their own rows.

    .venv/bin/python bench/bench_recipes.py                      # every recipe
    .venv/bin/python bench/bench_recipes.py --recipes frozen,frozen_ground
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from opssat import crossval, sample
from opssat.paths import ModelPaths

BASE = ["--backbone", "efficientnet_lite0", "--validation_split", "0", "--seed", "42"]
FROZEN = [*BASE, "--train_epochs", "15", "--train_preprocess", "onboard"]
AUGMENT = ["--orbit_augmentation", "--augmented_views", "4"]
FINE_TUNE = [*BASE, "--train_preprocess", "onboard", "--do_fine_tuning", "--optimizer", "adam",
             "--learning_rate", "0.001", "--train_epochs", "18", "--fine_tune_after_epochs", "15",
             "--fine_tuning_learning_rate", "1e-5"]
QUANTIZE = ["--quantize", "float16", "--quantize", "dynamic", "--quantize", "int8"]
#: float16 gives exactly the float answers (see the frozen row): not worth its time here.
SMALL_QUANTIZE = ["--quantize", "dynamic", "--quantize", "int8"]

#: name -> (trainer flags, synthetic top-up, what it tests)
RECIPES: dict[str, tuple[list[str], list[tuple[str, int]], str]] = {
    "frozen": ([*FROZEN, *QUANTIZE], [],
               "frozen Lite0, 15 epochs, on-board training input (+ quantized variants)"),
    "frozen_ground": ([*BASE, "--train_epochs", "15", "--train_preprocess", "ground"], [],
                      "the same, trained on ground (colour) input"),
    "frozen_top_up": (FROZEN, [("bad", 20)], "frozen + 20 synthetic exposure-failure bad"),
    "frozen_augment": ([*FROZEN, *AUGMENT], [], "frozen + orbit augmentation, 4 cached views"),
    "fine_tune_augment": ([*FINE_TUNE, *AUGMENT], [],
                          "15 head epochs (adam 1e-3), 3 fine-tuning epochs (adam 1e-5), "
                          "augmented"),
    "fine_tune": (FINE_TUNE, [], "the same fine-tuning, no augmentation"),
    "fine_tune_strong": ([*BASE, "--train_preprocess", "onboard", "--do_fine_tuning",
                          "--optimizer", "adam", "--learning_rate", "0.001", "--train_epochs", "20",
                          "--fine_tune_after_epochs", "15", "--fine_tuning_learning_rate", "1e-4",
                          *SMALL_QUANTIZE],
                         [], "15 head epochs, then 5 fine-tuning epochs at 1e-4, no augmentation "
                         "(+ dynamic and int8 variants)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES),
                        help="comma-separated names (default: all, in this order)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold_seed", type=int, default=crossval.DEFAULT_SEED)
    args = parser.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}: use {', '.join(RECIPES)}")

    root = Path(tempfile.mkdtemp(prefix="bench-recipes-"))
    paths = ModelPaths("real", root)
    copied = sample.install_real(paths.all_dir)
    print(f"real sample: {copied.copied} into {paths.all_dir}; {args.folds} folds, "
          f"fold seed {args.fold_seed}; judged on on-board input", flush=True)
    rows = []
    for name in names:
        flags, top_up, what = RECIPES[name]
        print(f"\n######## {name}: {what}\n  trainer flags: {' '.join(flags)}"
              + (f"; top-up {top_up}" if top_up else ""), flush=True)
        started = time.perf_counter()
        result = crossval.run(paths, flags, args.folds, args.fold_seed, top_up=top_up,
                              modes=("onboard",), write_oof=False,
                              log=lambda text: print(text, flush=True))
        wall = time.perf_counter() - started
        for variant in result.variants:
            row = _row(name if variant == crossval.FLOAT else f"{name} [{variant}]", result,
                       variant, wall)
            rows.append(row)
            print("RESULT " + row, flush=True)
    print(f"\n{args.folds}-fold grouped cross-validation on the {sum(copied.copied.values())} "
          "real thumbnails, on-board input (mean ± sd over folds; pooled = all out-of-fold "
          "predictions at once):", flush=True)
    print(HEADER)
    for row in rows:
        print(row)
    if os.environ.get("BENCH_KEEP") is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


HEADER = (f"{'recipe':<28} {'kappa':>15} {'pooled':>7} {'accuracy':>15} {'macro-F1':>15} "
          f"{'train s/fold':>13} {'wall s':>7}")


def _row(name: str, result: crossval.CrossvalResult, variant: str, wall: float) -> str:
    def spread(score: str) -> str:
        return crossval.mean_sd(result.values("onboard", variant, score))

    pooled = result.pooled["onboard"][variant]["kappa"]
    seconds = result.train_seconds
    return (f"{name:<28} {spread('kappa'):>15} {pooled:>7.3f} {spread('accuracy'):>15} "
            f"{spread('macro_f1'):>15} {seconds.mean():>13.1f} {wall:>7.0f}")


if __name__ == "__main__":
    main()
