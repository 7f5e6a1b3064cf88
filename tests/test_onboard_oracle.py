"""opssat.onboard.chain against SmartCam's own chain compiled from C (../shared/onboard_oracle):
each step (stb load, stb resize, stb JPEG encode + uJPEG decode) and the whole chain.

``pytest -s tests/test_onboard_oracle.py`` prints the parity figures.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_dir
from PIL import Image

from opssat.data import images
from opssat.onboard import chain, smartcam

#: Every test here compiles SmartCam's C chain with gcc first.
pytestmark = pytest.mark.slow

ORACLE_DIR = shared_dir("onboard_oracle")
REAL_DIR = shared_dir("opssat_real")
SIZE = smartcam.INPUT_SIZE
QUALITY = smartcam.ONBOARD_JPEG_QUALITY

#: A driver for the single steps, compiled from this text against the oracle's stb
#: headers with build.sh's flags: ``l IN CHANNELS OUT`` (stbi_load), ``r IN W H C OW OH
#: OUT`` (stbir_resize_uint8), ``j IN W H C QUALITY OUT`` (stbi_write_jpg).
STEPS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#define STB_IMAGE_IMPLEMENTATION
#include "stb_image.h"
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include "stb_image_resize.h"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include "stb_image_write.h"

static unsigned char *slurp(const char *path, long n) {
    unsigned char *p = malloc(n);
    FILE *f = fopen(path, "rb");
    if (!f || fread(p, 1, n, f) != (size_t)n) { fprintf(stderr, "short %s\n", path); exit(1); }
    fclose(f);
    return p;
}

static void spill(const char *path, const unsigned char *p, long n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc == 5 && argv[1][0] == 'l') {
        int w, h, n, c = atoi(argv[3]);
        unsigned char *p = stbi_load(argv[2], &w, &h, &n, c);
        if (!p) { fprintf(stderr, "load failed: %s\n", stbi_failure_reason()); return 1; }
        spill(argv[4], p, (long)w * h * c);
        printf("%d %d\n", w, h);
        return 0;
    }
    if (argc == 9 && argv[1][0] == 'r') {
        int w = atoi(argv[3]), h = atoi(argv[4]), c = atoi(argv[5]);
        int ow = atoi(argv[6]), oh = atoi(argv[7]);
        unsigned char *in = slurp(argv[2], (long)w * h * c), *out = malloc((long)ow * oh * c);
        if (!stbir_resize_uint8(in, w, h, 0, out, ow, oh, 0, c)) return 1;
        spill(argv[8], out, (long)ow * oh * c);
        return 0;
    }
    if (argc == 8 && argv[1][0] == 'j') {
        int w = atoi(argv[3]), h = atoi(argv[4]), c = atoi(argv[5]);
        unsigned char *in = slurp(argv[2], (long)w * h * c);
        return stbi_write_jpg(argv[7], w, h, c, in, atoi(argv[6])) ? 0 : 1;
    }
    fprintf(stderr, "usage: l IN C OUT | r IN W H C OW OH OUT | j IN W H C Q OUT\n");
    return 2;
}
"""


