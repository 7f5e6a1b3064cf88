"""The split: stratified, seeded, grouped by time, never touching data/all,
and every bad input answered with one line."""

from __future__ import annotations

import csv
import hashlib
import itertools
import subprocess
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script

from opssat.core.errors import UserError
from opssat.core.paths import model_paths
from opssat.data import sample, split, topup

T0 = 1_608_588_759_000
MINUTE = 60_000


def _name(ms: int) -> Path:
    return Path(sample.file_name(ms))


def _spread(label: str, n: int, start: int = T0, gap_ms: int = 10 * MINUTE) -> list:
    """``n`` images of ``label`` far apart in time: each its own group."""
    return [(_name(start + i * gap_ms), label) for i in range(n)]


def _bursts(label: str, sizes: list[int], start: int = T0, step_ms: int = 4_000) -> list:
    """Bursts of images ``step_ms`` apart, bursts an hour apart."""
    items = []
    for b, size in enumerate(sizes):
        items += [(_name(start + b * 60 * MINUTE + i * step_ms), label) for i in range(size)]
    return items


def _sides(plan: split.SplitPlan) -> dict[Path, str]:
    return {a.path: a.side for a in plan.assignments}


# --- planning ------------------------------------------------------------------------


def test_stratified_with_minimum_counts() -> None:
    items = _spread("bad", 50) + _spread("earth", 20, T0 + 1) + _spread("edge", 2, T0 + 2)
    items += _spread("lonely", 1, T0 + 3)
    plan = split.plan_split(items, 20)
    counts = plan.counts()
    assert counts["bad"] == {"all": 50, "training": 40, "test": 10}
    assert counts["earth"] == {"all": 20, "training": 16, "test": 4}
    assert counts["edge"] == {"all": 2, "training": 1, "test": 1}
    assert counts["lonely"] == {"all": 1, "training": 1, "test": 0}
    assert any("lonely" in note for note in plan.notes)


@pytest.mark.parametrize("pct", [1, 5, 50, 95, 99])
def test_every_label_with_two_images_reaches_both_sides(pct: float) -> None:
    items = []
    for n in range(2, 9):
        items += _spread(f"label{n}", n, T0 + n)
    for label, row in split.plan_split(items, pct).counts().items():
        assert row["training"] >= 1 and row["test"] >= 1, label


def test_same_seed_same_split_and_other_seed_differs() -> None:
    items = _bursts("bad", [3, 1, 2, 4, 1, 1, 2, 3, 1, 2]) + _spread("earth", 30, T0 + 7)
    first = _sides(split.plan_split(items, 25, seed=7))
    assert first == _sides(split.plan_split(list(reversed(items)), 25, seed=7))
    assert first != _sides(split.plan_split(items, 25, seed=8))


def test_adding_a_label_leaves_the_others_alone() -> None:
    base = _spread("bad", 30) + _spread("earth", 12, T0 + 1)
    before = _sides(split.plan_split(base, 20))
    after = _sides(split.plan_split(base + _spread("edge", 5, T0 + 2), 20))
    assert all(after[path] == side for path, side in before.items())


def test_no_time_group_on_both_sides() -> None:
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 6, 25)]
    items = _bursts("earth", sizes) + _bursts("bad", [2, 2, 1, 3], T0 + 30 * MINUTE)
    plan = split.plan_split(items, 30, group_seconds=60)
    by_group = defaultdict(set)
    for a in plan.assignments:
        by_group[a.group].add(a.side)
    assert all(len(sides) == 1 for sides in by_group.values())
    # Images seconds apart share a group; bursts an hour apart do not.
    earth = sorted((a for a in plan.assignments if a.label == "earth"), key=lambda a: a.path.name)
    groups = [len(list(g)) for _, g in itertools.groupby(earth, key=lambda a: a.group)]
    assert groups == sizes
    test_share = plan.counts()["earth"]["test"] / sum(sizes)
    assert abs(test_share - 0.30) < 0.05


def test_group_chains_neighbours_within_the_window() -> None:
    stamps = [0, 50_000, 100_000, 100_000 + 61_000, 400_000]  # a chain of 3, then 1, then 1
    names = [_name(T0 + s) for s in stamps]
    groups = split.time_groups(names + [Path("notes_a.jpeg"), Path("b.png")], 60)
    assert [len(g) for g in groups] == [3, 1, 1, 1, 1]
    assert groups[-2:] == [[Path("b.png")], [Path("notes_a.jpeg")]]
    assert [len(g) for g in split.time_groups(names, 0)] == [1, 1, 1, 1, 1]


