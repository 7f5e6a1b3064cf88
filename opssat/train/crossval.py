"""k-fold cross-validation of a training recipe on a model's ``data/all``.

With a hundred images, one held-out test split is too small to tell two recipes
apart: cross-validation trains k models, each judged on the images it never
saw, and reports the spread. Folds are stratified by label and grouped by
acquisition burst with the split's own rule (``split.burst_groups``), so
near-duplicates never sit on both sides. Each fold trains with the toolkit's
trainer into a temporary folder and is judged through its exported TFLite
files, run by LiteRT as on board, for each preprocessing mode. Every image's
out-of-fold probabilities go to ``crossval/oof_confidences*.csv`` in the
confidences.csv format, for label review.

Synthetic top-up images (``topup.is_synthetic`` names, or ``top_up`` made for
the run from each fold's real training frames) only ever train: they are never
held out and never scored.

The sample has few exposure failures, so each fold is also judged on its stress
set (``opssat.data.stress``): its held-out frames with exposure failures applied as
they happen on board, labelled by a stated rule, fed through the on-board chain.
Its scores sit beside the modes' under ``stress``.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.core.paths import ModelPaths, check_inside, tflite_variant
from opssat.data import images, split, stress, topup
from opssat.data.preprocess import PreprocessOptions
from opssat.judge import agreement, confidences, metrics
from opssat.judge.infer import Classifier, predicted_label
from opssat.onboard import flight, smartcam
from opssat.train.crossval_options import DEFAULT_FOLDS, DEFAULT_SEED, MODES  # noqa: F401

FLOAT = "float"
#: The stress set's scores sit beside the modes' under this name (on-board input).
STRESS = "stress"
STRESS_OOF_NAME = "oof_confidences_stress.csv"
STRESS_SET_NAME = "stress_set.csv"
#: Trainer flags crossval sets itself for every fold.
RESERVED_FLAGS = ("--image_dir", "--model", "--tflite_output_file", "--labels_output_file",
                  "--saved_model_dir", "--summaries_dir", "--record_file", "--cache_dir")
SCORES = ("accuracy", "macro_f1", "kappa")
_RUN_TOP_UP_START_MS = topup.TOP_UP_START_MS + 100 * 86_400_000


@dataclass
class Folds:
    """Images of ``data/all`` and the held-out fold of each."""

    paths: list[Path]
    labels: list[str]
    groups: list[int]
    fold: np.ndarray  # held-out fold index per image
    #: Synthetic images: in every training fold, never held out.
    synthetic: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.fold.max()) + 1


@dataclass
class FoldResult:
    index: int
    held_out: int
    trained_on: int
    train_seconds: float
    #: scores[mode][variant] = {"accuracy", "macro_f1", "kappa"}
    scores: dict[str, dict[str, dict[str, float | None]]]


@dataclass
class CrossvalResult:
    labels: list[str]
    folds: list[FoldResult]
    #: Out-of-fold figures over all images at once, same layout as FoldResult.scores.
    pooled: dict[str, dict[str, dict[str, float | None]]]
    oof_csvs: dict[str, Path]
    variants: list[str]
    #: The trainer's --seed (None: as its arguments said).
    trainer_seed: int | None = None
    #: Stressed frames judged (0: no stress set).
    stressed: int = 0

    def values(self, mode: str, variant: str, score: str) -> np.ndarray:
        found = [f.scores[mode][variant][score] for f in self.folds]
        return np.asarray([np.nan if v is None else v for v in found], dtype=np.float64)

    @property
    def train_seconds(self) -> np.ndarray:
        return np.asarray([f.train_seconds for f in self.folds])


def check_trainer_args(trainer_args: Sequence[str]) -> None:
    """Refuse the flags crossval sets itself, naming them."""
    given = [a.split("=", 1)[0] for a in trainer_args if a.startswith("--")]
    clash = [flag for flag in RESERVED_FLAGS if flag in given]
    if clash:
        raise UserError(f"{', '.join(clash)}: cross-validation sets these itself for every "
                        "fold (it trains into a temporary folder); leave them out")


def plan_folds(items: Sequence[tuple[Path, str]], folds: int = DEFAULT_FOLDS,
               seed: int = DEFAULT_SEED,
               group_seconds: float = split.DEFAULT_GROUP_SECONDS) -> Folds:
    """Assign each real (path, label) a held-out fold: stratified by label, grouped by
    burst; synthetic images are set apart. UserError when a label has fewer
    bursts than folds."""
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    real = [(Path(p), label) for p, label in items if not topup.is_synthetic(p)]
    synthetic = [(Path(p), label) for p, label in items if topup.is_synthetic(p)]
    if not real:
        raise UserError("no real images to cross-validate (only synthetic top-up images)")
    groups = split.burst_groups(real, group_seconds)
    labels = [label for _, label in real]
    for label in sorted(set(labels)):
        bursts = len({g for g, lab in zip(groups, labels, strict=True) if lab == label})
        if bursts < 2:
            raise UserError(
                f"label {label!r} has {bursts} acquisition burst(s) (images within "
                f"{group_seconds:g} s of each other count as one): no fold count can hold "
                f"it out; add {label} images from other passes")
        if bursts < folds:
            raise UserError(
                f"label {label!r} has {bursts} acquisition burst(s) (images within "
                f"{group_seconds:g} s of each other count as one), fewer than the {folds} "
                f"folds: use --folds {max(2, bursts)} or fewer, or add {label} images from "
                "other passes")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.full(len(real), -1, dtype=np.int64)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(real)), labels, groups)):
        fold[held_out] = index
    return Folds([p for p, _ in real], labels, groups, fold, synthetic)


def _link_training_set(folder: Path, items: Sequence[tuple[Path, str]]) -> None:
    """``folder/<label>/<name>`` symbolic links: a training folder without copies."""
    for path, label in items:
        target = folder / label / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), target)


def _judge(model_files: dict[str, Path], label_file: Path, files: Sequence[Path],
           modes: Sequence[str], onboard_channels: int, runtime: flight.Runtime | None = None
           ) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, str], np.ndarray]]:
    """Probabilities (n, labels) of each TFLite variant for ``files``, per mode;
    each image is decoded once per mode for all variants (mode flight: SmartCam's own
    binaries, ``runtime``, classify it)."""
    classifiers = {name: Classifier(path, label_file) for name, path in model_files.items()}
    size = next(iter(classifiers.values())).input_size
    n_labels = len(next(iter(classifiers.values())).labels)
    probs = {(m, v): np.zeros((len(files), n_labels)) for m in modes for v in classifiers}
    times = {(m, v): np.zeros(len(files)) for m in modes for v in classifiers}
    if flight.MODE in modes:
        for name, classifier in classifiers.items():
            with flight.FlightClassifier(runtime, model_files[name], classifier.labels, size,
                                         channels=onboard_channels) as flown:
                for row, path in enumerate(files):
                    probs[(flight.MODE, name)][row], times[(flight.MODE, name)][row] = \
                        flown.classify_file(path)
            agreement.check(probs[(flight.MODE, name)], classifier.labels,
                            [p.name for p in files], f"{flown.source} ({name})")
    for row, path in enumerate(files):
        for mode in (m for m in modes if m != flight.MODE):
            model_input = images.load_input(
                path, PreprocessOptions(mode, onboard_channels).preprocessing(size=size))
            for name, classifier in classifiers.items():
                probs[(mode, name)][row], times[(mode, name)][row] = \
                    classifier.classify(model_input)
    for name in classifiers if {flight.MODE, "onboard"} <= set(modes) else ():
        judged = agreement.compare(probs[("onboard", name)], probs[(flight.MODE, name)],
                                   classifiers[name].labels, [p.name for p in files])
        if judged.problem:
            warn(f"{name}: {judged.problem}")
    return probs, times


def _scores(expected: Sequence[str], probabilities: np.ndarray, labels: list[str]
            ) -> dict[str, float | None]:
    conf = metrics.Confidences(
        filenames=[""] * len(expected), expected=list(expected),
        predicted=[predicted_label(p, labels) for p in probabilities],
        probabilities=probabilities, labels=labels)
    perf = metrics.evaluate(conf)
    return {"accuracy": perf.accuracy, "macro_f1": perf.macro_f1, "kappa": perf.kappa}


def write_oof_csv(csv_path: Path, labels: list[str], files: Sequence[Path],
                  expected: Sequence[str], probabilities: np.ndarray, time_ms: np.ndarray,
                  threshold: float = smartcam.CONFIDENCE_THRESHOLD) -> Path:
    """One confidences.csv row per image (file name, its data/all label), atomically."""
    with atomic.staged_file(csv_path) as staged, \
            staged.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(confidences.header(labels))
        for path, label, probs, ms in zip(files, expected, probabilities, time_ms, strict=True):
            predicted = predicted_label(probs, labels, threshold)
            writer.writerow(confidences.row(path.name, ms, predicted, label, probs))
    return csv_path


def _make_top_up(folder: Path, top_up: Sequence[tuple[str, int]], seed: int,
                 training: Sequence[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The run's top-up for one fold, ``bad`` made from that fold's real training frames."""
    made = []
    for label, count in top_up:
        # Later timestamps than make_sample_data's, so both kinds can train together.
        made += [(p, label) for p in topup.top_up(
            folder, label, count, seed, start_ms=_RUN_TOP_UP_START_MS,
            sources=topup.top_up_sources(training))]
    return made


