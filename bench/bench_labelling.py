"""What is a label worth? Labelling rounds simulated on the bundled real sample
(123 OPS-SAT thumbnails, labels known), uncertainty-first against random picking.

Each seed starts from a stratified quarter of the sample as the labelled set and the
rest as the unlabelled pool. Each round adds ROUND_SIZE images from the pool, either
in the labelling queue's order (opssat.judge.queue: a model trained on the labelled
set ranks the pool by margin, one image per burst first) or at random (the control),
and scores the recipe after each round: the frozen EfficientNet-Lite0 recipe on
on-board input (the trainer's own head, class weights, optimizer and epochs, on
cached backbone features), over fixed grouped folds (opssat.train.crossval.plan_folds
on the whole sample). Fold k's model trains on the labelled images outside fold k and
judges every image of fold k, labelled or not, so both strategies are scored on the
same 123 images, each judged by a model that never trained on it (out-of-fold kappa).

Figures are the head's float probabilities (as the float TFLite file computes them);
the features are computed once, so a round costs seconds.

    .venv/bin/python bench/bench_labelling.py                 # 3 seeds, every round
    .venv/bin/python bench/bench_labelling.py --seeds 42 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import train_test_split

from opssat.core.paths import PROJECT_ROOT, ModelPaths
from opssat.core.tf_setup import tf_keras
from opssat.data import sample
from opssat.judge import queue
from opssat.train import crossval, trainer
from opssat.train.backbones import load_backbone
from opssat.train.dataset import (
    FeatureCache,
    LabelledFiles,
    Preprocessing,
    feature_dataset,
    image_dataset,
    list_labelled_files,
)
from opssat.train.options import TrainOptions, parse_flags

#: The frozen recipe of bench_recipes.py (on-board input, 15 epochs, no hold-out).
FROZEN = ["--backbone", "efficientnet_lite0", "--validation_split", "0", "--train_epochs", "15",
          "--train_preprocess", "onboard"]
SEEDS = (42, 7, 123)
ROUND_SIZE = 10
STRATEGIES = ("uncertainty", "random")
#: Kappas whose label cost is compared (labels at equal kappa).
TARGETS = (0.88, 0.90, 0.92)
PLOT = PROJECT_ROOT / "docs" / "labelling_curves.png"


def features_of(files: LabelledFiles, options: TrainOptions, folder: Path) -> np.ndarray:
    """The frozen backbone's features of every image, on the recipe's input, computed once."""
    recipe = options.recipe
    backbone = load_backbone(recipe.backbone, recipe.tfhub_module, recipe.image_size,
                             recipe.backbone_weights)
    size = (backbone.image_size, backbone.image_size)
    preprocessing = Preprocessing(recipe.train_preprocess, recipe.onboard_channels, size)
    cache = FeatureCache(folder, backbone.identity, preprocessing, files)
    features, _ = cache.load_or_build(
        lambda batch: backbone.model(batch, training=False).numpy(),
        image_dataset(files, preprocessing, options.schedule.batch_size),
        backbone.feature_size)
    return np.asarray(features)


class Recipe:
    """The trainer's head (dropout, dense softmax, its optimizer, class weights and
    epochs) trained on cached features of some of the images."""

    def __init__(self, files: LabelledFiles, features: np.ndarray, options: TrainOptions):
        self.files, self.features, self.options = files, features, options

    def fit_predict(self, rows: np.ndarray, judged: np.ndarray, seed: int) -> np.ndarray:
        """Probabilities of ``judged`` rows from a head trained on ``rows``."""
        tf_keras.backend.clear_session()
        tf_keras.utils.set_random_seed(seed)
        options = self.options
        train_files = self.files.subset(rows)
        head = trainer.build_head(len(self.files.labels), options)
        trainer.compile_model(head, options)
        weights = trainer.class_weights(train_files, options.recipe.class_weights)
        data = feature_dataset(train_files, self.features, rows, options.schedule.batch_size,
                               seed, weights)
        head.fit(data, epochs=options.schedule.train_epochs, verbose=0)
        return head(self.features[judged], training=False).numpy()


def oof_kappa(recipe: Recipe, labelled: np.ndarray, fold: np.ndarray, seed: int) -> float:
    """Kappa over every image, each judged by the fold model that trained on the
    labelled images outside its fold."""
    predicted = np.zeros(len(fold), dtype=np.int64)
    for k in range(int(fold.max()) + 1):
        judged = np.flatnonzero(fold == k)
        rows = np.asarray([r for r in labelled if fold[r] != k])
        predicted[judged] = recipe.fit_predict(rows, judged, seed).argmax(axis=1)
    return float(cohen_kappa_score(recipe.files.targets, predicted))


def pick(strategy: str, recipe: Recipe, labelled: np.ndarray, pool: np.ndarray,
         rng: np.random.Generator, seed: int) -> np.ndarray:
    """The next ROUND_SIZE pool rows: the queue's first (one per burst, then the rest
    by uncertainty), or random ones."""
    if strategy == "random" or len(pool) <= ROUND_SIZE:
        return rng.permutation(pool)[:ROUND_SIZE]
    probabilities = recipe.fit_predict(labelled, pool, seed)
    paths = [recipe.files.paths[r] for r in pool]
    first = queue.order(paths, probabilities)
    score = queue.uncertainty(probabilities)
    rest = [i for i in np.argsort(-score, kind="stable") if i not in set(first)]
    return pool[np.asarray([*first, *rest][:ROUND_SIZE])]


def run_seed(recipe: Recipe, fold: np.ndarray, seed: int, rounds: int) -> dict[str, list]:
    """(labelled count, kappa) after each round, per strategy."""
    everything = np.arange(len(recipe.files))
    start, _ = train_test_split(everything, train_size=0.25, stratify=recipe.files.targets,
                                random_state=seed)
    start = np.sort(start)
    first = oof_kappa(recipe, start, fold, seed)
    print(f"seed {seed} start: {len(start)} labels, kappa {first:.3f}", flush=True)
    curves = {}
    for strategy in STRATEGIES:
        rng = np.random.default_rng(seed)
        labelled, curve = start, [(len(start), first)]
        for number in range(1, rounds + 1):
            pool = np.setdiff1d(everything, labelled)
            if not len(pool):
                break
            started = time.perf_counter()
            labelled = np.sort(np.concatenate([labelled, pick(strategy, recipe, labelled, pool,
                                                              rng, seed)]))
            kappa = oof_kappa(recipe, labelled, fold, seed)
            curve.append((len(labelled), kappa))
            print(f"seed {seed} {strategy:<11} round {number}: {len(labelled)} labels, kappa "
                  f"{kappa:.3f} ({time.perf_counter() - started:.1f} s)", flush=True)
        curves[strategy] = curve
    return curves


def labels_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Labels at which the mean curve first reaches ``target`` (linear in between)."""
    for (n0, k0), (n1, k1) in zip(curve, curve[1:], strict=False):
        if k0 >= target:
            return n0
        if k1 >= target:
            return n0 + (target - k0) / (k1 - k0) * (n1 - n0)
    return curve[-1][0] if curve and curve[-1][1] >= target else None


