"""On-board-faithful preprocessing (images.load_pixels mode="onboard") and the
real-thumbnail evaluation bench/eval_real.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import PROJECT, run_script, write_image
from PIL import Image

from opssat.data import images, sample
from opssat.onboard import chain, smartcam

REAL_DIR = sample.REAL_SAMPLE_DIR


def _thumbnail(tmp_path: Path, colour=(200, 40, 30), suffix: str = ".png",
               noise: int = 40) -> Path:
    """A colour image of the thumbnail's size (614x583), textured so JPEG loses detail."""
    return write_image(tmp_path / f"thumb{suffix}", colour, size=(614, 583), noise=noise)


# --- preprocessing -------------------------------------------------------------------


def test_onboard_input_is_grayscale_replicated_224(tmp_path):
    model_input = images.load_input(_thumbnail(tmp_path), images.Preprocessing("onboard"))
    assert model_input.shape == (*smartcam.INPUT_SIZE, 3)
    assert model_input.dtype == np.float32
    assert np.array_equal(model_input[..., 0], model_input[..., 1])
    assert np.array_equal(model_input[..., 0], model_input[..., 2])
    assert model_input.min() >= 0.0 and model_input.max() <= 1.0
    # Grayscale of (200, 40, 30) by ITU-R 601 luma is about 87, not the red 200.
    assert abs(model_input.mean() * 255 - (0.299 * 200 + 0.587 * 40 + 0.114 * 30)) < 3


def test_ground_input_keeps_colour(tmp_path):
    model_input = images.load_input(_thumbnail(tmp_path), images.Preprocessing("ground"))
    assert model_input.shape == (*smartcam.INPUT_SIZE, 3)
    red, green, blue = (model_input[..., c].mean() * 255 for c in range(3))
    assert red == pytest.approx(200, abs=3) and green == pytest.approx(40, abs=3)
    assert blue == pytest.approx(30, abs=3)


def test_onboard_with_three_channels_keeps_colour(tmp_path):
    pixels = images.load_pixels(_thumbnail(tmp_path), images.Preprocessing("onboard", 3))
    assert pixels[..., 0].mean() > pixels[..., 1].mean() + 100


@pytest.mark.parametrize("shape", [(583, 614, 1), (583, 614, 3), (100, 50, 1), (300, 100, 1)])
def test_stb_resize_keeps_a_constant_image_constant(shape):
    out = chain.stb_resize(np.full(shape, 77, np.uint8), (224, 224))
    assert out.shape == (224, 224, shape[2])
    assert np.all(out == 77)


@pytest.mark.parametrize(("n_in", "n_out"), [(614, 224), (583, 224), (100, 224)])
def test_stb_resize_keeps_a_ramp_linear(n_in, n_out):
    # Mitchell (shrinking) and Catmull-Rom (enlarging) reproduce linear functions; only
    # the clamped edges bend, and the rounding of input and output adds about a level.
    ramp = np.linspace(20, 230, n_in)
    pixels = np.tile(np.rint(ramp).astype(np.uint8), (8, 1))[..., None]
    out = chain.stb_resize(pixels, (8, n_out))[0, :, 0].astype(float)
    centres = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    expected = np.interp(centres, np.arange(n_in), ramp)
    interior = slice(4, n_out - 4)
    assert np.abs(out[interior] - expected[interior]).max() <= 1.1
    assert np.all(np.diff(out) >= 0)


def test_onboard_does_a_jpeg_round_trip(tmp_path):
    path = _thumbnail(tmp_path)
    pixels = images.load_pixels(path, images.Preprocessing("onboard"))
    resized = chain.stb_resize(chain.stb_load(path, 1), smartcam.INPUT_SIZE)[..., 0]
    difference = np.abs(pixels[..., 0].astype(int) - resized.astype(int))
    assert difference.max() > 0  # JPEG changed some pixels...
    assert difference.mean() < 4  # ...slightly, at quality 90


