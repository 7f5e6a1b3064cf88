#!/usr/bin/env python3
"""Classify every image of repo/<model>/data/test/<label>/ in one process:
batch_label_images.py <model> [labels_to_skip], as the original toolkit.

Writes data/classification/confidences.csv (confidences_<mode>.csv for
--preprocess onboard, confidences_flight.csv for --runtime smartcam) and copies
each image to classified/<label>/ or, below --threshold, to unclassified/.
Re-running replaces those outputs whole.
"""

from __future__ import annotations

import argparse

from opssat.core import cli, errors, flags
from opssat.core.paths import model_paths
from opssat.data import images
from opssat.data.preprocess import PreprocessOptions
from opssat.judge.infer import RUNTIMES, label_test_set
from opssat.judge.shared_options import (
    ModelFiles,
    Progress,
    SmartCamRuntime,
    Threads,
    Threshold,
)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("labels_to_skip", nargs="?", default="",
                        help="comma-separated test label folders to leave out, as the "
                        "original toolkit took them (e.g. bad,edge)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert",
                        help="litert: classify here with LiteRT; smartcam: with SmartCam's own "
                        "resizer and TFLite 2.5 image_classifier from --smartcam_dir, written "
                        "as mode 'flight' (--preprocess is then SmartCam's own) "
                        "(default: %(default)s)")
    flags.add_flags(parser, [ModelFiles, Threshold, PreprocessOptions, SmartCamRuntime, Threads,
                               Progress])
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir()
    result = label_test_set(
        paths,
        model_file=args.model_file,
        label_file=args.label_file,
        threshold=args.threshold,
        preprocessing=images.preprocessing_from_args(args),
        num_threads=args.num_threads,
        progress=False if args.no_progress else None,
        skip_labels=[label.strip() for label in args.labels_to_skip.split(",") if label.strip()],
        runtime=args.runtime,
        smartcam_dir=args.smartcam_dir,
        smartcam_arch=args.smartcam_arch,
    )
    if result.unreadable:
        errors.warn(f"{len(result.unreadable)} file(s) could not be read and were skipped:")
        for line in result.unreadable:
            errors.warn(f"  {line}")
    print(f"images:       {result.images} ({result.images_per_second:.1f} images/s)")
    print(f"classified:   {result.classified} -> {result.classified_dir}")
    print(f"unclassified: {result.unclassified} (below {args.threshold:.2f}) -> "
          f"{result.unclassified_dir}")
    if result.unreadable:
        print(f"unreadable:   {len(result.unreadable)} (listed above)")
    print(f"confidences:  {result.csv_path}")
    print(f"next:         python calc_perf.py {args.model}")
    return 0


if __name__ == "__main__":
    cli.run(main)