def table(results: dict[int, dict[str, list]]) -> tuple[str, dict[str, list]]:
    """The per-round table (mean ± sd over seeds) and the mean curves."""
    rounds = min(len(c) for r in results.values() for c in r.values())
    lines = [f"{'round':>5} {'labels':>6} {'uncertainty kappa':>19} {'random kappa':>15} "
             f"{'difference':>11}"]
    means: dict[str, list] = {s: [] for s in STRATEGIES}
    for number in range(rounds):
        values = {s: np.asarray([r[s][number][1] for r in results.values()]) for s in STRATEGIES}
        labels = int(np.mean([r[STRATEGIES[0]][number][0] for r in results.values()]))
        for s in STRATEGIES:
            means[s].append((labels, float(values[s].mean())))
        diff = values["uncertainty"] - values["random"]
        lines.append(f"{number:>5} {labels:>6} {crossval.mean_sd(values['uncertainty']):>19} "
                     f"{crossval.mean_sd(values['random']):>15} {diff.mean():>+11.3f}")
    return "\n".join(lines), means


def summary(results: dict[int, dict[str, list]], means: dict[str, list]) -> str:
    """Kappa at equal labels and labels at equal kappa, in words. Rounds where both
    strategies hold every image are left out of the gain (the same labelled set)."""
    total = max(n for n, _ in means["random"])
    rounds = [i for i, (n, _) in enumerate(means["random"]) if 0 < i and n < total]
    gains = np.asarray([[r["uncertainty"][i][1] - r["random"][i][1] for i in rounds]
                        for r in results.values()])
    per_round = gains.mean(axis=0)
    lines = [f"kappa at equal labels, uncertainty minus random, rounds {rounds[0]}-{rounds[-1]} "
             f"({means['random'][rounds[0]][0]}-{means['random'][rounds[-1]][0]} labels): mean "
             f"{gains.mean():+.3f}, per round from {per_round.min():+.3f} to "
             f"{per_round.max():+.3f}; over {gains.size} (seed, round) pairs uncertainty is "
             f"ahead {int((gains > 1e-9).sum())}, behind {int((gains < -1e-9).sum())}, level "
             f"{int((np.abs(gains) <= 1e-9).sum())} (one image of 123 moves kappa ~0.013)"]
    for target in TARGETS:
        reach = {s: labels_to_reach(means[s], target) for s in STRATEGIES}
        shown = {s: "never" if v is None else f"{v:.0f}" for s, v in reach.items()}
        lines.append(f"labels to reach mean kappa {target:.2f}: uncertainty "
                     f"{shown['uncertainty']}, random {shown['random']}")
    return "\n".join(lines)


