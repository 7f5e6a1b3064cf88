"""The ``bad`` top-up made from real frames: at the real over-exposed frames'
saturation, never from a test image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_stress import scene

from opssat.data import stress, topup


def test_top_up_bad_is_made_from_real_frames_with_the_real_saturation(tmp_path: Path) -> None:
    sources = []
    for n in range(3):
        path = tmp_path / "src" / f"img_msec_{1_600_000_000_000 + n}_2_thumbnail.jpeg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(scene(seed=n, size=(90, 80))).save(path, quality=95)
        sources.append(path)
    items = [(p, "earth") for p in sources] + [(tmp_path / "b.jpeg", "bad"),
                                               (tmp_path / "synthetic_x.jpeg", "edge")]
    assert topup.top_up_sources(items) == sources
    made = topup.top_up(tmp_path / "all", "bad", 4, seed=1, sources=sources)
    low, high = topup.OVEREXPOSED_SATURATED
    for path in made:
        assert topup.is_synthetic(path)
        pixels = np.asarray(Image.open(path).convert("L"), np.float32)
        assert pixels.shape == (80, 90)  # the source frame's size: made from it
        assert low - 0.1 < np.mean(pixels >= 250) < high + 0.1
    again = topup.top_up(tmp_path / "again", "bad", 4, seed=1, sources=sources)
    assert [p.read_bytes() for p in made] == [p.read_bytes() for p in again]


def test_paired_bright_top_up_brightens_the_frames_the_bad_top_up_over_exposes(
        tmp_path: Path) -> None:
    """Each source has its own size, so an output's size names its source."""
    sources = []
    for n in range(8):
        path = tmp_path / "src" / "earth" / f"img_msec_{1_600_000_000_000 + n}_2_thumbnail.jpeg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene(seed=n, size=(60 + 4 * n, 50), level=90)).save(path, quality=95)
        sources.append(path)

    def sizes(label: str) -> list[tuple[int, int]]:
        made = topup.top_up(tmp_path / label, label, 3, seed=5, sources=sources)
        return [Image.open(p).size for p in made]

    assert sizes("bright_paired") == sizes("bad")
    assert sizes("bright") != sizes("bad")  # the plain bright top-up draws its own order


def test_top_up_never_draws_on_the_test_split(tmp_path: Path) -> None:
    all_dir, test_dir = tmp_path / "all", tmp_path / "test"
    names = {}
    for n, label in enumerate(["earth", "earth", "edge", "bad"]):
        name = f"img_msec_{1_600_000_000_000 + n}_2_thumbnail.jpeg"
        for folder in (all_dir, test_dir) if n == 1 else (all_dir,):
            (folder / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(scene(seed=n, size=(40, 30))).save(folder / label / name)
        names[n] = name
    (all_dir / "earth" / "synthetic_x.jpeg").write_bytes((all_dir / "earth" / names[0])
                                                         .read_bytes())
    found = topup.data_top_up_sources(all_dir, test_dir)
    assert sorted(p.name for p in found) == sorted([names[0], names[2]])
    assert len(topup.data_top_up_sources(all_dir)) == 3


def test_bright_top_up_keeps_each_source_label_and_stays_valid(tmp_path: Path) -> None:
    sources = []
    for n, label in enumerate(["earth", "edge"]):
        source = tmp_path / "real" / label / f"img_msec_{1600000000000 + n}_2_thumbnail.jpeg"
        source.parent.mkdir(parents=True)
        Image.fromarray(scene(seed=n, level=90)).save(source, quality=95)
        sources.append(source)
    assert topup.parse_top_up("bright=4") == ("bright", 4)
    made = topup.top_up(tmp_path / "all", topup.BRIGHT, 4, seed=1, sources=sources)
    assert len(made) == 4 and all(topup.is_synthetic(p) for p in made)
    assert {p.parent.name for p in made} == {"earth", "edge"}
    for path in made:
        assert not stress.too_bright(stress.read_rgb(path))
    drawn = topup.top_up(tmp_path / "all", topup.BAD_DRAWN, 2, seed=1, sources=sources)
    assert {p.parent.name for p in drawn} == {"bad"}
