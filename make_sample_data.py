#!/usr/bin/env python3
"""Put sample images into repo/<model>/data/all/<label>/.

By default, synthetic OPS-SAT-like thumbnails: about 6 bad : 3 earth : 1 edge,
in bursts a few seconds apart, plus one truncated JPEG and one non-image file
that exercise image hygiene (the same seed gives byte-identical files).
--real copies the bundled real sample instead: 123 OPS-SAT thumbnails
(credit ESA / OPS-SAT), each checked against sample_data/opssat_real/MANIFEST.csv.
--top_up LABEL=N adds N synthetic images of LABEL (for bad: exposure failures made
by over-exposing data/all's earth and edge frames, never those of the test split),
named synthetic_*, beside whatever data/all holds; split_data.py puts them in
training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opssat.core import atomic, cli, errors, flags
from opssat.core.paths import model_paths
from opssat.data import images, sample, topup
from opssat.judge.shared_options import TopUp


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("--real", action="store_true",
                        help="copy the bundled real OPS-SAT sample (123 images) instead of "
                             "generating synthetic ones")
    parser.add_argument("--count", type=int, default=sample.DEFAULT_COUNT,
                        help="number of synthetic images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=sample.DEFAULT_SEED,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty data/all (adds or overwrites only the "
                             "sample's own file names)")
    flags.add_flags(parser, [TopUp])
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model)
    top_ups = [topup.parse_top_up(text) for text in args.top_up]
    only_top_up = bool(top_ups) and not args.real
    if not args.force and not only_top_up:
        sample.refuse_non_empty(paths.all_dir)
    if only_top_up and not paths.require_model_dir().all_dir.is_dir():
        raise errors.UserError(f"nothing to top up: {paths.all_dir} does not exist (run "
                               f"./create_dirs.sh {args.model})")
    existing = images.label_folders(paths.all_dir) if paths.all_dir.is_dir() else []
    atomic.check_writable(paths.all_dir, *existing)
    if args.real:
        copied = sample.install_real(paths.all_dir)
        for label, n in copied.copied.items():
            print(f"{label:<6} {n:>5} real images in {paths.all_dir / label}")
        for path, why in copied.skipped:
            errors.warn(f"skipped {path}: {why} (left where it is)")
        print("images: ESA / OPS-SAT (see sample_data/opssat_real/README.md)")
    elif not only_top_up:
        counts = sample.generate(paths.all_dir, args.count, args.seed)
        for label, n in counts.items():
            print(f"{label:<6} {n:>5} images in {paths.all_dir / label}")
        print(f"plus one truncated JPEG ({sample.TRUNCATED_LABEL}/) and one non-image file "
              f"({sample.NON_IMAGE_LABEL}/{sample.NON_IMAGE_NAME}) to exercise image hygiene")
    if top_ups:
        _top_up(paths.all_dir, paths.test_dir, top_ups, args.seed)
    print(f"next: ./split_data.py {args.model} 20")
    return 0


def _top_up(all_dir: Path, test_dir: Path, top_ups: list[tuple[str, int]], seed: int) -> None:
    """Write every top-up, then remove the earlier top-up files in each folder they write
    to: a top-up of N leaves N, also for kinds that share a folder (bad, bad_drawn) or
    write to several (bright, bright_paired)."""
    sources = topup.data_top_up_sources(all_dir, test_dir)
    written: list[Path] = []
    for label, n in top_ups:
        written += topup.top_up(all_dir, label, n, seed, sources=sources)
        made, where = _top_up_origin(all_dir, label, len(sources))
        print(f"{label:<6} {n:>5} synthetic top-up images ({topup.SYNTHETIC_PREFIX}*, {made}) "
              f"in {where}")
    labels = sorted({label for kind, _ in top_ups for label in topup.top_up_labels(kind)})
    for folder in (all_dir / label for label in labels):
        removed = topup.remove_other_top_ups(folder, [p for p in written if p.parent == folder])
        if removed:
            print(f"{len(removed):>12} earlier top-up images removed from {folder} (a top-up "
                  "of N leaves N)")


def _top_up_origin(all_dir: Path, label: str, sources: int) -> tuple[str, Path]:
    """What a top-up of ``label`` is made from, and where it goes: for the log line."""
    folders = topup.top_up_labels(label)
    where = all_dir / (folders[0] if len(folders) == 1 else "{" + ",".join(folders) + "}")
    if label in (topup.BRIGHT, topup.BRIGHT_PAIRED):
        return (f"brightened below the bad line from {sources} earth and edge frames, none of "
                "the test split, each keeping its label", where)
    if label == "bad" and sources:
        return (f"over-exposed from {sources} earth and edge frames of data/all, none of the "
                "test split", where)
    return "drawn from scratch", where

if __name__ == "__main__":
    cli.run(main)