def plot(results: dict[int, dict[str, list]], means: dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    colours = {"uncertainty": "#1f5fbf", "random": "#b3261e"}
    for strategy in STRATEGIES:
        for curve in (r[strategy] for r in results.values()):
            axes.plot(*zip(*curve, strict=True), color=colours[strategy], alpha=0.25, lw=1)
        axes.plot(*zip(*means[strategy], strict=True), color=colours[strategy], lw=2.2,
                  marker="o", label=f"{strategy} (mean of {len(results)} seeds)")
    axes.set_xlabel("labelled images")
    axes.set_ylabel("out-of-fold Cohen's kappa (all 123 images)")
    axes.set_title(f"Labelling {ROUND_SIZE} images per round: queue order vs random")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--rounds", type=int, default=99,
                        help="rounds per strategy (default: until the pool is empty)")
    parser.add_argument("--folds", type=int, default=crossval.DEFAULT_FOLDS)
    parser.add_argument("--fold_seed", type=int, default=crossval.DEFAULT_SEED)
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-labelling-") as tmp:
        paths = ModelPaths("real", Path(tmp))
        sample.install_real(paths.all_dir)
        files = list_labelled_files(paths.all_dir)
        options = parse_flags([*FROZEN, "--image_dir", str(paths.all_dir),
                               "--tflite_output_file", str(Path(tmp) / "unused.tflite")])
        features = features_of(files, options, Path(tmp) / "cache")
        print(f"features of {len(files)} images: {time.perf_counter() - started:.1f} s",
              flush=True)
        plan = crossval.plan_folds(
            [(p, files.labels[t]) for p, t in zip(files.paths, files.targets, strict=True)],
            args.folds, args.fold_seed)
        assert plan.paths == files.paths
        recipe = Recipe(files, features, options)
        results = {seed: run_seed(recipe, plan.fold, seed, args.rounds) for seed in seeds}
    text, means = table(results)
    print(f"\n{len(files)} real thumbnails, {args.folds} fixed grouped folds (fold seed "
          f"{args.fold_seed}), frozen EfficientNet-Lite0 head on on-board input, start: a "
          f"stratified quarter, {ROUND_SIZE} labels per round, seeds {seeds}; out-of-fold "
          "kappa, mean ± sd over seeds:")
    print(text)
    print(summary(results, means))
    plot(results, means, args.plot)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
