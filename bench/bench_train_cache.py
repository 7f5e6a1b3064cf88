"""Frozen-backbone training with and without cached features, with augmentation,
and int8 vs float.

``cache``: trains the same frozen EfficientNet-Lite0 classifier twice on the same
synthetic thumbnails (20 epochs by default), once decoding every image through
the backbone each epoch and once from backbone features computed once, and
prints both times and their ratio (target >= 10x). ``augmentation``: the same
with orbit augmentation, once with the cache off (every epoch augments and runs
the backbone afresh) and once from K cached augmented views per image (built,
then reused), with the validation accuracy of each. ``int8``: compares the float
and int8 TFLite exports of the cached run: file size (target ~4x smaller) and
invoke time (target >= 2x).

    .venv/bin/python bench/bench_train_cache.py [--images 120] [--epochs 20] \
        [--views 8] [--parts cache,augmentation,int8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from opssat.data import sample
from opssat.judge.infer import Classifier
from opssat.onboard import smartcam
from opssat.train.make_image_classifier import options_from_args
from opssat.train.record import TrainRecord
from opssat.train.trainer import train


def invoke_ms(model_file: Path, labels_file: Path, repeats: int) -> float:
    """Median invoke time on one SmartCam-sized input, after a warm-up."""
    classifier = Classifier(model_file, labels_file, num_threads=1)
    image = np.random.default_rng(0).random((*smartcam.INPUT_SIZE, 3), dtype=np.float32)
    classifier.classify(image)
    return float(np.median([classifier.classify(image)[1] for _ in range(repeats)]))


def train_once(work: Path, name: str, epochs: int, *flags: str
               ) -> tuple[float, float, TrainRecord]:
    """(fit seconds, whole-run seconds, record) of one frozen EfficientNet-Lite0 run."""
    out = work / name
    options = options_from_args([
        "--image_dir", str(work / "all"), "--backbone", "efficientnet_lite0",
        "--train_epochs", str(epochs), "--tflite_output_file", str(out / "model.tflite"),
        "--labels_output_file", str(out / "labels.txt"), *flags,
    ])
    started = time.perf_counter()
    result = train(options)
    return result.record.fit_time_s, time.perf_counter() - started, result.record


def bench_cache(work: Path, epochs: int, count: int) -> None:
    cache = ["--cache_dir", str(work / "cache"), "--quantize", "int8"]
    # The third run finds the features from the second one on disk.
    uncached = train_once(work, "nocache_features", epochs, "--nocache_features", *cache)
    cached = train_once(work, "cache_features", epochs, "--cache_features", *cache)
    reused = train_once(work, "cache_reused", epochs, "--cache_features", *cache)
    print(f"\n{epochs} frozen epochs on {count} images "
          "(fit time; whole run with export in brackets):")
    print(f"  decoding + backbone every epoch:    {uncached[0]:6.1f} s  ({uncached[1]:.1f} s)")
    print(f"  cached features, built in this run: {cached[0]:6.1f} s  ({cached[1]:.1f} s)"
          f"  {uncached[0] / cached[0]:.1f}x faster")
    print(f"  cached features, reused from disk:  {reused[0]:6.1f} s  ({reused[1]:.1f} s)"
          f"  {uncached[0] / reused[0]:.1f}x faster  (target >= 10x)")


def bench_augmentation(work: Path, epochs: int, count: int, views: int) -> None:
    common = ["--orbit_augmentation", "--cache_dir", str(work / "aug_cache")]
    runs = {
        "cache off, augmented afresh every epoch": train_once(
            work, "aug_off", epochs, *common, "--augmented_views", "0"),
        f"{views} cached views, built in this run": train_once(
            work, "aug_views", epochs, *common, "--augmented_views", str(views)),
        f"{views} cached views, reused from disk": train_once(
            work, "aug_reused", epochs, *common, "--augmented_views", str(views)),
    }
    print(f"\n{epochs} frozen epochs on {count} images with orbit augmentation "
          "(fit time; whole run in brackets; validation accuracy):")
    base = next(iter(runs.values()))[0]
    for name, (fit_s, run_s, record) in runs.items():
        print(f"  {name:42s} {fit_s:6.1f} s  ({run_s:.1f} s)  {base / fit_s:5.1f}x  "
              f"accuracy {record.validation_accuracy:.3f}")


def bench_int8(work: Path, invokes: int) -> None:
    out = work / "cache_features"
    float_file, int8_file = out / "model.tflite", out / "model_int8.tflite"
    labels_file = out / "labels.txt"
    float_ms = invoke_ms(float_file, labels_file, invokes)
    int8_ms = invoke_ms(int8_file, labels_file, invokes)
    float_kb, int8_kb = float_file.stat().st_size / 1024, int8_file.stat().st_size / 1024
    print("\nTFLite, one thread, median of", invokes, "invokes:")
    print(f"  float32: {float_kb:8.0f} KiB  {float_ms:7.2f} ms")
    print(f"  int8:    {int8_kb:8.0f} KiB  {int8_ms:7.2f} ms")
    print(f"  int8 is {float_kb / int8_kb:.1f}x smaller (target ~4x) and "
          f"{float_ms / int8_ms:.1f}x faster (target >= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--views", type=int, default=8, help="cached augmented views")
    parser.add_argument("--invokes", type=int, default=50)
    parser.add_argument("--parts", default="cache,augmentation,int8",
                        help="comma-separated: cache, augmentation, int8 (int8 needs cache)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    work = Path(tempfile.mkdtemp(prefix="bench-train-cache-"))
    counts = sample.generate(work / "all", args.images, seed=1)
    count = sum(counts.values())
    print(f"data: {count} synthetic thumbnails {counts} in {work}")
    if "cache" in parts:
        bench_cache(work, args.epochs, count)
    if "augmentation" in parts:
        bench_augmentation(work, args.epochs, count, args.views)
    if "int8" in parts and "cache" in parts:
        bench_int8(work, args.invokes)


if __name__ == "__main__":
    main()
