"""Frozen-backbone training with and without cached features, and int8 vs float.

Trains the same frozen EfficientNet-Lite0 classifier twice on the same synthetic
thumbnails (20 epochs by default), once decoding every image through the
backbone each epoch and once from backbone features computed once, and prints
both times and their ratio (target >= 10x). Then compares the float and int8
TFLite exports: file size (target ~4x smaller) and invoke time (target >= 2x).

    .venv/bin/python bench/bench_train_cache.py [--images 120] [--epochs 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opssat import sample, smartcam  # noqa: E402
from opssat.infer import Classifier  # noqa: E402
from opssat.make_image_classifier import options_from_args  # noqa: E402
from opssat.train import train  # noqa: E402


def invoke_ms(model_file: Path, labels_file: Path, repeats: int) -> float:
    """Median invoke time on one SmartCam-sized input, after a warm-up."""
    classifier = Classifier(model_file, labels_file, num_threads=1)
    image = np.random.default_rng(0).random((*smartcam.INPUT_SIZE, 3), dtype=np.float32)
    classifier.classify(image)
    return float(np.median([classifier.classify(image)[1] for _ in range(repeats)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--invokes", type=int, default=50)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-train-cache-"))
    counts = sample.generate(work / "all", args.images, seed=1)
    print(f"data: {sum(counts.values())} synthetic thumbnails {counts} in {work}")
    times = {}
    # The third run finds the features from the second one on disk.
    for flag in ("--nocache_features", "--cache_features", "--cache_features=true"):
        out = work / flag.strip("-").split("=")[0]
        options = options_from_args([
            "--image_dir", str(work / "all"), "--backbone", "efficientnet_lite0",
            "--train_epochs", str(args.epochs), "--tflite_output_file",
            str(out / "model.tflite"), "--labels_output_file", str(out / "labels.txt"),
            "--cache_dir", str(work / "cache"), "--quantize", "int8", flag,
        ])
        started = time.perf_counter()
        result = train(options)
        times[flag] = (result.record["fit_time_s"], time.perf_counter() - started)

    uncached, cached = times["--nocache_features"], times["--cache_features"]
    reused = times["--cache_features=true"]
    print(f"\n{args.epochs} frozen epochs on {sum(counts.values())} images "
          "(fit time; whole run with export in brackets):")
    print(f"  decoding + backbone every epoch:    {uncached[0]:6.1f} s  ({uncached[1]:.1f} s)")
    print(f"  cached features, built in this run: {cached[0]:6.1f} s  ({cached[1]:.1f} s)"
          f"  {uncached[0] / cached[0]:.1f}x faster")
    print(f"  cached features, reused from disk:  {reused[0]:6.1f} s  ({reused[1]:.1f} s)"
          f"  {uncached[0] / reused[0]:.1f}x faster  (target >= 10x)")

    out = work / "cache_features"
    float_file, int8_file = out / "model.tflite", out / "model_int8.tflite"
    labels_file = out / "labels.txt"
    float_ms = invoke_ms(float_file, labels_file, args.invokes)
    int8_ms = invoke_ms(int8_file, labels_file, args.invokes)
    float_kb, int8_kb = float_file.stat().st_size / 1024, int8_file.stat().st_size / 1024
    print("\nTFLite, one thread, median of", args.invokes, "invokes:")
    print(f"  float32: {float_kb:8.0f} KiB  {float_ms:7.2f} ms")
    print(f"  int8:    {int8_kb:8.0f} KiB  {int8_ms:7.2f} ms")
    print(f"  int8 is {float_kb / int8_kb:.1f}x smaller (target ~4x) and "
          f"{float_ms / int8_ms:.1f}x faster (target >= 2x)")


if __name__ == "__main__":
    main()
