"""The synthetic sample data: deterministic, imbalanced like the real data,
OPS-SAT-sized JPEGs in bursts, plus the two hygiene files."""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import run_script
from PIL import Image

from opssat.core.errors import UserError
from opssat.data import images, sample, topup

TINY = (48, 46)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = sample.generate(tmp_path / "a", count=12, seed=5, size=TINY)
    second = sample.generate(tmp_path / "b", count=12, seed=5, size=TINY)
    sample.generate(tmp_path / "c", count=12, seed=6, size=TINY)
    assert first == second
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")


@pytest.mark.parametrize(
    ("count", "expected"),
    [(120, {"bad": 72, "earth": 36, "edge": 12}), (10, {"bad": 6, "earth": 3, "edge": 1}),
     (3, {"bad": 1, "earth": 1, "edge": 1}), (37, {"bad": 22, "earth": 11, "edge": 4})],
)
def test_label_ratio(count: int, expected: dict[str, int]) -> None:
    assert sample.label_counts(count) == expected


def test_too_few_images_is_a_user_error() -> None:
    with pytest.raises(UserError, match="--count"):
        sample.label_counts(2)


def test_files_on_disk(tmp_path: Path) -> None:
    counts = sample.generate(tmp_path, count=40, seed=2, size=TINY)
    assert counts == sample.label_counts(40)
    readable, unreadable, truncated = {}, [], []
    for label in counts:
        for path in sorted((tmp_path / label).iterdir()):
            if not images.readable(path):
                unreadable.append(f"{label}/{path.name}")
                continue
            readable[label] = readable.get(label, 0) + 1
            assert path.name == sample.file_name(images.timestamp_ms(path))
            data = path.read_bytes()
            if not data.endswith(b"\xff\xd9"):
                truncated.append(label)
    assert readable == counts
    assert unreadable == [f"{sample.NON_IMAGE_LABEL}/{sample.NON_IMAGE_NAME}"]
    assert truncated == [sample.TRUNCATED_LABEL]


def test_bursts_seconds_apart_separated_by_minutes(tmp_path: Path) -> None:
    sample.generate(tmp_path, count=60, seed=4, size=TINY)
    stamps = sorted(
        images.timestamp_ms(p) for p in tmp_path.rglob("*.jpeg") if images.timestamp_ms(p)
    )
    gaps = np.diff(stamps) / 1000
    assert len(stamps) == 60
    assert ((gaps >= 2) & (gaps <= 8) | (gaps >= 300)).all()
    assert (gaps <= 8).sum() >= 15 and (gaps >= 300).sum() >= 10
    # A burst holds one label: the split's time groups follow the scenes.
    labels = {images.timestamp_ms(p): p.parent.name for p in tmp_path.rglob("*.jpeg")}
    for before, after, gap in zip(stamps, stamps[1:], gaps, strict=False):
        if gap <= 8:
            assert labels[before] == labels[after]


def test_full_size_jpeg_quality_90(tmp_path: Path) -> None:
    sample.generate(tmp_path, count=3, seed=1)
    reference = io.BytesIO()
    Image.new("RGB", (8, 8)).save(reference, format="JPEG", quality=90)
    reference_tables = Image.open(reference).quantization
    files = sorted(tmp_path.rglob("img_msec_*.jpeg"))
    assert len(files) == 3
    for path in files:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == sample.THUMBNAIL_SIZE == (614, 583)
            assert img.quantization == reference_tables


def test_thumbnails_look_like_their_label() -> None:
    """Coarse statistics that tell the three kinds apart, as on the real data."""
    rng = np.random.default_rng(0)
    for _ in range(4):
        edge = np.asarray(sample.make_thumbnail("edge", rng, size=(160, 152)), float)
        brightness = edge.mean(axis=2)
        assert (brightness < 30).mean() > 0.1, "edge: black space"
        assert (brightness > 100).mean() > 0.1, "edge: bright Earth"
        earth = np.asarray(sample.make_thumbnail("earth", rng, size=(160, 152)), float)
        assert earth.std() > 8, "earth: textured"
        assert (earth.mean(axis=2) < 30).mean() < 0.99
    bad = [np.asarray(sample.make_thumbnail("bad", rng, size=(64, 61)), float) for _ in range(30)]
    means = [b.mean() for b in bad]
    assert min(means) < 20 and max(means) > 200, "bad: black and over-exposed among them"


def test_make_thumbnail_size_and_unknown_label() -> None:
    img = sample.make_thumbnail("earth", np.random.default_rng(0), size=(20, 10))
    assert img.mode == "RGB" and img.size == (20, 10)
    with pytest.raises(ValueError, match="unknown sample label"):
        sample.make_thumbnail("cat", np.random.default_rng(0))