def _stress_set(folder: Path, held_out: Sequence[tuple[Path, str]], seed: int, log
                ) -> list[stress.StressedFrame]:
    """The fold's stress set: its held-out frames only, each with every exposure failure
    (only called when there is a ``bad`` label to judge it by)."""
    frames = stress.build(held_out, folder, seed)
    log(f"stress set: {len(frames)} frames from the {len(held_out)} held-out ones "
        f"({stress.summary(frames)})")
    return frames


def run(paths: ModelPaths, trainer_args: Sequence[str], folds: int = DEFAULT_FOLDS,
        seed: int = DEFAULT_SEED, group_seconds: float = split.DEFAULT_GROUP_SECONDS,
        top_up: Sequence[tuple[str, int]] = (), modes: Sequence[str] = MODES,
        write_oof: bool = True, log=print, with_stress: bool = True,
        runtime: flight.Runtime | None = None) -> CrossvalResult:
    """Cross-validate the trainer with ``trainer_args`` on ``paths``' data/all.

    Nothing of the model's own files changes; only ``crossval/`` is written
    (the out-of-fold CSVs and the stress set's, when ``write_oof``).
    """
    return run_seeds(paths, trainer_args, [None], folds, seed, group_seconds, top_up, modes,
                     write_oof, log, with_stress, runtime)[0]


