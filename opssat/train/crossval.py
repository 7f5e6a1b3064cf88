"""k-fold cross-validation of a training recipe on a model's ``data/all``.

With a hundred images, one held-out test split is too small to tell two recipes
apart: cross-validation trains k models, each judged on the images it never
saw, and reports the spread. Folds are stratified by label and grouped by
acquisition burst with the split's own rule (``split.burst_groups``), so
near-duplicates never sit on both sides. Each fold trains with the toolkit's
trainer into a temporary folder and is judged through its exported TFLite
files, run by LiteRT as on board, for each preprocessing mode. Every image's
out-of-fold probabilities go to ``crossval/oof_confidences*.csv`` (the stress
families' too) in the confidences.csv format, for label review.

Synthetic top-up images (``topup.is_synthetic`` names, or ``top_up`` made for
the run from each fold's real training frames) only ever train: they are never
held out and never scored.

The sample has few exposure failures, so each fold is also judged on its stress
set (``opssat.data.stress``): its held-out frames with exposure failures applied as
they happen on board, labelled by a stated rule, fed through the on-board chain.
Its scores sit beside the modes' under ``stress``, and those of the bright-but-valid
family (held-out earth and edge frames made brighter below the rule's ``bad`` line,
labels kept) under ``bright_valid``.

Folds train with ``--temperature off``; the pooled figures include the calibration
(ECE, Brier, NLL) out of fold, before and after temperature scaling fitted on the
other folds' probabilities, and the T fitted on all of them (the value to train with).
A fold's variant files are the ones its training record names.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.core.paths import ModelPaths, check_inside
from opssat.data import images, split, stress, topup
from opssat.judge import agreement, confidences, metrics
from opssat.judge.infer import judge_variants, predicted_label
from opssat.onboard import flight, smartcam
from opssat.train.crossval_options import DEFAULT_FOLDS, DEFAULT_SEED, MODES  # noqa: F401

if TYPE_CHECKING:
    from opssat.train.options import TrainOptions

FLOAT = "float"
#: The stress set's scores sit beside the modes' under this name (on-board input).
STRESS = "stress"
#: The bright-but-valid family's scores sit under this name (on-board input).
BRIGHT = "bright_valid"
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
    #: Bright-valid frames judged (0: none).
    bright: int = 0
    #: The temperature fitted on all out-of-fold probabilities (first mode), per variant.
    temperature: dict[str, float] = field(default_factory=dict)

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


def _scores(expected: Sequence[str], probabilities: np.ndarray, labels: list[str]
            ) -> dict[str, float | None]:
    """Accuracy, macro-F1, kappa and the calibration figures (ECE, Brier, NLL)."""
    conf = metrics.Confidences(
        filenames=[""] * len(expected), expected=list(expected),
        predicted=[predicted_label(p, labels) for p in probabilities],
        probabilities=probabilities, labels=labels)
    perf = metrics.evaluate(conf)
    calibration = metrics.calibration(probabilities, metrics.targets_of(expected, labels))
    return {"accuracy": perf.accuracy, "macro_f1": perf.macro_f1, "kappa": perf.kappa,
            "ece": calibration.ece, "brier": calibration.brier, "nll": calibration.nll}


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
    """The run's top-up for one fold, made from that fold's real training frames (each
    image's label is its folder's: ``bright`` ones keep their source's)."""
    made = []
    for label, count in top_up:
        # Later timestamps than make_sample_data's, so both kinds can train together.
        made += [(p, p.parent.name) for p in topup.top_up(
            folder, label, count, seed, start_ms=_RUN_TOP_UP_START_MS,
            sources=topup.top_up_sources(training))]
    return made


# --- one run: plan, train a fold, judge a fold, pool ------------------------------------


@dataclass
class _Plan:
    """What every fold and seed of one run shares."""

    folds: Folds
    labels: list[str]
    variants: list[str]
    modes: Sequence[str]
    template: TrainOptions
    #: The stress families judged beside the plain folds (STRESS, BRIGHT).
    families: tuple[str, ...]
    top_up: Sequence[tuple[str, int]]
    seed: int


@dataclass
class _Fold:
    """One fold's training folder, held-out images and stress families."""

    index: int
    folder: Path
    held: np.ndarray
    training: int
    synthetic: int
    #: family -> its frames made from this fold's held-out images
    frames: dict[str, list[stress.StressedFrame]]


@dataclass
class _SeedRun:
    """What one trainer seed gathers over the folds."""

    seed: int | None
    plan: _Plan
    folds: list[FoldResult] = field(default_factory=list)
    #: family -> variant -> per-fold probabilities
    family_probs: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (len(self.plan.folds.paths), len(self.plan.labels))
        keys = [(m, v) for m in self.plan.modes for v in self.plan.variants]
        self.probs = {k: np.zeros(shape) for k in keys}
        self.times = {k: np.zeros(shape[0]) for k in keys}

    @property
    def tag(self) -> str:
        return "" if self.seed is None else f"_seed{self.seed}"


def _check_modes(modes: Sequence[str], runtime: flight.Runtime | None) -> None:
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


def _plan(paths: ModelPaths, trainer_args: Sequence[str], folds: int, seed: int,
          group_seconds: float, top_up: Sequence[tuple[str, int]], modes: Sequence[str],
          with_stress: bool, log) -> _Plan:
    """Check everything, assign the folds and read the recipe: no training yet."""
    check_trainer_args(trainer_args)
    found = split.scan(paths)
    for path, label, why in found.unreadable:
        log(f"warning: skipped {label}/{path.name}: {why}")
    assigned = plan_folds(found.readable, folds, seed, group_seconds)
    from opssat.train.options import parse_flags

    # Folds train uncalibrated: crossval fits the temperature out of fold itself.
    template = parse_flags([*trainer_args, "--temperature", "off"])
    template.check_settings()
    labels = sorted(set(assigned.labels))
    families: tuple[str, ...] = ()
    if with_stress and "onboard" in modes and stress.BAD in labels:
        families = (STRESS, BRIGHT)
    return _Plan(assigned, labels, [FLOAT, *template.recipe.quantized_variants], modes,
                 template, families, top_up, seed)


def _prepare_fold(plan: _Plan, index: int, work: Path, log) -> _Fold:
    """Link the fold's training set (real frames, synthetic ones and its top-up) and make
    its stress families from its held-out frames."""
    folds = plan.folds
    held, kept = np.flatnonzero(folds.fold == index), np.flatnonzero(folds.fold != index)
    folder = work / f"fold{index + 1}"
    real_training = [(folds.paths[i], folds.labels[i]) for i in kept]
    extra = folds.synthetic + _make_top_up(folder / "top_up", plan.top_up, plan.seed,
                                           real_training)
    _link_training_set(folder / "training", real_training + extra)
    held_out = [(folds.paths[i], folds.labels[i]) for i in held]
    frames = {}
    if STRESS in plan.families:
        frames[STRESS] = stress.build(held_out, folder / "stress", plan.seed)
        frames[BRIGHT] = stress.build_bright(held_out, folder / "bright", plan.seed)
        log(f"stress set: {len(frames[STRESS])} frames from the {len(held_out)} held-out ones "
            f"({stress.summary(frames[STRESS])}); bright-valid: {len(frames[BRIGHT])}")
    counts = ", ".join(f"{lab} {sum(folds.labels[i] == lab for i in held)}"
                       for lab in plan.labels)
    log(f"\n== fold {index + 1}/{folds.count}: train on {len(kept) + len(extra)} images "
        f"({len(extra)} synthetic), hold out {len(held)} ({counts})")
    return _Fold(index, folder, held, len(kept) + len(extra), len(extra), frames)


def _train_fold(plan: _Plan, fold: _Fold, one: _SeedRun):
    """Train the fold's model for one seed; (trainer result, seconds)."""
    from opssat.core.tf_setup import tf_keras
    from opssat.train.trainer import train

    options = plan.template.with_paths(
        image_dir=str(fold.folder / "training"),
        tflite_output_file=str(fold.folder / f"model{one.tag}.tflite"),
        labels_output_file=str(fold.folder / f"labels{one.tag}.txt"),
        record_file=str(fold.folder / f"train_record{one.tag}.json"),
        cache_dir=str(fold.folder / "cache"))
    if one.seed is not None:
        options = replace(options, recipe=replace(options.recipe, seed=one.seed))
    started = time.perf_counter()
    trained = train(options)
    seconds = time.perf_counter() - started
    tf_keras.backend.clear_session()
    if trained.labels != plan.labels:
        raise UserError(f"fold {fold.index + 1} trained on labels {trained.labels}, "
                        f"not {plan.labels}: every label needs images in every training fold")
    return trained, seconds


def _model_files(record) -> dict[str, Path]:
    """The variants the trainer wrote, by crossval's names (``float`` for the float one)."""
    return {FLOAT if name == "none" else name: Path(path)
            for name, path in record.tflite_files.items()}


def _judge_fold(plan: _Plan, fold: _Fold, one: _SeedRun, trained, seconds: float,
                runtime: flight.Runtime | None) -> FoldResult:
    """Every variant on the held-out images (each mode) and on the stress families."""
    model_files = _model_files(trained.record)
    channels = plan.template.preprocessing.onboard_channels
    held_paths = [plan.folds.paths[i] for i in fold.held]
    expected = [plan.folds.labels[i] for i in fold.held]
    answers = judge_variants(model_files, plan.labels, held_paths, plan.modes, channels,
                             runtime)
    _warn_where_flight_differs(answers, model_files, held_paths)
    scores: dict[str, dict[str, dict[str, float | None]]] = {}
    for (mode, variant), values in answers.probabilities.items():
        one.probs[(mode, variant)][fold.held] = values
        one.times[(mode, variant)][fold.held] = answers.times_ms[(mode, variant)]
        scores.setdefault(mode, {})[variant] = _scores(expected, values, plan.labels)
    for family, frames in fold.frames.items():
        stressed = judge_variants(model_files, plan.labels, [f.path for f in frames],
                                  ["onboard"], channels)
        for variant in plan.variants:
            values = stressed.of("onboard", variant)
            one.family_probs.setdefault(family, {}).setdefault(variant, []).append(values)
            scores.setdefault(family, {})[variant] = _scores(
                [f.label for f in frames], values, plan.labels)
    return FoldResult(fold.index + 1, len(fold.held), fold.training, seconds, scores)


def _warn_where_flight_differs(answers, model_files: dict[str, Path],
                               files: Sequence[Path]) -> None:
    """With onboard and flight judged, each variant's SmartCam answers against LiteRT's on
    the same input, by the one judge (``agreement.compare``): a warning naming the images."""
    if not {flight.MODE, "onboard"} <= {mode for mode, _ in answers.probabilities}:
        return
    for name in model_files:
        judged = agreement.compare(answers.of("onboard", name), answers.of(flight.MODE, name),
                                   answers.labels, [p.name for p in files])
        if judged.problem:
            warn(f"{name}: {judged.problem}")


def _pool(plan: _Plan, one: _SeedRun, frames: dict[str, list[stress.StressedFrame]]
          ) -> CrossvalResult:
    """The seed's out-of-fold figures over all images at once, the temperature fitted on
    them, and the out-of-fold temperature-scaled calibration."""
    folds = plan.folds
    pooled = {mode: {v: _scores(folds.labels, one.probs[(mode, v)], plan.labels)
                     for v in plan.variants} for mode in plan.modes}
    targets = metrics.targets_of(folds.labels, plan.labels)
    temperatures: dict[str, float] = {}
    for mode in plan.modes:
        for variant in plan.variants:
            probs = one.probs[(mode, variant)]
            scaled, _ = metrics.cross_fitted(probs, targets, folds.fold)
            after = metrics.calibration(scaled, targets)
            pooled[mode][variant].update(ece_t=after.ece, brier_t=after.brier, nll_t=after.nll)
            if mode == plan.modes[0]:
                temperatures[variant] = metrics.fit_temperature(probs, targets)
    for family, family_frames in frames.items():
        pooled[family] = {v: _scores([f.label for f in family_frames],
                                     np.concatenate(one.family_probs[family][v]), plan.labels)
                          for v in plan.variants}
    stressed = len(frames.get(STRESS, []))
    return CrossvalResult(plan.labels, one.folds, pooled, {}, list(plan.variants), one.seed,
                          stressed, len(frames.get(BRIGHT, [])), temperatures)


def _write_oof(paths: ModelPaths, plan: _Plan, one: _SeedRun,
               frames: dict[str, list[stress.StressedFrame]]) -> dict[str, Path]:
    """The first seed's out-of-fold CSVs (each mode, the stress set) and the stress set."""
    folds, oof = plan.folds, {}
    for mode in plan.modes:
        oof[mode] = write_oof_csv(paths.oof_csv(mode), plan.labels, folds.paths, folds.labels,
                                  one.probs[(mode, FLOAT)], one.times[(mode, FLOAT)])
    for family, family_frames in frames.items():
        oof_name, set_name = family_csv_names(family)
        oof[family] = write_oof_csv(
            paths.crossval_dir / oof_name, plan.labels, [f.path for f in family_frames],
            [f.label for f in family_frames], np.concatenate(one.family_probs[family][FLOAT]),
            np.zeros(len(family_frames)))
        stress.write_csv(paths.crossval_dir / set_name, family_frames)
    return oof


def family_csv_names(family: str) -> tuple[str, str]:
    """A stress family's out-of-fold CSV and its frames' CSV (crossval/)."""
    if family == STRESS:
        return STRESS_OOF_NAME, STRESS_SET_NAME
    return f"oof_confidences_{family}.csv", f"{family}_set.csv"


def _check_oof_outputs(paths: ModelPaths, modes: Sequence[str], with_stress: bool) -> None:
    """Before the first fold, not after hours of training."""
    outputs = [paths.oof_csv(mode) for mode in modes]
    if with_stress:
        outputs += [paths.crossval_dir / name
                    for family in (STRESS, BRIGHT) for name in family_csv_names(family)]
    check_inside(paths.model_dir, *outputs, what="cross-validation output")
    atomic.check_writable(*outputs)


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
    folds, top-up and stress families; each fold's backbone features are computed once
    for all seeds. Out-of-fold CSVs (``write_oof``) are the first seed's."""
    _check_modes(modes, runtime)
    plan = _plan(paths, trainer_args, folds, seed, group_seconds, top_up, modes, with_stress,
                 log)
    if write_oof:
        _check_oof_outputs(paths, modes, bool(plan.families))
    runs = [_SeedRun(s, plan) for s in trainer_seeds]
    frames: dict[str, list[stress.StressedFrame]] = {family: [] for family in plan.families}
    with tempfile.TemporaryDirectory(prefix="opssat-crossval-") as tmp:
        for index in range(plan.folds.count):
            fold = _prepare_fold(plan, index, Path(tmp), log)
            for family in plan.families:
                frames[family] += fold.frames[family]
            for one in runs:
                trained, seconds = _train_fold(plan, fold, one)
                result = _judge_fold(plan, fold, one, trained, seconds, runtime)
                one.folds.append(result)
                log((f"seed {one.seed}: " if one.seed is not None else "")
                    + format_fold(result, plan.variants))
    results = [_pool(plan, one, frames) for one in runs]
    if write_oof:
        results[0].oof_csvs = _write_oof(paths, plan, runs[0], frames)
    return results


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
    if result.bright:
        lines.append(f"{BRIGHT}: {result.bright} held-out earth and edge frames made brighter "
                     "or more contrasty, still below the rule's bad line (labels kept)")
    lines += calibration_lines(result)
    lines.append(f"training time per fold: {mean_sd(result.train_seconds)} s")
    return "\n".join(lines)


def calibration_lines(result: CrossvalResult) -> list[str]:
    """Pooled out-of-fold ECE, Brier and NLL of each input and variant, before and after
    temperature scaling fitted out of fold, and the T fitted on every fold."""
    lines = ["calibration, out of fold (ECE: 10 equal-width bins of the top-1 probability; "
             "scaled: T fitted on the other folds' probabilities, never the fold's own):"]
    for mode, by_variant in result.pooled.items():
        for variant in result.variants:
            s = by_variant[variant]
            line = (f"  {mode:<12} {variant:<8} ECE {_fmt(s['ece'])}  Brier {_fmt(s['brier'])}  "
                    f"NLL {_fmt(s['nll'])}")
            if "ece_t" in s:
                line += (f"  | scaled: ECE {_fmt(s['ece_t'])}  Brier {_fmt(s['brier_t'])}  "
                         f"NLL {_fmt(s['nll_t'])}")
            lines.append(line)
    for variant, t in result.temperature.items():
        lines.append(f"temperature fitted on all out-of-fold probabilities ({variant}): "
                     f"T = {t:.3f} (train with --temperature {t:.3f} to fold it in)")
    return lines
