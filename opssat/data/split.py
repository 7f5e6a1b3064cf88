"""The train/test split: stratified per label, seeded, and grouped by
acquisition time so that near-duplicate thumbnails taken seconds apart never
land on both sides (that would leak test images into training).

``plan_split`` is pure (file names in, assignments out); ``split_model`` scans a
model's ``data/all``, checks it, and copies the files. Nothing under
``data/all`` changes, except that ``quarantine=True`` moves unreadable files to
``data/quarantine``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths, check_inside
from opssat.data import images, labels, topup

DEFAULT_SEED = 42
DEFAULT_GROUP_SECONDS = 60.0
TRAINING = "training"
TEST = "test"
CSV_COLUMNS = ("path", "label", "side", "group")


@dataclass(frozen=True)
class Assignment:
    """Where one image goes; images of one ``group`` always share a side."""

    path: Path
    label: str
    side: str
    group: int


@dataclass
class SplitPlan:
    assignments: list[Assignment]
    #: Things the user should know, e.g. a label too small to reach both sides.
    notes: list[str] = field(default_factory=list)

    def labels(self) -> list[str]:
        return sorted({a.label for a in self.assignments})

    def counts(self) -> dict[str, dict[str, int]]:
        """label -> {"all", "training", "test"} image counts."""
        table = {label: {"all": 0, TRAINING: 0, TEST: 0} for label in self.labels()}
        for a in self.assignments:
            table[a.label]["all"] += 1
            table[a.label][a.side] += 1
        return table


@dataclass
class SplitResult:
    plan: SplitPlan
    scan: Scan
    #: (from, to) of each file moved to quarantine.
    quarantined: list[tuple[Path, Path]]
    csv_path: Path


# --- argument checks ---------------------------------------------------------------


def parse_test_pct(text: str) -> float:
    """The test percentage from the command line, strictly between 0 and 100."""
    try:
        pct = float(text.strip().removesuffix("%"))
    except ValueError:
        pct = math.nan
    if not 0 < pct < 100:
        raise UserError(
            f"test percentage {text!r} is not a number between 0 and 100 (exclusive): "
            "give e.g. 20 for 20% test images"
        )
    return pct


def parse_group_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise UserError(
            f"--group_seconds {text!r} is not a number >= 0: give e.g. 60 "
            "(0 groups only identical timestamps)"
        )
    return seconds


def parse_seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise UserError(f"--seed {text!r} is not a whole number >= 0: give e.g. {DEFAULT_SEED}")
    return seed


# --- planning (pure) ------------------------------------------------------------------


def time_groups(paths: Sequence[Path], group_seconds: float) -> list[list[Path]]:
    """Chain images by sorted acquisition time: a gap over ``group_seconds``
    starts a new group. Names without a timestamp are groups of their own."""
    timed = sorted(
        ((images.timestamp_ms(p), p.name, p) for p in paths if images.timestamp_ms(p) is not None),
    )
    groups: list[list[Path]] = []
    previous = None
    for ms, _, path in timed:
        if previous is None or ms - previous > group_seconds * 1000:
            groups.append([])
        groups[-1].append(path)
        previous = ms
    untimed = sorted((p for p in paths if images.timestamp_ms(p) is None), key=lambda p: p.name)
    groups.extend([p] for p in untimed)
    return groups


def _by_label(items: Iterable[tuple[Path, str]]) -> dict[str, list[Path]]:
    by_label: dict[str, list[Path]] = {}
    for path, label in items:
        by_label.setdefault(label, []).append(Path(path))
    return by_label


def burst_groups(
    items: Iterable[tuple[Path, str]], group_seconds: float = DEFAULT_GROUP_SECONDS
) -> list[int]:
    """A group number for each (path, label), in the given order: the bursts the
    split keeps on one side (``time_groups`` within each label), for any other
    split that must keep them together, such as cross-validation folds."""
    items = [(Path(path), label) for path, label in items]
    number: dict[tuple[str, Path], int] = {}
    groups = ((label, group) for label, paths in sorted(_by_label(items).items())
              for group in time_groups(paths, group_seconds))
    for index, (label, group) in enumerate(groups):
        number.update(((label, path), index) for path in group)
    return [number[(label, path)] for path, label in items]


def _split_at_largest_gap(group: list[Path]) -> tuple[list[Path], list[Path]]:
    stamps = [images.timestamp_ms(p) or 0 for p in group]
    gaps = np.diff(stamps)
    cut = int(np.argmax(gaps)) + 1
    return group[:cut], group[cut:]


def _closest_subset(sizes: Sequence[int], target: float) -> list[int]:
    """Indices of groups whose sizes sum closest to ``target``, leaving at
    least one image on each side (exact subset sum; bit sets keep it fast)."""
    total = sum(sizes)
    reach = [1]
    for size in sizes:
        reach.append(reach[-1] | (reach[-1] << size))
    sums = [k for k in range(1, total) if reach[-1] >> k & 1]
    best = min(sums, key=lambda k: (abs(k - target), k))
    chosen = []
    for i in reversed(range(len(sizes))):
        if best >= sizes[i] and reach[i] >> (best - sizes[i]) & 1:
            chosen.append(i)
            best -= sizes[i]
    return chosen


def _label_rng(seed: int, label: str) -> np.random.Generator:
    """One generator per label, so adding a label leaves the others' split alone."""
    return np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])


