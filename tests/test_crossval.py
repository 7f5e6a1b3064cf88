"""Cross-validation: folds keep bursts whole and labels stratified, synthetic
images only train, one out-of-fold row per image, and clear errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script, write_image
from PIL import Image

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import sample, split, topup
from opssat.judge.confidences import load_confidences
from opssat.train import crossval

COLOURS = {"blue": (30, 30, 200), "green": (30, 200, 30), "red": (200, 30, 30)}


def _bursts(label: str, sizes: list[int], start_ms: int) -> list[tuple[Path, str]]:
    """Images of ``label`` in bursts of ``sizes``: 5 s apart within, an hour between."""
    items, ms = [], start_ms
    for size in sizes:
        for _ in range(size):
            items.append((Path(label) / sample.file_name(ms), label))
            ms += 5_000
        ms += 3_600_000
    return items


def _items() -> list[tuple[Path, str]]:
    return (_bursts("bad", [3, 1, 4, 2, 2], 1_600_000_000_000)
            + _bursts("earth", [2, 1, 1, 3, 1, 2, 1], 1_600_100_000_000)
            + _bursts("edge", [1, 5, 1, 1, 2, 1], 1_600_200_000_000))


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_burst_straddles_two_folds_and_every_fold_has_every_label(seed: int) -> None:
    items = _items()
    plan = crossval.plan_folds(items, folds=4, seed=seed)
    groups = split.burst_groups(items)
    assert plan.groups == groups
    fold_of_group: dict[int, set[int]] = {}
    for group, fold in zip(groups, plan.fold, strict=True):
        fold_of_group.setdefault(group, set()).add(int(fold))
    assert all(len(folds) == 1 for folds in fold_of_group.values())
    assert sorted(set(plan.fold.tolist())) == [0, 1, 2, 3]
    for fold in range(4):
        held = {label for label, f in zip(plan.labels, plan.fold, strict=True) if f == fold}
        assert held == {"bad", "earth", "edge"}


def test_bursts_are_the_splits_groups() -> None:
    items = _bursts("earth", [3, 2], 1_600_000_000_000) + _bursts("edge", [1], 1_600_000_000_000)
    # Same time, other label: a burst of its own, as split_data.py counts it.
    assert split.burst_groups(items) == [0, 0, 0, 1, 1, 2]


def test_label_with_fewer_bursts_than_folds_is_one_clear_error() -> None:
    items = _bursts("bad", [2, 3, 1], 1_600_000_000_000) + _bursts("earth", [1] * 6,
                                                                   1_600_100_000_000)
    with pytest.raises(UserError, match=r"label 'bad' has 3 acquisition burst.*fewer than the "
                                        r"5 folds: use --folds 3"):
        crossval.plan_folds(items, folds=5)
    with pytest.raises(UserError, match="at least 2 folds"):
        crossval.plan_folds(items, folds=1)


def test_synthetic_images_are_never_held_out() -> None:
    items = _items() + [(Path("bad") / f"{topup.SYNTHETIC_PREFIX}{sample.file_name(ms)}", "bad")
                        for ms in (1_920_000_000_000, 1_920_000_600_000)]
    plan = crossval.plan_folds(items, folds=3)
    assert len(plan.paths) == len(_items())
    assert [p.name for p, _ in plan.synthetic] == [p.name for p, _ in items[-2:]]
    assert not any(topup.is_synthetic(p) for p in plan.paths)


def test_reserved_trainer_flags_are_refused() -> None:
    with pytest.raises(UserError, match="--image_dir"):
        crossval.check_trainer_args(["--train_epochs", "2", "--image_dir=/x"])



def _colour_model(root: Path) -> ModelPaths:
    """repo/cv: three colour labels, 4 bursts each, plus one undecodable file."""
    paths = ModelPaths("cv", root)
    for n, (label, colour) in enumerate(COLOURS.items()):
        for i, (path, _) in enumerate(_bursts(label, [1, 2, 1, 1], 1_600_000_000_000 + n * 10**9)):
            write_image(paths.all_dir / path, colour, size=(24, 22), seed=i)
    (paths.all_dir / "red" / "broken.jpeg").write_bytes(b"not a jpeg")
    synthetic = f"{topup.SYNTHETIC_PREFIX}{sample.file_name(1_920_000_000_000)}"
    write_image(paths.all_dir / "red" / synthetic, COLOURS["red"], size=(24, 22))
    return paths


@pytest.mark.slow
def test_oof_csv_has_one_row_per_image_and_model_files_stay(tiny_hub: Path,
                                                              tmp_path: Path) -> None:
    paths = _colour_model(tmp_path / "repo")
    paths.tflite_model.write_bytes(b"the user's model")
    result = crossval.run(
        paths, ["--tfhub_module", str(tiny_hub), "--image_size", "32", "--train_epochs", "2",
                "--batch_size", "4", "--validation_split", "0", "--quantize", "dynamic"],
        folds=3, log=lambda text: None)
    assert paths.tflite_model.read_bytes() == b"the user's model"
    assert len(result.folds) == 3 and result.variants == ["float", "dynamic"]
    assert sum(f.held_out for f in result.folds) == 15
    assert all(f.trained_on == 15 - f.held_out + 1 for f in result.folds)
    for mode in crossval.MODES:
        conf = load_confidences(paths.oof_csv(mode))
        names = sorted(p.name for p in paths.all_dir.rglob("*.jpeg")
                       if p.name != "broken.jpeg" and not topup.is_synthetic(p))
        assert sorted(conf.filenames) == names
        assert Counter(conf.expected) == {"blue": 5, "green": 5, "red": 5}
        assert conf.labels == sorted(COLOURS)
        assert np.allclose(conf.probabilities.sum(axis=1), 1, atol=1e-4)
        for name, label in zip(conf.filenames, conf.expected, strict=True):
            assert (paths.all_dir / label / name).is_file()
    assert (paths.all_dir / "red" / "broken.jpeg").is_file()
    assert "mean ± sd" in crossval.format_summary(result)


@pytest.mark.slow
def test_script_too_few_bursts_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    paths = ModelPaths("few", root)
    for label, colour in COLOURS.items():
        for path, _ in _bursts(label, [1, 1], 1_600_000_000_000):
            write_image(paths.all_dir / path, colour, size=(24, 22))
    done = run_script("crossval.py", "few", "--folds", "3", "--train_epochs", "1", repo=root)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: label 'blue' has 2 acquisition")


def test_a_folds_bright_top_up_keeps_each_source_label(tmp_path: Path) -> None:
    from test_stress import scene

    training = []
    for n, label in enumerate(["earth", "edge", "bad"]):
        path = tmp_path / "all" / label / sample.file_name(1_600_000_000_000 + n * 10**7)
        path.parent.mkdir(parents=True)
        Image.fromarray(scene(seed=n, level=90)).save(path, quality=95)
        training.append((path, label))
    made = crossval._make_top_up(tmp_path / "top_up", [("bright", 3), ("bad", 2)], 1, training)
    assert [label for _, label in made].count("bad") == 2
    bright = [(p, label) for p, label in made if label != "bad"]
    assert len(bright) == 3 and {label for _, label in bright} <= {"earth", "edge"}
    assert all(p.parent.name == label and topup.is_synthetic(p) for p, label in made)