def test_single_burst_is_cut_at_its_largest_gap() -> None:
    offsets = [0, 3_000, 6_000, 30_000, 33_000]
    items = [(_name(T0 + o), "edge") for o in offsets] + _spread("bad", 10, T0 + 1)
    plan = split.plan_split(items, 20)
    edge = [a for a in plan.assignments if a.label == "edge"]
    sides = {a.path.name: a.side for a in edge}
    first = {sides[_name(T0 + o).name] for o in offsets[:3]}
    second = {sides[_name(T0 + o).name] for o in offsets[3:]}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert any("edge" in note and "largest time gap" in note for note in plan.notes)


def test_test_share_is_the_closest_reachable() -> None:
    """Against brute force over every choice of groups."""
    rng = np.random.default_rng(5)
    for trial in range(30):
        sizes = [int(s) for s in rng.integers(1, 7, int(rng.integers(2, 8)))]
        pct = float(rng.uniform(1, 99))
        plan = split.plan_split(_bursts("x", sizes) + _spread("y", 2, T0 + 1), pct, seed=trial)
        got = plan.counts()["x"]["test"]
        total = sum(sizes)
        reachable = {
            sum(c) for r in range(1, len(sizes)) for c in itertools.combinations(sizes, r)
        }
        best = min(abs(s - total * pct / 100) for s in reachable)
        assert abs(got - total * pct / 100) == pytest.approx(best), (sizes, pct)


def test_untimestamped_names_are_split_too() -> None:
    items = [(Path(f"photo{i:02d}.png"), "a") for i in range(10)]
    items += [(Path(f"shot{i:02d}.png"), "b") for i in range(10)]
    counts = split.plan_split(items, 30).counts()
    assert counts["a"]["test"] == 3 and counts["b"]["test"] == 3


@pytest.mark.parametrize("text", ["0", "100", "-5", "150", "abc", "nan", "inf", ""])
def test_bad_percentages(text: str) -> None:
    with pytest.raises(UserError, match="between 0 and 100"):
        split.parse_test_pct(text)


def test_good_percentages() -> None:
    assert split.parse_test_pct("20") == 20.0
    assert split.parse_test_pct("0.5") == 0.5
    assert split.parse_test_pct("20%") == 20.0


# --- on disk ----------------------------------------------------------------------------


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def small_model(repo_root: Path) -> Path:
    """repo/demo with 30 tiny sample images, a truncated JPEG and notes.jpeg."""
    paths = model_paths("demo")
    sample.generate(paths.all_dir, count=30, seed=3, size=(40, 38))
    for folder in (paths.training_dir, paths.test_dir, paths.classification_dir):
        folder.mkdir()
    return paths.model_dir


def test_split_copies_and_leaves_data_all_untouched(small_model: Path) -> None:
    paths = model_paths("demo")
    before = _hashes(paths.all_dir)
    result = split.split_model(paths, 20)
    assert _hashes(paths.all_dir) == before
    assert [p.name for p in result.scan.ignored] == []
    assert [p.name for p, _, _ in result.scan.unreadable] == [sample.NON_IMAGE_NAME]

    with paths.split_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and list(rows[0]) == list(split.CSV_COLUMNS)
    copied = {**_hashes(paths.training_dir), **_hashes(paths.test_dir)}
    assert len(copied) == 30
    for row in rows:
        source = paths.model_dir / row["path"]
        side_dir = paths.training_dir if row["side"] == "training" else paths.test_dir
        target = side_dir / row["label"] / source.name
        assert target.read_bytes() == source.read_bytes()
    sides_per_group = defaultdict(set)
    for row in rows:
        sides_per_group[row["group"]].add(row["side"])
    assert all(len(s) == 1 for s in sides_per_group.values())
    assert Counter(r["label"] for r in rows) == sample.label_counts(30)


