"""How training input and the feature cache scale with the number of images.

For each N (500, 2,000 and 8,000 synthetic 614x583 thumbnails by default) a
fresh process measures, with the frozen EfficientNet-Lite0 backbone:
- the tf.data input pipeline alone (decode + resize, no model): images/s;
- building the on-disk feature cache (pipeline + backbone): seconds and images/s;
- a second build with the same key, which must reuse the cache: seconds;
- one epoch of head training from the cache: seconds;
- the process's peak RSS.
Targets: peak RSS flat within 15 % from the smallest to the largest N; the
pipeline faster than the backbone; the second build skips extraction.

    .venv/bin/python bench/bench_scale.py [--counts 500,2000,8000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from opssat.data import sample
from opssat.data.preprocess import PreprocessOptions

BATCH = 32


def measure(count: int, work: Path) -> dict:
    """One N, in this process (the parent runs each N in its own process)."""
    from opssat.train.backbones import check_feature_extractor, load_backbone
    from opssat.train.dataset import (
        FeatureCache,
        feature_dataset,
        image_dataset,
        list_labelled_files,
    )
    from opssat.train.options import TrainOptions
    from opssat.train.trainer import build_head, class_weights, compile_model

    data = work / f"n{count}"
    if not (data / "done").exists():
        sample.generate(data / "all", count, seed=count)
        (data / "done").touch()
    files = list_labelled_files(data / "all")
    backbone = load_backbone("efficientnet_lite0")
    check_feature_extractor(backbone)
    preprocessing = PreprocessOptions().preprocessing(size=(backbone.image_size,) * 2)

    started = time.perf_counter()
    for _ in image_dataset(files, preprocessing, BATCH):
        pass
    pipeline_s = time.perf_counter() - started

    cache = FeatureCache(data / "cache", backbone.identity, preprocessing, files)
    for path in (cache.meta_path, cache.features_path):
        path.unlink(missing_ok=True)

    def extract(batch):
        return backbone.model(batch, training=False).numpy()

    timings = []
    for _ in range(2):
        started = time.perf_counter()
        features, reused = cache.load_or_build(
            extract, image_dataset(files, preprocessing, BATCH), backbone.feature_size)
        timings.append((time.perf_counter() - started, reused))

    options = TrainOptions.from_flags(image_dir=str(data / "all"))
    head = build_head(len(files.labels), options)
    compile_model(head, options)
    rows = list(range(len(files)))
    weights = class_weights(files, "balanced")
    train_data = feature_dataset(files, features, rows, BATCH, shuffle_seed=0,
                                 sample_weights=weights)
    head.fit(train_data, epochs=1, verbose=0)  # builds the graph
    started = time.perf_counter()
    head.fit(train_data, epochs=1, verbose=0)
    epoch_s = time.perf_counter() - started

    return {
        "images": len(files),
        "pipeline_img_s": len(files) / pipeline_s,
        "cache_build_s": timings[0][0],
        "backbone_img_s": len(files) / timings[0][0],
        "cache_reuse_s": timings[1][0],
        "second_run_reused": timings[1][1],
        "head_epoch_s": epoch_s,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="500,2000,8000",
                        help="comma-separated image counts")
    parser.add_argument("--work", type=Path, help="folder for data and caches (kept)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if args.worker:
        print(json.dumps(measure(args.worker, work)))
        return

    results = []
    for count in (int(n) for n in args.counts.split(",")):
        done = subprocess.run([sys.executable, __file__, "--worker", str(count), "--work",
                               str(work)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"N={count} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        row = results[-1]
        print(f"N={row['images']}: done", flush=True)

    print(f"\n{'images':>7} {'pipeline img/s':>15} {'cache build s':>14} "
          f"{'backbone img/s':>15} {'reuse s':>8} {'head epoch s':>13} {'peak RSS MiB':>13}")
    for row in results:
        print(f"{row['images']:>7} {row['pipeline_img_s']:>15.1f} {row['cache_build_s']:>14.1f} "
              f"{row['backbone_img_s']:>15.1f} {row['cache_reuse_s']:>8.2f} "
              f"{row['head_epoch_s']:>13.2f} {row['peak_rss_mib']:>13.0f}")
    rss = [row["peak_rss_mib"] for row in results]
    growth = (rss[-1] - rss[0]) / rss[0] * 100
    print(f"\npeak RSS from {results[0]['images']} to {results[-1]['images']} images: "
          f"{growth:+.1f} % (target: within 15 %)")
    print("input pipeline faster than the backbone: "
          + ", ".join(f"{r['pipeline_img_s'] / r['backbone_img_s']:.1f}x" for r in results))
    print("second run reused the cache: "
          + ", ".join(str(r["second_run_reused"]) for r in results))
    print(f"data and caches in {work}")


if __name__ == "__main__":
    main()
