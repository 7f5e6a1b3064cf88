"""The stress set: exposure failures as on board, labelled by the stated rule, made
from held-out frames only and judged beside the plain folds."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image
from PIL import Image

from opssat.core.paths import ModelPaths
from opssat.data import sample, stress
from opssat.train import crossval


def scene(seed: int = 0, size: tuple[int, int] = (120, 100), level: float = 110,
           contrast: float = 45) -> np.ndarray:
    """(H, W, 3) uint8 with smooth structure around ``level``: a stand-in Earth frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((6, 6)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, mode="F").resize(size, Image.Resampling.BICUBIC))
    gray = np.clip(level + contrast * smooth / smooth.std(), 0, 255)
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def test_exposure_saturates_to_white_and_darkens_to_the_black_level() -> None:
    frame = scene()
    white = stress.stress_pixels(frame, "saturated", 8.0, np.random.default_rng(0))
    assert np.mean(white >= 250) > 0.9
    dark = stress.stress_pixels(frame, "dark", -12.0, np.random.default_rng(0))
    assert dark.min() >= stress.BLACK_LEVEL and dark.max() <= stress.BLACK_LEVEL + 6
    washed = stress.stress_pixels(frame, "washed_out", 9.0, np.random.default_rng(1))
    assert 0.05 < np.mean(washed >= 250) < 1.0  # part of the frame only
    noisy = stress.stress_pixels(frame, "noisy", 40.0, np.random.default_rng(0))
    assert 20 < np.std(noisy.astype(float) - frame) < 60
    with pytest.raises(ValueError, match="unknown stress kind"):
        stress.stress_pixels(frame, "blurred", 1.0, np.random.default_rng(0))


def test_the_rule_destroyed_frames_are_bad_mild_ones_keep_their_label() -> None:
    frame = scene()
    rng = np.random.default_rng(0)
    mild = stress.stress_pixels(frame, "saturated", 1.0, rng)
    r2 = stress.scene_r2(frame, mild)
    assert r2 is not None and r2 > 0.9
    assert stress.stressed_label("earth", r2, stress.too_dark(mild)) == "earth"
    blown = stress.stress_pixels(frame, "saturated", 8.0, rng)
    assert stress.stressed_label("earth", stress.scene_r2(frame, blown)) == "bad"
    swamped = stress.stress_pixels(frame, "noisy", 60.0, np.random.default_rng(2))
    assert stress.scene_r2(frame, swamped) < stress.MIN_SCENE_R2
    # Darkening keeps the scene's shape but leaves it darker than any real earth frame.
    dim = stress.stress_pixels(frame, "dark", -7.0, rng)
    assert stress.scene_r2(frame, dim) > stress.MIN_SCENE_R2 and stress.too_dark(dim)
    assert stress.stressed_label("edge", 0.9, dark=True) == "bad"
    # A limb whose Earth side is blown out keeps its shape, but the sample's labellers
    # call such frames bad: a quarter of the frame saturated is bad whatever its r².
    limb = np.zeros((100, 120, 3), np.uint8)
    limb[:, 60:] = 255
    assert stress.too_bright(limb) and not stress.too_bright(frame)
    assert stress.stressed_label("edge", 0.99, bright=True) == "bad"
    # bad stays bad; a uniform frame has no scene to lose.
    assert stress.stressed_label("bad", 1.0) == "bad"
    flat = np.full((50, 60, 3), 10, np.uint8)
    assert stress.scene_r2(flat, flat) is None
    assert stress.stressed_label("earth", None) == "earth"


