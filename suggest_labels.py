#!/usr/bin/env python3
"""Rank the unlabelled thumbnails of repo/<model>/data/unlabelled/ for labelling.

Runs the model (on-board input by default, as the spacecraft sees images) over every
file directly in data/unlabelled/ and writes data/review/unlabelled_queue.csv (rank,
burst, burst size, filename, suggested label, confidence, margin, entropy), the
least sure first (--rank margin: smallest gap between the two top probabilities;
entropy: the most spread answer), and data/review/unlabelled.html, where each burst
(thumbnails taken within --group_seconds) is shown once and gets its label by click
or key. Its "download reviewed.csv" goes to relabel.py, which moves each decided file
into data/all/<label>/ (journaled; --undo puts it back). Nothing moves here.
"""

from __future__ import annotations

import argparse

from opssat.core import atomic, cli, errors, flags
from opssat.core.paths import check_inside, model_paths
from opssat.data import images, split
from opssat.data.preprocess import PreprocessOptions
from opssat.judge import queue
from opssat.judge.infer import Classifier
from opssat.judge.shared_options import Bursts, ModelFiles, Progress, Threads

#: Bursts printed on the terminal (the CSV and the page have all).
SHOWN = 10


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("--rank", choices=queue.RANKINGS, default="margin",
                        help="uncertainty measure: margin (smallest top-1 minus top-2 first) or "
                        "entropy (largest first) (default: %(default)s)")
    flags.add_flags(parser, [ModelFiles, PreprocessOptions, Bursts, Threads, Progress])
    parser.set_defaults(preprocess="onboard")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    paths = model_paths(args.model).require_model_dir()
    queue.unlabelled_files(paths)  # a missing or empty folder fails before the model loads
    check_inside(paths.model_dir, *queue.outputs(paths), what="queue output")
    atomic.check_writable(*queue.outputs(paths))
    classifier = Classifier(args.model_file or paths.tflite_model,
                            args.label_file or paths.labels_file, num_threads=args.num_threads,
                            preprocessing=images.preprocessing_from_args(args))
    found = queue.build(paths, classifier, args.rank, split.parse_group_seconds(args.group_seconds),
                        progress=False if args.no_progress else None)
    for line in found.unreadable:
        errors.warn(f"skipped {line}")
    queue.write(paths, found)
    print(f"{len(found.files)} unlabelled images in {len(found.bursts)} bursts, least sure "
          f"first (by {args.rank}, {found.preprocess} input):")
    for burst in found.bursts[:SHOWN]:
        row = burst.rows[0]
        probs = found.probabilities[row]
        print(f"  {found.files[row].name} (burst of {burst.size}): "
              f"{found.labels[int(probs.argmax())]} {probs.max():.3f}")
    if len(found.bursts) > SHOWN:
        print(f"  ... {len(found.bursts) - SHOWN} more bursts in {paths.unlabelled_queue_csv}")
    print(f"queue: {paths.unlabelled_queue_csv}")
    print(f"page:  {paths.unlabelled_html}")
    print(f"next:  decide on the page, download reviewed.csv, then python relabel.py "
          f"{args.model} reviewed.csv --dry_run")
    return 0


if __name__ == "__main__":
    cli.run(main)