def _run(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("make_sample_data.py", *args, repo=repo_root, timeout=60)


def test_cli_refuses_non_empty_data_all_unless_forced(repo_root: Path) -> None:
    all_dir = repo_root / "m" / "data" / "all"
    mine = all_dir / "earth" / "mine.png"
    mine.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(mine)
    before = mine.read_bytes()
    refused = _run(repo_root, "m", "--count", "3")
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--force" in lines[0]
    assert sorted(p.name for p in all_dir.rglob("*") if p.is_file()) == ["mine.png"]
    done = _run(repo_root, "m", "--count", "3", "--force")
    assert done.returncode == 0, done.stderr
    assert mine.read_bytes() == before
    assert len(list(all_dir.rglob("img_msec_*.jpeg"))) == 3


@pytest.mark.parametrize("args", [("m", "--count", "2"), ("m", "--seed", "-1"), ("../m",)])
def test_cli_bad_arguments(repo_root: Path, args: tuple[str, ...]) -> None:
    done = _run(repo_root, *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "Traceback" not in done.stderr
    assert not any(p.is_file() for p in repo_root.rglob("*"))


# --- the bundled real sample and the synthetic top-up --------------------------------


def test_bundled_real_sample_matches_its_manifest() -> None:
    entries = sample.read_manifest()
    assert len(entries) == 123
    assert {e.label for e in entries} == {"bad", "earth", "edge"}
    on_disk = sorted(p.relative_to(sample.REAL_SAMPLE_DIR).as_posix()
                     for p in sample.REAL_SAMPLE_DIR.glob("*/*") if p.is_file())
    assert on_disk == sorted(f"{e.label}/{e.filename}" for e in entries)
    assert "ESA / OPS-SAT" in (sample.REAL_SAMPLE_DIR / "README.md").read_text()


def _copy_of_sample(tmp_path: Path, labels: tuple[str, ...] = ("bad",)) -> Path:
    """A copy of the real sample limited to ``labels`` (manifest rows included)."""
    source = tmp_path / "sample"
    lines = (sample.REAL_SAMPLE_DIR / sample.MANIFEST_NAME).read_text().splitlines()
    kept = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in labels]
    (source).mkdir()
    (source / sample.MANIFEST_NAME).write_text("\n".join(kept) + "\n")
    for line in kept[1:]:
        label, name = line.split(",")[:2]
        (source / label).mkdir(exist_ok=True)
        (source / label / name).write_bytes((sample.REAL_SAMPLE_DIR / label / name).read_bytes())
    return source


def test_install_real_skips_bad_files_by_name_and_deletes_nothing(tmp_path: Path) -> None:
    source = _copy_of_sample(tmp_path)
    names = sorted(p.name for p in (source / "bad").iterdir())
    tampered, undecodable, missing = (source / "bad" / n for n in names[:3])
    tampered.write_bytes(tampered.read_bytes()[:-10])
    missing.unlink()
    # An undecodable file whose hash matches: only the decode check can catch it.
    undecodable.write_bytes(b"not an image")
    manifest = source / sample.MANIFEST_NAME
    digest = hashlib.sha256(b"not an image").hexdigest()
    text = manifest.read_text()
    row = next(line for line in text.splitlines() if undecodable.name in line)
    fields = row.split(",")
    fields[4] = digest
    manifest.write_text(text.replace(row, ",".join(fields)))

    result = sample.install_real(tmp_path / "all", source)
    assert result.copied == {"bad": 23}
    why = {path.name: reason for path, reason in result.skipped}
    assert why == {tampered.name: "its sha256 differs from the manifest",
                   undecodable.name: "it does not decode as an image", missing.name: "missing"}
    assert tampered.is_file() and undecodable.is_file()
    assert len(list((tmp_path / "all" / "bad").iterdir())) == 23


@pytest.mark.slow
def test_cli_real_then_top_up(repo_root: Path) -> None:
    done = _run(repo_root, "m", "--real")
    assert done.returncode == 0, done.stderr
    all_dir = repo_root / "m" / "data" / "all"
    assert {d.name: len(list(d.iterdir())) for d in all_dir.iterdir()} == {
        "bad": 26, "earth": 46, "edge": 51}
    refused = _run(repo_root, "m", "--real")
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert _run(repo_root, "m", "--real", "--force").returncode == 0
    topped = _run(repo_root, "m", "--top_up", "bad=3")
    assert topped.returncode == 0, topped.stderr
    synthetic = sorted(p for p in (all_dir / "bad").iterdir() if topup.is_synthetic(p))
    assert len(synthetic) == 3 and len(list((all_dir / "bad").iterdir())) == 29
    first = [p.read_bytes() for p in synthetic]
    assert _run(repo_root, "m", "--top_up", "bad=3").returncode == 0
    assert [p.read_bytes() for p in synthetic] == first, "a re-run rewrites the same files"
    for wrong in ("bad", "cat=2", "bad=0"):
        done = _run(repo_root, "m", "--top_up", wrong)
        assert done.returncode == 2 and done.stderr.startswith("error: --top_up")


def test_top_up_bad_images_are_exposure_failures() -> None:
    """Mostly saturated: the over-exposed kinds the real sample has too few of."""
    rng = np.random.default_rng(0)
    for _ in range(12):
        pixels = np.asarray(topup.top_up_thumbnail("bad", rng, size=(96, 91)), float)
        assert (pixels.mean(axis=2) > 200).mean() > 0.4