def test_build_is_deterministic_and_writes_each_kind_under_its_rule_label(tmp_path: Path
                                                                           ) -> None:
    source = tmp_path / "earth" / "img_msec_1600000000000_2_thumbnail.jpeg"
    source.parent.mkdir()
    Image.fromarray(scene()).save(source, quality=95)
    first = stress.build([(source, "earth")], tmp_path / "one", seed=3)
    again = stress.build([(source, "earth")], tmp_path / "two", seed=3)
    assert [f.kind for f in first] == list(stress.KINDS)
    for a, b in zip(first, again, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes() and a.label == b.label
        assert a.path.parent.name == a.label
        written = stress.read_rgb(a.path)
        assert a.label == stress.stressed_label("earth", a.scene_r2, stress.too_dark(written),
                                                stress.too_bright(written))
    written = stress.write_csv(tmp_path / "stress.csv", first)
    rows = list(csv.DictReader(written.open()))
    assert [r["kind"] for r in rows] == list(stress.KINDS)
    assert {r["source"] for r in rows} == {source.name}


@pytest.mark.slow
def test_crossval_judges_each_folds_held_out_frames_under_stress(tiny_hub: Path,
                                                                  tmp_path: Path) -> None:
    paths = ModelPaths("cv", tmp_path / "repo")
    colours = {"bad": (240, 240, 240), "earth": (30, 160, 60), "edge": (20, 20, 200)}
    ms = 1_600_000_000_000
    for label, colour in colours.items():
        for i in range(4):
            ms += 3_600_000
            write_image(paths.all_dir / label / sample.file_name(ms), colour, size=(40, 36),
                        noise=40, seed=i)
    result = crossval.run(
        paths, ["--tfhub_module", str(tiny_hub), "--image_size", "32", "--train_epochs", "1",
                "--batch_size", "4", "--validation_split", "0"],
        folds=2, top_up=[("bad", 2)], modes=["onboard"], log=lambda text: None)
    assert result.stressed == 12 * len(stress.KINDS)
    assert all(crossval.STRESS in f.scores for f in result.folds)
    assert crossval.STRESS in result.pooled
    assert "stressed held-out frames" in crossval.format_summary(result)
    rows = list(csv.DictReader((paths.crossval_dir / crossval.STRESS_SET_NAME).open()))
    assert len(rows) == result.stressed
    assert {r["source"] for r in rows} == {p.name for p in paths.all_dir.rglob("*.jpeg")}
    stressed = result.oof_csvs[crossval.STRESS]
    assert sum(1 for _ in stressed.open()) == result.stressed + 1
    # The bright-valid family is judged beside it: earth and edge frames only, labels kept.
    assert 0 < result.bright <= 8 * len(stress.BRIGHT_KINDS)
    bright = result.pooled[crossval.BRIGHT]["float"]
    assert 0 <= bright["accuracy"] <= 1 and "ece" in bright
    # ... and its frames and their confidences are written too, each with its own label.
    bright_rows = list(csv.DictReader(result.oof_csvs[crossval.BRIGHT].open()))
    assert len(bright_rows) == result.bright
    assert {r["expected_label"] for r in bright_rows} <= {"earth", "edge"}
    set_name = crossval.family_csv_names(crossval.BRIGHT)[1]
    assert len(list(csv.DictReader((paths.crossval_dir / set_name).open()))) == result.bright
    assert "ece_t" in result.pooled["onboard"]["float"] and "float" in result.temperature
    summary = crossval.format_summary(result)
    assert "below the rule's bad line" in summary and "ECE" in summary


def test_bright_valid_frames_are_brighter_stay_below_the_bad_line_and_keep_labels(
        tmp_path: Path) -> None:
    items = []
    for n, label in enumerate(["earth", "edge", "bad"]):
        source = tmp_path / label / f"img_msec_{1600000000000 + n}_2_thumbnail.jpeg"
        source.parent.mkdir()
        Image.fromarray(scene(seed=n, level=90)).save(source, quality=95)
        items.append((source, label))
    frames = stress.build_bright(items, tmp_path / "bright", seed=1)
    assert {f.source_label for f in frames} == {"earth", "edge"}  # never a bad frame
    assert [f.kind for f in frames] == list(stress.BRIGHT_KINDS) * 2
    for frame in frames:
        original, bright = stress.read_rgb(frame.source), stress.read_rgb(frame.path)
        assert frame.label == frame.source_label == frame.path.parent.name
        assert stress._gray(bright).mean() > stress._gray(original).mean() + 3 or \
            stress._gray(bright).std() > stress._gray(original).std() * 1.2
        assert stress.saturated_share(bright) <= stress.BRIGHT_MAX_SATURATED + 0.01
        assert stress.stressed_label(frame.label, stress.scene_r2(original, bright),
                                     stress.too_dark(bright), stress.too_bright(bright)) \
            == frame.label


def test_a_frame_already_at_the_bad_line_gets_no_bright_valid_copy() -> None:
    limb = scene(level=120)
    limb[:, : limb.shape[1] // 4] = 255  # a quarter saturated: at the line already
    made = stress.bright_valid_pixels(limb, "brighter", np.random.default_rng(0))
    assert made is None
    # Without the validity check the brightened frame would cross it.
    crossed = stress.brighten_pixels(limb, "brighter", 2.0)
    assert stress.too_bright(crossed)