def plan_split(
    items: Iterable[tuple[Path, str]],
    test_pct: float,
    seed: int = DEFAULT_SEED,
    group_seconds: float = DEFAULT_GROUP_SECONDS,
) -> SplitPlan:
    """Assign each (path, label) to training or test.

    Per label, whole time groups go to test so that the test share is as close
    as possible to ``test_pct``; a label with at least two images always gets
    at least one on each side (a single group is then cut at its largest time
    gap, and a note says so). Synthetic top-up images (``topup.is_synthetic``)
    always train: the test side holds real images only. The same inputs and
    seed give the same plan.
    """
    by_label = _by_label(items)
    assignments: list[Assignment] = []
    notes: list[str] = []
    next_group = 1
    for label in sorted(by_label):
        synthetic = [p for p in by_label[label] if topup.is_synthetic(p)]
        if synthetic:
            assignments.extend(Assignment(p, label, TRAINING, next_group) for p in synthetic)
            next_group += 1
        real = [p for p in by_label[label] if not topup.is_synthetic(p)]
        groups = time_groups(real, group_seconds)
        total = sum(len(g) for g in groups)
        test_groups: set[int] = set()
        if total == 0:
            notes.append(f"label {label!r} has only synthetic images: they all go to training")
        elif total == 1:
            notes.append(f"label {label!r} has only 1 image: it goes to training, none to test")
        else:
            if len(groups) == 1:
                groups = list(_split_at_largest_gap(groups[0]))
                notes.append(
                    f"label {label!r}: all {total} images lie within {group_seconds:g} s of each "
                    f"other; cut them at the largest time gap ({len(groups[0])} / "
                    f"{len(groups[1])}) so both sides get images (near-duplicates may leak: "
                    "add images from other passes)"
                )
            order = _label_rng(seed, label).permutation(len(groups))
            chosen = _closest_subset([len(groups[i]) for i in order], total * test_pct / 100)
            test_groups = {int(order[i]) for i in chosen}
        for index, group in enumerate(groups):
            side = TEST if index in test_groups else TRAINING
            assignments.extend(Assignment(p, label, side, next_group) for p in group)
            next_group += 1
    return SplitPlan(assignments, notes)


# --- the model folder ---------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """What ``data/all`` holds: images to split, files to skip, files to ignore."""

    readable: list[tuple[Path, str]]
    #: (path, label, why) of files that cannot be decoded.
    unreadable: list[tuple[Path, str, str]]
    #: Files lying directly in ``data/all``, outside any label folder.
    ignored: list[Path]


def scan(paths: ModelPaths) -> Scan:
    """Check every file of ``data/all/<label>/``; raise a UserError for a layout
    the split cannot use."""
    paths.require_model_dir()
    all_dir = paths.all_dir
    if not all_dir.is_dir():
        raise UserError(
            f"{all_dir} does not exist: run ./create_dirs.sh {paths.name}, then put images "
            "in data/all/<label>/"
        )
    folders = images.label_folders(all_dir)
    if not folders:
        raise UserError(
            f"{all_dir} has no label folders: put images in data/all/<label>/ "
            "(e.g. data/all/earth/, data/all/bad/)"
        )
    if len(folders) == 1:
        raise UserError(
            f"{all_dir} has only one label ({folders[0].name}): a classifier needs at least "
            "two, add another folder data/all/<label>/ with images"
        )
    for folder in folders:
        labels.check_label(folder.name, f"label folder {folder}")
    readable: list[tuple[Path, str]] = []
    unreadable: list[tuple[Path, str, str]] = []
    for folder in folders:
        files = images.list_files(folder)
        good = 0
        for path in files:
            if images.readable(path):
                readable.append((path, folder.name))
                good += 1
            else:
                unreadable.append((path, folder.name, _why_unreadable(path)))
        if not good:
            detail = f"{len(files)} unreadable file(s)" if files else "it is empty"
            raise UserError(
                f"label folder {folder} has no readable image ({detail}): add JPEG/PNG/BMP "
                "images or remove the folder"
            )
    return Scan(readable, unreadable, images.list_files(all_dir))


def _why_unreadable(path: Path) -> str:
    try:
        images.open_rgb(path)
    except images.UnreadableImageError as err:
        return str(err)
    return f"{path}: unreadable"


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def check_outputs_empty(paths: ModelPaths, force: bool) -> None:
    busy = [d for d in (paths.training_dir, paths.test_dir) if not _is_empty(d)]
    if busy and not force:
        names = " and ".join(str(d) for d in busy)
        raise UserError(
            f"{names} not empty: a split exists already; use --force to replace it "
            "(clears only data/training and data/test)"
        )


