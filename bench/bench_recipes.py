"""Which training recipe should a SmartCam user follow? Grouped k-fold
cross-validation of several recipes on the bundled real sample (123 OPS-SAT
thumbnails), each with several trainer seeds, every model judged through its
TFLite file on on-board input, as the spacecraft sees images, and on the stress
set (opssat.data.stress: the held-out frames with on-board exposure failures).

Each recipe is the toolkit's trainer with its own flags (see RECIPES); folds
are stratified by label and grouped by acquisition burst (opssat.train.crossval), the
same folds and stress set for every recipe and seed. Per recipe and seed: the
fold mean of Cohen's kappa, the pooled out-of-fold kappa and the stress set's
pooled kappa (``SEED`` lines). Per recipe (``RESULT`` lines): the mean over
seeds of each, the spread over seeds (sd, and the lowest seed), accuracy,
macro-F1 and the training time per fold. Choose on the mean over seeds.

    .venv/bin/python bench/bench_recipes.py                      # the default recipes
    .venv/bin/python bench/bench_recipes.py --recipes frozen,frozen_ground --seeds 42
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from opssat.core.paths import ModelPaths
from opssat.data import sample
from opssat.train import crossval

#: Every recipe; each run adds ``--seed``.
BASE = ["--backbone", "efficientnet_lite0", "--validation_split", "0"]
FROZEN = [*BASE, "--train_epochs", "15", "--train_preprocess", "onboard"]
AUGMENT = ["--orbit_augmentation", "--augmented_views", "4"]
FINE_TUNE = [*BASE, "--train_preprocess", "onboard", "--do_fine_tuning", "--optimizer", "adam",
             "--learning_rate", "0.001", "--train_epochs", "18", "--fine_tune_after_epochs", "15",
             "--fine_tuning_learning_rate", "1e-5"]
STRONG = [*BASE, "--train_preprocess", "onboard", "--do_fine_tuning", "--optimizer", "adam",
          "--learning_rate", "0.001", "--train_epochs", "20", "--fine_tune_after_epochs", "15",
          "--fine_tuning_learning_rate", "1e-4"]
#: The trainer's defaults but for what the issue fixes: Lite0, on-board input, 10 epochs.
AT_DEFAULTS = ["--backbone", "efficientnet_lite0", "--train_preprocess", "onboard",
               "--train_epochs", "10"]
TOP_UP = [("bad", 20)]

#: name -> (trainer flags, synthetic top-up, what it tests)
RECIPES: dict[str, tuple[list[str], list[tuple[str, int]], str]] = {
    "frozen": (FROZEN, [], "frozen Lite0, 15 epochs, on-board training input"),
    "frozen_ground": ([*BASE, "--train_epochs", "15", "--train_preprocess", "ground"], [],
                      "the same, trained on ground (colour) input"),
    "frozen_top_up": (FROZEN, TOP_UP, "frozen + 20 bad over-exposed from real frames"),
    "frozen_top_up_average": ([*FROZEN, "--average_last_epochs", "3"], TOP_UP,
                              "frozen_top_up, exporting the mean weights of its last 3 epochs"),
    "frozen_augment": ([*FROZEN, *AUGMENT], [], "frozen + orbit augmentation, 4 cached views"),
    "fine_tune_augment": ([*FINE_TUNE, *AUGMENT], [],
                          "15 head epochs (adam 1e-3), 3 fine-tuning epochs (adam 1e-5), "
                          "augmented"),
    "fine_tune": (FINE_TUNE, [], "the same fine-tuning, no augmentation"),
    "fine_tune_strong": (STRONG, [], "15 head epochs, then 5 fine-tuning epochs at 1e-4 (adam), "
                         "no augmentation"),
    "fine_tune_strong_top_up": (STRONG, TOP_UP, "fine_tune_strong + 20 bad over-exposed from "
                                "real frames"),
    "fine_tune_strong_top_up_average": (
        [*STRONG, "--average_last_epochs", "3"], TOP_UP,
        "fine_tune_strong_top_up, exporting the mean weights of its last 3 epochs"),
    "frozen_at_defaults": ([*AT_DEFAULTS, "--nodo_fine_tuning"], [],
                           "the trainer's defaults (SGD 0.005, 20 % validation), frozen"),
    "fine_tune_at_defaults": ([*AT_DEFAULTS, "--do_fine_tuning"], [],
                              "--do_fine_tuning with every other flag at its default"),
    "fine_tune_one_stage": ([*AT_DEFAULTS, "--do_fine_tuning", "--fine_tune_after_epochs", "0"],
                            [], "TF Hub's one-stage schedule: unfrozen from epoch 1 at SGD 0.005"),
}
DEFAULT_RECIPES = ("frozen", "fine_tune_strong", "fine_tune_strong_top_up")
SEEDS = (42, 7, 123)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(DEFAULT_RECIPES),
                        help=f"comma-separated names of {', '.join(RECIPES)} "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="trainer seeds, each over the same folds (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fold_seed", type=int, default=crossval.DEFAULT_SEED)
    parser.add_argument("--quantize", action="append", default=[],
                        help="also judge this quantized variant of every recipe (repeatable)")
    args = parser.parse_args()
    names = [n for n in args.recipes.split(",") if n]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        parser.error(f"unknown recipe(s) {', '.join(unknown)}: use {', '.join(RECIPES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    quantize = [flag for q in args.quantize for flag in ("--quantize", q)]

    root = Path(tempfile.mkdtemp(prefix="bench-recipes-"))
    paths = ModelPaths("real", root)
    copied = sample.install_real(paths.all_dir)
    print(f"real sample: {copied.copied} into {paths.all_dir}; {args.folds} folds, "
          f"fold seed {args.fold_seed}, trainer seeds {seeds}; judged on on-board input",
          flush=True)
    rows = []
    for name in names:
        flags, top_up, what = RECIPES[name]
        flags = [*flags, *quantize]
        print(f"\n######## {name}: {what}\n  trainer flags: {' '.join(flags)}"
              + (f"; top-up {top_up}" if top_up else ""), flush=True)
        started = time.perf_counter()
        results = crossval.run_seeds(paths, flags, seeds, args.folds, args.fold_seed,
                                     top_up=top_up, modes=("onboard",), write_oof=False,
                                     log=lambda text: print(text, flush=True))
        wall = time.perf_counter() - started
        for result in results:
            print("SEED " + _seed_row(name, result), flush=True)
        for variant in results[0].variants:
            row = _row(name if variant == crossval.FLOAT else f"{name} [{variant}]", results,
                       variant, wall)
            rows.append(row)
            print("RESULT " + row, flush=True)
    print(f"\n{args.folds}-fold grouped cross-validation on the {sum(copied.copied.values())} "
          f"real thumbnails, trainer seeds {seeds}, on-board input. kappa: fold mean, then its "
          "mean ± sd over seeds; pooled: all out-of-fold predictions at once, mean ± sd over "
          "seeds (lowest seed); stress: the stress set's pooled kappa, the same way:",
          flush=True)
    print(HEADER)
    for row in rows:
        print(row)
    if os.environ.get("BENCH_KEEP") is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


HEADER = (f"{'recipe':<28} {'kappa':>15} {'pooled':>15} {'low':>6} {'stress':>15} {'low':>6} "
          f"{'accuracy':>15} {'macro-F1':>15} {'train s/fold':>13} {'wall s':>7}")


def _over_seeds(values: list[float]) -> str:
    return crossval.mean_sd(np.asarray(values, dtype=np.float64))


def _seed_row(name: str, result: crossval.CrossvalResult) -> str:
    pooled = result.pooled["onboard"][crossval.FLOAT]["kappa"]
    stressed = result.pooled.get(crossval.STRESS, {}).get(crossval.FLOAT, {}).get("kappa")
    fold_kappa = crossval.mean_sd(result.values("onboard", crossval.FLOAT, "kappa"))
    return (f"{name:<28} seed {result.trainer_seed}: kappa {fold_kappa} over folds, pooled "
            f"{pooled:.3f}, stress {'-' if stressed is None else f'{stressed:.3f}'}")


def _row(name: str, results: list[crossval.CrossvalResult], variant: str, wall: float) -> str:
    def fold_means(score: str) -> list[float]:
        return [float(np.nanmean(r.values("onboard", variant, score))) for r in results]

    def pooled(mode: str) -> list[float]:
        found = [r.pooled.get(mode, {}).get(variant, {}).get("kappa") for r in results]
        return [np.nan if v is None else v for v in found]

    seconds = np.concatenate([r.train_seconds for r in results])
    pooled_kappa, stress_kappa = pooled("onboard"), pooled(crossval.STRESS)
    return (f"{name:<28} {_over_seeds(fold_means('kappa')):>15} {_over_seeds(pooled_kappa):>15} "
            f"{np.nanmin(pooled_kappa):>6.3f} {_over_seeds(stress_kappa):>15} "
            f"{np.nanmin(stress_kappa) if not np.all(np.isnan(stress_kappa)) else np.nan:>6.3f} "
            f"{_over_seeds(fold_means('accuracy')):>15} {_over_seeds(fold_means('macro_f1')):>15} "
            f"{seconds.mean():>13.1f} {wall:>7.0f}")


if __name__ == "__main__":
    main()