#: Loads a huge image in every mode, then prints the process's peak RSS in MiB. The
#: peak is reset first: a child forked from a large pytest process inherits its peak.
HUGE_CHILD = """
import sys
from pathlib import Path
from opssat.data import images
Path("/proc/self/clear_refs").write_text("5")
for mode, channels in (("onboard", 3), ("onboard", 1), ("ground", 1)):
    pixels = images.load_pixels(sys.argv[1], images.Preprocessing(mode, channels, (224, 224)))
    assert pixels.shape == (224, 224, 3)
status = Path("/proc/self/status").read_text().splitlines()
print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""


def test_a_huge_jpeg_is_decoded_at_reduced_size_with_a_one_line_warning(tmp_path):
    path = tmp_path / "huge.jpeg"
    Image.new("L", (10_000, 10_000), 90).save(path, quality=50)  # Pillow's bomb warning
    result = subprocess.run([sys.executable, "-c", HUGE_CHILD, str(path)], cwd=PROJECT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # A full decode holds 100 MB of 8-bit pixels (300 MB as RGB) plus float copies.
    assert int(result.stdout.split()[-1]) < 250
    lines = result.stderr.splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"warning: {path}: 10000x10000") for line in lines)
    assert "DecompressionBombWarning" not in result.stderr


def test_a_large_colour_jpeg_keeps_its_colour_at_reduced_size(tmp_path):
    path = write_image(tmp_path / "big.jpeg", (200, 40, 30), size=(2000, 1900), noise=5)
    pixels = chain.onboard_pixels(path, (224, 224), 3)
    assert chain.reduction((2000, 1900), (224, 224)) == 2
    assert np.abs(pixels.reshape(-1, 3).mean(0) - (200, 40, 30)).max() < 4


def test_a_large_png_is_box_reduced_first_and_stays_close(tmp_path):
    ramp = np.linspace(0, 255, 1000)
    pixels = np.rint(np.add.outer(ramp, ramp) / 2).astype(np.uint8)
    path = tmp_path / "big.png"
    Image.fromarray(pixels).save(path)
    size = (32, 32)
    assert chain.reduction((1000, 1000), size) == 7
    reduced = chain.onboard_pixels(path, size, 1).astype(int)
    exact = chain.ujpeg_decode(chain.stb_write_jpeg(
        chain.stb_resize(chain.stb_load(path, 1), size))).astype(int)
    assert 0 < np.abs(reduced - exact).max() <= 4


# --- real thumbnails --------------------------------------------------------------------


def test_real_thumbnails_become_grayscale_224_inputs():
    files = sorted(REAL_DIR.glob("*/*.jpeg"))
    assert files
    for path in files[:3]:
        assert images.open_rgb(path).size == (614, 583)
        onboard = images.load_input(path, images.Preprocessing("onboard"))
        ground = images.load_input(path, images.Preprocessing("ground"))
        assert onboard.shape == ground.shape == (224, 224, 3)
        assert np.array_equal(onboard[..., 0], onboard[..., 2])
        assert 0.0 <= onboard.min() and onboard.max() <= 1.0
        assert not np.array_equal(ground[..., 0], ground[..., 2])  # real colour
        assert 0.0 < np.abs(onboard - ground).mean() < 0.25


# --- bench/eval_real.py --------------------------------------------------------------


def _eval(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script("bench/eval_real.py", *args, repo=repo_root, timeout=120)


@pytest.fixture
def package(repo_root, make_tflite) -> Path:
    """A packaged 32x32 model whose top-1 follows colour: red bad, green earth, blue edge."""
    model = make_tflite(labels=("bad", "earth", "edge"), size=32)
    folder = repo_root / "demo" / "smartcam" / "demo"
    folder.mkdir(parents=True)
    shutil.copy(model, folder / smartcam.MODEL_FILE)
    (folder / smartcam.LABELS_FILE).write_text("bad\nearth\nedge\n")
    return folder


@pytest.mark.slow
def test_eval_real_without_the_folder_says_so(repo_root, tmp_path):
    result = _eval(repo_root, "--model", "demo", "--real_dir", str(tmp_path / "absent"))
    assert result.returncode == 0
    assert "no real thumbnails" in result.stdout


@pytest.mark.slow
def test_eval_real_figures(repo_root, package, tmp_path):
    real = tmp_path / "real"
    for index in range(3):
        write_image(real / "earth" / f"e{index}.jpeg", (30, 200, 40), seed=index)
    write_image(real / "edge" / "x.jpeg", (30, 40, 200))
    write_image(real / "cloud" / "c.jpeg", (200, 200, 200))
    before = sorted(p.relative_to(real) for p in real.rglob("*"))
    result = _eval(repo_root, "--model", "demo", "--real_dir", str(real), "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["images"] == 5
    ground, onboard = figures["modes"]["ground"], figures["modes"]["onboard"]
    assert ground["recall"]["earth"] == {"images": 3, "correct": 3, "recall": 1.0}
    assert ground["recall"]["edge"]["recall"] == 1.0
    assert ground["correct"] == 4 and ground["accuracy"] == pytest.approx(4 / 5)
    assert figures["absent_from_model"] == ["cloud"]
    assert figures["without_real_images"] == ["bad"]
    # Grayscale erases the colour this model reads: on-board answers differ.
    agreeing = sum(row["ground"]["label"] == row["onboard"]["label"]
                   for row in figures["per_image"])
    assert figures["agreement"]["agreeing"] == agreeing < 5
    assert onboard["correct"] < ground["correct"]
    assert figures["input_mad"] > 0.05
    assert figures["input_mad_pixel_levels"] == pytest.approx(figures["input_mad"] * 255)
    assert sorted(p.relative_to(real) for p in real.rglob("*")) == before

    text = _eval(repo_root, "--model", "demo", "--real_dir", str(real))
    assert text.returncode == 0, text.stderr
    assert "cloud is not a label of this model" in text.stdout
    assert "top-1 agreement between modes" in text.stdout
    assert "recall earth" in text.stdout


@pytest.mark.slow
def test_eval_real_without_a_package_explains(repo_root, tmp_path):
    (repo_root / "demo").mkdir()
    (tmp_path / "real" / "earth").mkdir(parents=True)
    result = _eval(repo_root, "--model", "demo", "--real_dir", str(tmp_path / "real"))
    assert result.returncode == 2
    assert "package_smartcam.py demo" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_real_on_the_bundled_real_sample(repo_root, package):
    result = _eval(repo_root, "--model", "demo", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    manifest = sample.read_manifest()
    assert figures["images"] == len(manifest) == 123
    assert figures["real_labels"] == ["bad", "earth", "edge"]
    assert figures["modes"]["ground"]["recall"]["earth"]["images"] == sum(
        entry.label == "earth" for entry in manifest)
    assert figures["input_mad"] > 0