def quarantine(
    unreadable: Iterable[tuple[Path, str, str]], paths: ModelPaths
) -> list[tuple[Path, Path]]:
    """Move unreadable files to ``data/quarantine/<label>/``; never overwrite.

    A rename (both folders are under ``data/``), so a file is either moved or left
    where it was, never copied half-way.
    """
    moved = []
    for path, label, _ in unreadable:
        folder = paths.quarantine_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        n = 1
        while target.exists():
            target = folder / f"{path.stem}-{n}{path.suffix}"
            n += 1
        try:
            os.rename(path, target)
        except OSError as err:
            failure = atomic.write_failure(err)
            raise UserError(f"cannot move to quarantine: {failure}" if failure
                            else f"cannot move {path} to {target}: {err.strerror}") from err
        moved.append((path, target))
    return moved


#: Staging of a split in data/: ``.split-<pid>.<random>.tmp``, removed by the next run
#: when the run that made it was killed.
_STAGING_PREFIX = ".split-"


def check_targets(paths: ModelPaths) -> None:
    """Refuse, before anything is replaced, outputs the split cannot replace whole:
    data/training and data/test must be real folders (or missing) and split.csv a file,
    all inside the model folder."""
    for target, kind in ((paths.training_dir, "folder"), (paths.test_dir, "folder"),
                         (paths.split_csv, "file")):
        wrong = (target.is_symlink() or (kind == "folder" and target.exists()
                                         and not target.is_dir())
                 or (kind == "file" and target.is_dir()))
        if wrong:
            what = "a symlink" if target.is_symlink() else "not a " + kind
            raise UserError(f"{target} is {what}: the split replaces it with a {kind} of its "
                            "own; move it away, then run again (nothing was changed)")
    atomic.check_writable(paths.training_dir, paths.test_dir, paths.split_csv)


def apply_split(plan: SplitPlan, paths: ModelPaths) -> None:
    """Copy the images into fresh ``data/training`` and ``data/test`` and write
    split.csv, replacing all three together.

    Everything goes to a staging folder first, so a failure (a full disk) leaves the
    old split and its split.csv as they were.
    """
    atomic.remove_stale(paths.data_dir, _STAGING_PREFIX)
    atomic.remove_stale(paths.data_dir, _STAGING_PREFIX, suffix="")  # named without a pid
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}.", suffix=".tmp",
                                    dir=paths.data_dir))
    try:
        for side in (TRAINING, TEST):
            (staging / side).mkdir()
        for a in plan.assignments:
            target = staging / a.side / a.label / a.path.name
            target.parent.mkdir(exist_ok=True)
            shutil.copy2(a.path, target)
        (staging / paths.split_csv.name).write_text(csv_text(plan, paths), encoding="utf-8")
        atomic.replace_path(staging / TRAINING, paths.training_dir)
        atomic.replace_path(staging / TEST, paths.test_dir)
        atomic.replace_path(staging / paths.split_csv.name, paths.split_csv)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def csv_text(plan: SplitPlan, paths: ModelPaths) -> str:
    """``split.csv``: one row per image, paths relative to the model folder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in sorted(plan.assignments, key=lambda a: (a.label, a.path.name)):
        relative = a.path.relative_to(paths.model_dir).as_posix()
        writer.writerow((relative, a.label, a.side, a.group))
    return buffer.getvalue()


def split_model(
    paths: ModelPaths,
    test_pct: float,
    seed: int = DEFAULT_SEED,
    group_seconds: float = DEFAULT_GROUP_SECONDS,
    force: bool = False,
    move_unreadable: bool = False,
) -> SplitResult:
    """Check ``data/all``, plan, then (only when every check passed) quarantine and copy."""
    found = scan(paths)
    check_targets(paths)
    check_outputs_empty(paths, force)
    plan = plan_split(found.readable, test_pct, seed, group_seconds)
    if move_unreadable:
        check_inside(paths.model_dir, paths.quarantine_dir, what="quarantine folder")
        atomic.check_writable(*(path for path, _, _ in found.unreadable),
                              *(paths.quarantine_dir / label for _, label, _ in found.unreadable))
    moved = quarantine(found.unreadable, paths) if move_unreadable else []
    apply_split(plan, paths)
    return SplitResult(plan, found, moved, paths.split_csv)


def format_table(plan: SplitPlan) -> str:
    """The per-label table the script prints: label / all / training / test."""
    counts = plan.counts()
    width = max([len("label"), len("total"), *map(len, counts)])
    rows = [f"{'label':<{width}}  {'all':>5}  {TRAINING:>8}  {TEST:>5}"]
    totals = {"all": 0, TRAINING: 0, TEST: 0}
    for label, row in counts.items():
        rows.append(f"{label:<{width}}  {row['all']:>5}  {row[TRAINING]:>8}  {row[TEST]:>5}")
        for key in totals:
            totals[key] += row[key]
    rows.append(f"{'total':<{width}}  {totals['all']:>5}  {totals[TRAINING]:>8}  {totals[TEST]:>5}")
    return "\n".join(rows)