def run_seeds(paths: ModelPaths, trainer_args: Sequence[str],
              trainer_seeds: Sequence[int | None], folds: int = DEFAULT_FOLDS,
              seed: int = DEFAULT_SEED, group_seconds: float = split.DEFAULT_GROUP_SECONDS,
              top_up: Sequence[tuple[str, int]] = (), modes: Sequence[str] = MODES,
              write_oof: bool = True, log=print, with_stress: bool = True,
              runtime: flight.Runtime | None = None) -> list[CrossvalResult]:
    """``run`` once per trainer ``--seed`` (None: as ``trainer_args`` say), over the same
    folds, top-up and stress set; each fold's backbone features are computed once for all
    seeds. Out-of-fold CSVs (``write_oof``) are the first seed's."""
    check_trainer_args(trainer_args)
    if not modes:
        raise UserError("--modes is empty: give onboard, ground, flight or several")
    for mode in modes:
        if mode not in (*images.PREPROCESS_MODES, flight.MODE):
            raise UserError(f"unknown --modes {mode!r}: use one of "
                            f"{', '.join((*images.PREPROCESS_MODES, flight.MODE))}")
        if mode == flight.MODE:
            if runtime is None:
                raise UserError("--modes flight runs SmartCam's own binaries: pass "
                                f"--smartcam_dir (or set {flight.ENV_VAR})")
            continue
        images.check_preprocessing(mode, smartcam.ONBOARD_CHANNELS, "--modes")
    found = split.scan(paths)
    for path, label, why in found.unreadable:
        log(f"warning: skipped {label}/{path.name}: {why}")
    plan = plan_folds(found.readable, folds, seed, group_seconds)
    if write_oof:  # before the first fold, not after hours of training
        outputs = [paths.oof_csv(mode) for mode in modes]
        if with_stress:
            outputs += [paths.crossval_dir / STRESS_OOF_NAME, paths.crossval_dir / STRESS_SET_NAME]
        check_inside(paths.model_dir, *outputs, what="cross-validation output")
        atomic.check_writable(*outputs)
    # Imported here: TensorFlow loads only once the data has passed its checks.
    from opssat.core.tf_setup import tf_keras
    from opssat.train.options import parse_flags
    from opssat.train.trainer import train

    template = parse_flags(trainer_args)
    template.check_settings()
    label_list = sorted(set(plan.labels))
    variants = [FLOAT, *template.recipe.quantized_variants]
    with_stress = with_stress and "onboard" in modes and stress.BAD in label_list
    runs = [_SeedRun(s, len(plan.paths), len(label_list), modes, variants)
            for s in trainer_seeds]
    frames: list[stress.StressedFrame] = []
    with tempfile.TemporaryDirectory(prefix="opssat-crossval-") as tmp:
        work = Path(tmp)
        for index in range(plan.count):
            held = np.flatnonzero(plan.fold == index)
            kept = np.flatnonzero(plan.fold != index)
            fold_dir = work / f"fold{index + 1}"
            real_training = [(plan.paths[i], plan.labels[i]) for i in kept]
            extra = plan.synthetic + _make_top_up(fold_dir / "top_up", top_up, seed,
                                                  real_training)
            training = real_training + extra
            _link_training_set(fold_dir / "training", training)
            held_out = [(plan.paths[i], plan.labels[i]) for i in held]
            held_paths = [p for p, _ in held_out]
            expected = [label for _, label in held_out]
            fold_frames = (_stress_set(fold_dir / "stress", held_out, seed, log)
                           if with_stress else [])
            frames += fold_frames
            counts = ", ".join(f"{lab} {sum(plan.labels[i] == lab for i in held)}"
                               for lab in label_list)
            log(f"\n== fold {index + 1}/{plan.count}: train on {len(training)} images "
                f"({len(extra)} synthetic), hold out {len(held)} ({counts})")
            for one in runs:
                model_file = fold_dir / f"model{one.tag}.tflite"
                label_file = fold_dir / f"labels{one.tag}.txt"
                options = template.with_paths(
                    image_dir=str(fold_dir / "training"), tflite_output_file=str(model_file),
                    labels_output_file=str(label_file),
                    record_file=str(fold_dir / f"train_record{one.tag}.json"),
                    cache_dir=str(fold_dir / "cache"))
                if one.seed is not None:
                    options = replace(options, recipe=replace(options.recipe, seed=one.seed))
                started = time.perf_counter()
                trained = train(options)
                seconds = time.perf_counter() - started
                tf_keras.backend.clear_session()
                if trained.labels != label_list:
                    raise UserError(f"fold {index + 1} trained on labels {trained.labels}, "
                                    f"not {label_list}: every label needs images in every "
                                    "training fold")
                model_files = {FLOAT: model_file,
                               **{q: tflite_variant(model_file, q) for q in variants[1:]}}
                fold_probs, fold_times = _judge(model_files, label_file, held_paths, modes,
                                                options.preprocessing.onboard_channels, runtime)
                scores: dict[str, dict[str, dict[str, float | None]]] = {}
                for (mode, variant), values in fold_probs.items():
                    one.probs[(mode, variant)][held] = values
                    one.times[(mode, variant)][held] = fold_times[(mode, variant)]
                    scores.setdefault(mode, {})[variant] = _scores(expected, values, label_list)
                if fold_frames:
                    stressed, _ = _judge(model_files, label_file, [f.path for f in fold_frames],
                                         ["onboard"], options.preprocessing.onboard_channels)
                    for variant in variants:
                        values = stressed[("onboard", variant)]
                        one.stress_probs.setdefault(variant, []).append(values)
                        scores.setdefault(STRESS, {})[variant] = _scores(
                            [f.label for f in fold_frames], values, label_list)
                result = FoldResult(index + 1, len(held), len(training), seconds, scores)
                one.folds.append(result)
                log((f"seed {one.seed}: " if one.seed is not None else "")
                    + format_fold(result, variants))
    results = []
    for number, one in enumerate(runs):
        pooled = {mode: {v: _scores(plan.labels, one.probs[(mode, v)], label_list)
                         for v in variants} for mode in modes}
        if frames:
            pooled[STRESS] = {v: _scores([f.label for f in frames],
                                         np.concatenate(one.stress_probs[v]), label_list)
                              for v in variants}
        oof = {}
        if write_oof and number == 0:
            for mode in modes:
                oof[mode] = write_oof_csv(paths.oof_csv(mode), label_list, plan.paths,
                                          plan.labels, one.probs[(mode, FLOAT)],
                                          one.times[(mode, FLOAT)])
            if frames:
                oof[STRESS] = write_oof_csv(
                    paths.crossval_dir / STRESS_OOF_NAME, label_list,
                    [f.path for f in frames], [f.label for f in frames],
                    np.concatenate(one.stress_probs[FLOAT]), np.zeros(len(frames)))
                stress.write_csv(paths.crossval_dir / STRESS_SET_NAME, frames)
        results.append(CrossvalResult(label_list, one.folds, pooled, oof, variants, one.seed,
                                      len(frames)))
    return results


