#!/usr/bin/env python3
"""Write synthetic OPS-SAT-like thumbnails into repo/<model>/data/all/<label>/.

About 6 bad : 3 earth : 1 edge, in bursts a few seconds apart, plus one
truncated JPEG and one non-image file that exercise image hygiene. The same
seed gives byte-identical files.
"""

from __future__ import annotations

import argparse

from opssat import atomic, cli, images, sample
from opssat.paths import model_paths


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("--count", type=int, default=sample.DEFAULT_COUNT,
                        help="number of images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=sample.DEFAULT_SEED,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty data/all (adds or overwrites only the "
                             "generator's own file names)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model)
    if not args.force:
        sample.refuse_non_empty(paths.all_dir)
    existing = images.label_folders(paths.all_dir) if paths.all_dir.is_dir() else []
    atomic.check_writable(paths.all_dir, *existing)
    counts = sample.generate(paths.all_dir, args.count, args.seed)
    for label, n in counts.items():
        print(f"{label:<6} {n:>5} images in {paths.all_dir / label}")
    print(f"plus one truncated JPEG ({sample.TRUNCATED_LABEL}/) and one non-image file "
          f"({sample.NON_IMAGE_LABEL}/{sample.NON_IMAGE_NAME}) to exercise image hygiene")
    print(f"next: ./split_data.py {args.model} 20")
    return 0


if __name__ == "__main__":
    cli.run(main)