@dataclass
class Oracle:
    """The compiled on-board programs and the step driver, with a scratch folder."""

    folder: Path

    def _run(self, *args: str | Path) -> str:
        return subprocess.run([str(a) for a in args], check=True, capture_output=True,
                              text=True).stdout

    def load(self, path: Path, channels: int) -> np.ndarray:
        raw = self.folder / "load.raw"
        width, height = map(int, self._run(self.folder / "steps", "l", path, channels,
                                           raw).split())
        return np.fromfile(raw, np.uint8).reshape(height, width, channels)

    def resize(self, pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        raw, out = self.folder / "resize_in.raw", self.folder / "resize_out.raw"
        pixels.tofile(raw)
        height, width, channels = pixels.shape
        self._run(self.folder / "steps", "r", raw, width, height, channels, size[1], size[0], out)
        return np.fromfile(out, np.uint8).reshape(*size, channels)

    def decode(self, jpeg: Path) -> np.ndarray:
        raw = self.folder / "decoded.raw"
        width, height, _ = map(int, self._run(self.folder / "ujdump", jpeg, raw).split())
        return np.fromfile(raw, np.uint8).reshape(height, width, 3)

    def encode_decode(self, pixels: np.ndarray, quality: int = QUALITY) -> np.ndarray:
        raw, jpeg = self.folder / "encode_in.raw", self.folder / "encoded.jpeg"
        pixels.tofile(raw)
        height, width, channels = pixels.shape
        self._run(self.folder / "steps", "j", raw, width, height, channels, quality, jpeg)
        return self.decode(jpeg)

    def chain(self, path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
        """SmartCam's create_input_image: the resize program, then the classifier's decode."""
        jpeg = self.folder / "input.jpeg"
        self._run(self.folder / "resize", "-i", path, "-x", size[1], "-y", size[0],
                  "-c", channels, "-q", QUALITY, "-o", jpeg)
        return self.decode(jpeg)


def _source_key() -> str:
    digest = hashlib.sha256(STEPS_C.encode())
    for path in sorted(ORACLE_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def oracle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """The oracle built by its build.sh plus the step driver, kept in pytest's cache
    (keyed by the sources) because compiling stb takes most of a minute on a busy CPU."""
    if not (ORACLE_DIR / "build.sh").is_file():
        pytest.skip(f"{ORACLE_DIR} is absent")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is absent")
    built = request.config.cache.mkdir(f"onboard_oracle_{_source_key()}")
    if not all((built / name).is_file() for name in ("resize", "ujdump", "steps")):
        (built / "steps.c").write_text(STEPS_C)
        jobs = [subprocess.Popen(["sh", str(ORACLE_DIR / "build.sh"), str(built)],
                                 stdout=subprocess.DEVNULL),
                subprocess.Popen([gcc, "-O1", f"-I{ORACLE_DIR / 'stb'}", str(built / "steps.c"),
                                  "-o", str(built / "steps"), "-lm"])]
        assert all(job.wait() == 0 for job in jobs), "building the oracle failed"
    folder = tmp_path_factory.mktemp("oracle")
    for name in ("resize", "ujdump", "steps"):
        shutil.copy2(built / name, folder / name)
    return Oracle(folder)


@pytest.fixture(scope="module")
def thumbnails() -> list[Path]:
    files = sorted(REAL_DIR.glob("*/*.jpeg"))
    if not files:
        pytest.skip(f"no real thumbnails in {REAL_DIR}")
    return files


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Inputs other than colour JPEGs, of odd sizes: RGB, grayscale, RGBA, palette and
    16-bit PNGs, a grayscale JPEG, a BMP, and one smaller than the model input."""
    folder = tmp_path_factory.mktemp("generated")
    rng = np.random.default_rng(3)

    def scene(height: int, width: int, channels: int) -> np.ndarray:
        ramp = np.linspace(0, 255, width)[None, :, None]
        base = ramp * np.linspace(0.2, 1, height)[:, None, None]
        noise = rng.normal(0, 40, (height, width, channels))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    images_ = {
        "rgb.png": Image.fromarray(scene(301, 457, 3)),
        "gray.png": Image.fromarray(scene(250, 333, 1)[..., 0]),
        "rgba.png": Image.fromarray(scene(283, 279, 4)),
        "palette.png": Image.fromarray(scene(240, 260, 3)).quantize(64),
        "gray16.png": Image.fromarray(scene(230, 241, 1)[..., 0].astype(np.uint16) * 257
                                      + rng.integers(0, 256, (230, 241)).astype(np.uint16)),
        "gray.jpeg": Image.fromarray(scene(245, 300, 1)[..., 0]),
        "rgb.bmp": Image.fromarray(scene(229, 311, 3)),
        "small.png": Image.fromarray(scene(61, 97, 3)),
    }
    paths = []
    for name, img in images_.items():
        img.save(folder / name)
        paths.append(folder / name)
    return paths


def _figures(diff: np.ndarray) -> dict[str, float]:
    return {"mean": float(diff.mean() / 255), "over4_pct": float(100 * (diff > 4).mean()),
            "over1_pct": float(100 * (diff > 1).mean()), "max": int(diff.max())}


# --- the steps ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_stb_load_generated_inputs(oracle, generated, channels):
    """Exact but for a JPEG's IDCT (libjpeg's in Pillow vs stb's): 1 level at most."""
    for path in generated:
        diff = np.abs(chain.stb_load(path, channels).astype(int) - oracle.load(path, channels))
        assert diff.max() <= (1 if path.suffix == ".jpeg" else 0), path.name


@pytest.mark.parametrize("channels", [1, 3])
def test_stb_load_jpeg_thumbnails_within_a_level(oracle, thumbnails, channels):
    """The luma plane: libjpeg's IDCT (Pillow) vs stb's, 1 level at most. Colour: the
    chroma upsampling rounds differently too, a few levels on a few pixels."""
    diffs = []
    for path in thumbnails[::6]:
        expected = oracle.load(path, channels)
        diffs.append(np.abs(chain.stb_load(path, channels).astype(int) - expected))
    figures = _figures(np.concatenate([d.ravel() for d in diffs]))
    print(f"\nstb_load, {channels} channel(s), {len(diffs)} thumbnails: {figures}")
    if channels == 1:
        assert figures["max"] <= 1, figures
        assert figures["over1_pct"] == 0
    else:
        assert figures["over4_pct"] < 0.01 and figures["mean"] < 0.0005, figures


@pytest.mark.parametrize("size", [SIZE, (97, 131), (300, 180)])
def test_stb_resize_is_bit_exact(oracle, thumbnails, generated, size):
    sources = [*thumbnails[::20], *generated]
    for path in sources:
        for channels in (1, 3):
            pixels = oracle.load(path, channels)
            expected = oracle.resize(pixels, size)
            assert np.array_equal(chain.stb_resize(pixels, size), expected), (path.name,
                                                                                 channels)


@pytest.mark.parametrize(("size", "quality"), [(SIZE, QUALITY), ((97, 131), QUALITY),
                                               ((41, 75), 95)])
def test_stb_write_jpeg_and_ujpeg_decode_are_bit_exact(oracle, thumbnails, generated, size,
                                                       quality):
    sources = [*thumbnails[::20], *generated[:3]]
    for path in sources:
        for channels in (1, 3):
            resized = oracle.resize(oracle.load(path, channels), size)
            expected = oracle.encode_decode(resized, quality)
            mine = chain.ujpeg_decode(chain.stb_write_jpeg(resized, quality))
            assert np.array_equal(mine, expected), (path.name, channels, size)


# --- the whole chain -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain_inputs(oracle, thumbnails) -> tuple[np.ndarray, np.ndarray]:
    """(emulated, oracle) (N, 224, 224, 3) uint8 for every real thumbnail, one channel
    as SmartCam's config has it."""
    mine = [images.load_pixels(p, images.Preprocessing("onboard", 1, SIZE)) for p in thumbnails]
    truth = [oracle.chain(p, SIZE, 1) for p in thumbnails]
    return np.stack(mine), np.stack(truth)


def test_whole_chain_matches_smartcam_on_real_thumbnails(chain_inputs):
    mine, truth = chain_inputs
    figures = _figures(np.abs(mine.astype(int) - truth))
    message = (f"whole chain, {len(mine)} real thumbnails, 1 channel: mean |diff| "
               f"{figures['mean']:.6f}, {figures['over4_pct']:.4f} % of values off by more "
               f"than 4 levels, {figures['over1_pct']:.4f} % by more than 1, worst "
               f"{figures['max']}")
    print("\n" + message)
    assert figures["mean"] <= 0.0005 and figures["over4_pct"] <= 0.1, message


def test_whole_chain_with_three_channels(oracle, thumbnails):
    sources = thumbnails[::8]
    colour = images.Preprocessing("onboard", 3, SIZE)
    diff = np.stack([np.abs(images.load_pixels(p, colour).astype(int) - oracle.chain(p, SIZE, 3))
                     for p in sources])
    figures = _figures(diff)
    message = (f"whole chain, {len(sources)} real thumbnails, 3 channels: mean |diff| "
               f"{figures['mean']:.6f}, {figures['over4_pct']:.4f} % over 4 levels, worst "
               f"{figures['max']}")
    print("\n" + message)
    assert figures["mean"] <= 0.0005 and figures["over4_pct"] <= 0.1, message


def test_a_trained_model_picks_the_same_top1(chain_inputs, thumbnails):
    """A small CNN trained on the emulated inputs gives the same top-1 on the oracle's."""
    import tf_keras

    mine, truth = chain_inputs
    labels = sorted({p.parent.name for p in thumbnails})
    y = np.array([labels.index(p.parent.name) for p in thumbnails])
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([
        tf_keras.Input((*SIZE, 3)),
        tf_keras.layers.AveragePooling2D(4),
        tf_keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        tf_keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(len(labels), activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images.to_model_input(mine), y, epochs=8, batch_size=16, verbose=0)
    emulated = model.predict(images.to_model_input(mine), verbose=0)
    onboard_truth = model.predict(images.to_model_input(truth), verbose=0)
    assert len(set(emulated.argmax(1))) > 1  # the model tells the images apart
    disagreeing = [p.name for p, a, b in zip(thumbnails, emulated.argmax(1),
                                             onboard_truth.argmax(1), strict=True) if a != b]
    print(f"\ntop-1 agreement: {len(thumbnails) - len(disagreeing)} / {len(thumbnails)}; "
          f"largest confidence change {np.abs(emulated - onboard_truth).max():.2e}")
    assert not disagreeing
