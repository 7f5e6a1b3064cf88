"""Which training recipe should a SmartCam user follow? Grouped k-fold
cross-validation of several recipes on the bundled real sample (123 OPS-SAT
thumbnails), each with several trainer seeds, every model judged through its
TFLite file on on-board input, as the spacecraft sees images, and on the stress
set (opssat.data.stress: the held-out frames with on-board exposure failures).

Each recipe is the toolkit's trainer with its flags (opssat/train/recipes.py); folds
are stratified by label and grouped by acquisition burst (opssat.train.crossval), the
same folds and stress families for every recipe and seed. Per recipe and seed: the
fold mean of Cohen's kappa, the pooled out-of-fold kappa, the failure family's pooled
kappa, the bright-valid family's pooled accuracy (bright earth and edge frames that
must not be called bad), the out-of-fold ECE before and after temperature scaling
fitted on the other folds, and the T fitted on all folds (``SEED`` lines). Per recipe
(``RESULT`` lines): the mean over seeds of each, the spread over seeds (sd, and the
lowest seed), accuracy, macro-F1 and the training time per fold. Choose on the mean
over seeds.

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
from opssat.train import crossval, recipes

DEFAULT_RECIPES = ("frozen", "fine_tune_strong", recipes.RECOMMENDED)
RECIPES = recipes.RECIPES
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
        recipe = RECIPES[name]
        flags, top_up, what = [*recipe.flags, *quantize], recipe.top_up, recipe.summary
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
          "seeds (lowest seed); stress: the failure family's pooled kappa, the same way; "
          "bright acc: the bright-valid family's pooled accuracy (share kept earth/edge), the "
          "same way; ECE: pooled out-of-fold ECE, then after temperature scaling fitted on "
          "the other folds; T: fitted on all out-of-fold probabilities, mean over seeds:",
          flush=True)
    print(HEADER)
    for row in rows:
        print(row)
    if os.environ.get("BENCH_KEEP") is None:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


HEADER = (f"{'recipe':<28} {'kappa':>15} {'pooled':>15} {'low':>6} {'stress':>15} {'low':>6} "
          f"{'bright acc':>15} {'low':>6} {'ECE':>15} {'ECE scaled':>15} {'T':>6} "
          f"{'accuracy':>15} {'macro-F1':>15} {'train s/fold':>13} {'wall s':>7}")


def _over_seeds(values: list[float]) -> str:
    return crossval.mean_sd(np.asarray(values, dtype=np.float64))


def _low(values: list[float]) -> float:
    found = np.asarray(values, dtype=np.float64)
    return float(np.nanmin(found)) if np.isfinite(found).any() else np.nan


def _pooled(result: crossval.CrossvalResult, mode: str, variant: str, score: str) -> float:
    value = result.pooled.get(mode, {}).get(variant, {}).get(score)
    return np.nan if value is None else float(value)


def _seed_row(name: str, result: crossval.CrossvalResult) -> str:
    fold_kappa = crossval.mean_sd(result.values("onboard", crossval.FLOAT, "kappa"))

    def get(mode: str, score: str) -> float:
        return _pooled(result, mode, crossval.FLOAT, score)

    return (f"{name:<28} seed {result.trainer_seed}: kappa {fold_kappa} over folds, pooled "
            f"{get('onboard', 'kappa'):.3f}, stress {get(crossval.STRESS, 'kappa'):.3f}, "
            f"bright-valid accuracy {get(crossval.BRIGHT, 'accuracy'):.3f}, ECE "
            f"{get('onboard', 'ece'):.3f} -> {get('onboard', 'ece_t'):.3f} scaled out of fold, "
            f"T {result.temperature.get(crossval.FLOAT, np.nan):.3f}")


def _row(name: str, results: list[crossval.CrossvalResult], variant: str, wall: float) -> str:
    def fold_means(score: str) -> list[float]:
        return [float(np.nanmean(r.values("onboard", variant, score))) for r in results]

    def pooled(mode: str, score: str = "kappa") -> list[float]:
        return [_pooled(r, mode, variant, score) for r in results]

    seconds = np.concatenate([r.train_seconds for r in results])
    temperatures = [r.temperature.get(variant, np.nan) for r in results]
    pooled_kappa, stress_kappa = pooled("onboard"), pooled(crossval.STRESS)
    bright = pooled(crossval.BRIGHT, "accuracy")
    return (f"{name:<28} {_over_seeds(fold_means('kappa')):>15} {_over_seeds(pooled_kappa):>15} "
            f"{_low(pooled_kappa):>6.3f} {_over_seeds(stress_kappa):>15} "
            f"{_low(stress_kappa):>6.3f} {_over_seeds(bright):>15} {_low(bright):>6.3f} "
            f"{_over_seeds(pooled('onboard', 'ece')):>15} "
            f"{_over_seeds(pooled('onboard', 'ece_t')):>15} {np.nanmean(temperatures):>6.3f} "
            f"{_over_seeds(fold_means('accuracy')):>15} {_over_seeds(fold_means('macro_f1')):>15} "
            f"{seconds.mean():>13.1f} {wall:>7.0f}")


if __name__ == "__main__":
    main()