@dataclass
class _SeedRun:
    """What one trainer seed gathers over the folds."""

    seed: int | None
    n_images: int
    n_labels: int
    modes: Sequence[str]
    variants: Sequence[str]
    folds: list[FoldResult] = field(default_factory=list)
    stress_probs: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (self.n_images, self.n_labels)
        self.probs = {(m, v): np.zeros(shape) for m in self.modes for v in self.variants}
        self.times = {(m, v): np.zeros(self.n_images) for m in self.modes
                      for v in self.variants}

    @property
    def tag(self) -> str:
        return "" if self.seed is None else f"_seed{self.seed}"


# --- text ---------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def format_fold(result: FoldResult, variants: Sequence[str]) -> str:
    lines = [f"fold {result.index}: trained in {result.train_seconds:.1f} s"]
    for mode, by_variant in result.scores.items():
        for variant in variants:
            s = by_variant[variant]
            lines.append(f"  {mode:<8} {variant:<8} accuracy {_fmt(s['accuracy'])}  macro-F1 "
                         f"{_fmt(s['macro_f1'])}  kappa {_fmt(s['kappa'])}")
    return "\n".join(lines)


def mean_sd(values: np.ndarray) -> str:
    """``mean ± sd`` over folds (sample standard deviation), NaN folds left out."""
    values = values[np.isfinite(values)]
    if not values.size:
        return "-"
    sd = values.std(ddof=1) if values.size > 1 else 0.0
    return f"{values.mean():.3f} ± {sd:.3f}"