def test_refuses_existing_split_and_force_clears_only_training_and_test(
    small_model: Path,
) -> None:
    paths = model_paths("demo")
    split.split_model(paths, 20)
    keep = paths.classification_dir / "confidences.csv"
    keep.write_text("kept\n")
    stale = paths.training_dir / "bad" / "stale.jpeg"
    stale.write_bytes(b"old")
    before = _hashes(paths.all_dir)
    with pytest.raises(UserError, match="--force"):
        split.split_model(paths, 30)
    assert stale.exists()
    result = split.split_model(paths, 30, force=True)
    assert not stale.exists()
    assert keep.read_text() == "kept\n"
    assert _hashes(paths.all_dir) == before
    assert sum(r["test"] for r in result.plan.counts().values()) == len(_hashes(paths.test_dir))
    leftovers = [p.name for p in paths.data_dir.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_quarantine_moves_only_unreadable_files(small_model: Path) -> None:
    paths = model_paths("demo")
    before = _hashes(paths.all_dir)
    result = split.split_model(paths, 20, move_unreadable=True)
    moved = paths.quarantine_dir / sample.NON_IMAGE_LABEL / sample.NON_IMAGE_NAME
    assert moved.is_file()
    assert result.quarantined == [(paths.all_dir / "bad" / sample.NON_IMAGE_NAME, moved)]
    after = _hashes(paths.all_dir)
    assert after == {k: v for k, v in before.items() if not k.endswith(sample.NON_IMAGE_NAME)}


# --- the script ---------------------------------------------------------------------------


def _run(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("split_data.py", *args, repo=repo_root, timeout=60)


def test_cli_prints_table_and_names_skipped_files(small_model: Path, repo_root: Path) -> None:
    done = _run(repo_root, "demo", "20", "--seed", "1")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[0].split() == ["label", "all", "training", "test"]
    counts = sample.label_counts(30)
    for label, n in counts.items():
        row = next(line.split() for line in out.splitlines() if line.startswith(label))
        assert int(row[1]) == n and int(row[2]) + int(row[3]) == n
    assert sample.NON_IMAGE_NAME in done.stderr
    assert out.rstrip().splitlines()[-2].endswith(sample.NON_IMAGE_NAME)
    again = _run(repo_root, "demo", "20")
    assert again.returncode != 0 and "--force" in again.stderr


def _make_bad_layout(repo_root: Path, case: str) -> None:
    paths = model_paths("m", repo_root)
    if case == "missing model folder":
        return
    paths.model_dir.mkdir()
    if case == "missing data/all":
        return
    paths.all_dir.mkdir(parents=True)
    if case == "empty data/all":
        return
    (paths.all_dir / "bad").mkdir()
    tiny = sample.make_thumbnail("bad", np.random.default_rng(0), size=(16, 15))
    tiny.save(paths.all_dir / "bad" / "a.jpeg")
    if case == "single label":
        return
    (paths.all_dir / "earth").mkdir()
    (paths.all_dir / "earth" / "notes.jpeg").write_text("not an image")
    if case == "label without readable image":
        return
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("missing model folder", ("m", "20"), "create_dirs.sh"),
        ("missing data/all", ("m", "20"), "does not exist"),
        ("empty data/all", ("m", "20"), "no label folders"),
        ("label without readable image", ("m", "20"), "no readable image"),
        ("single label", ("m", "20"), "only one label"),
        ("label without readable image", ("m", "0"), "between 0 and 100"),
        ("label without readable image", ("m", "100"), "between 0 and 100"),
        ("label without readable image", ("m", "twenty"), "between 0 and 100"),
        ("missing model folder", ("../m", "20"), "invalid model name"),
    ],
)
def test_cli_bad_input(repo_root: Path, case: str, args: tuple, message: str) -> None:
    _make_bad_layout(repo_root, case)
    all_dir = model_paths("m", repo_root).all_dir
    before = _hashes(all_dir) if all_dir.is_dir() else None
    done = _run(repo_root, *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert (_hashes(all_dir) if all_dir.is_dir() else None) == before
    assert not (repo_root / "m" / "data" / "training").exists()


def test_synthetic_top_up_images_always_train() -> None:
    real = [(_name(1_600_000_000_000 + i * 3_600_000), "bad") for i in range(6)]
    synthetic = [(Path(f"{topup.SYNTHETIC_PREFIX}{sample.file_name(1_920_000_000_000 + i)}"),
                  "bad") for i in range(0, 40 * 600_000, 600_000)]
    plan = split.plan_split([*real, *synthetic], 50, seed=1)
    sides = {a.path.name: a.side for a in plan.assignments}
    assert all(sides[p.name] == split.TRAINING for p, _ in synthetic)
    assert sum(sides[p.name] == split.TEST for p, _ in real) == 3
    only = split.plan_split(synthetic[:2], 50)
    assert {a.side for a in only.assignments} == {split.TRAINING}
    assert "only synthetic" in only.notes[0]


@pytest.mark.parametrize("flag", ["--group_seconds", "--group-seconds"])
def test_group_seconds_both_spellings(small_model: Path, repo_root: Path, flag: str) -> None:
    done = _run(repo_root, "demo", "20", flag, "0")
    assert done.returncode == 0, done.stderr
    bad = _run(repo_root, "demo", "20", "--force", flag, "-1")
    assert bad.returncode == 2 and "--group_seconds" in bad.stderr