def format_summary(result: CrossvalResult) -> str:
    """Per-fold scores, then mean ± sd and the pooled out-of-fold figures."""
    k = len(result.folds)
    header = f"{'input':<8} {'model':<8} {'':<7}" + "".join(
        f"{'fold ' + str(f.index):>8}" for f in result.folds)
    header += f"  {'mean ± sd':>15}  {'pooled':>7}"
    lines = [f"{k}-fold cross-validation, {sum(f.held_out for f in result.folds)} images "
             "(each judged by the model that did not train on it):", header]
    names = {"accuracy": "acc", "macro_f1": "macroF1", "kappa": "kappa"}
    for mode in result.pooled:
        for variant in result.variants:
            for score in SCORES:
                values = result.values(mode, variant, score)
                lines.append(
                    f"{mode:<8} {variant:<8} {names[score]:<7}"
                    + "".join(f"{_fmt(None if np.isnan(v) else v):>8}" for v in values)
                    + f"  {mean_sd(values):>15}  {_fmt(result.pooled[mode][variant][score]):>7}")
    if result.stressed:
        lines.append(f"{STRESS}: {result.stressed} stressed held-out frames (exposure failures "
                     "of opssat.data.stress, labelled by its rule), on-board input")
    lines.append(f"training time per fold: {mean_sd(result.train_seconds)} s")
    return "\n".join(lines)
