#!/usr/bin/env python3
"""Classify one image with a TFLite model: flags as TensorFlow's label_image example
and the original OPS-SAT toolkit (-i, -m, -l, -t, -n, -e).

With -n/--model_name it also does what the original did: it appends the image's
row to repo/<model>/data/classification/confidences.csv and copies the image to
classified/<label>/ or, below the threshold, to unclassified/.

Runs on LiteRT alone (no TensorFlow import), so it starts in well under a second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opssat.core import cli, errors, flags
from opssat.core.paths import model_paths
from opssat.data import images
from opssat.data.preprocess import PreprocessOptions
from opssat.judge import confidences
from opssat.judge.confidences import ranked
from opssat.judge.infer import Classifier, predicted_label, record_image
from opssat.judge.shared_options import ModelFiles, Threads, Threshold
from opssat.onboard import smartcam


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", "--image", required=True, type=Path, help="image to classify")
    parser.add_argument("-n", "--model_name", default=None,
                        help="record the result in repo/<model>/data/classification/: a row of "
                        "confidences.csv and a copy in classified/<label>/ or unclassified/")
    parser.add_argument("-e", "--expected_label", default=None,
                        help="the image's true label, for the CSV row (needed with -n)")
    parser.add_argument("--input_mean", type=float, default=smartcam.INPUT_MEAN,
                        help="input = (pixel - mean) / std (default: %(default)s)")
    parser.add_argument("--input_std", type=float, default=smartcam.INPUT_STD,
                        help="input = (pixel - mean) / std (default: %(default)s)")
    parser.add_argument("--top_k", type=int, default=None,
                        help="print only the k most confident labels (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    flags.add_flags(parser, [ModelFiles, Threshold, PreprocessOptions, Threads])
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    if args.top_k is not None and args.top_k < 1:
        raise errors.UserError(f"--top_k must be 1 or more, not {args.top_k}")
    confidences.check_threshold(args.threshold, "-t/--threshold")
    preprocessing = images.preprocessing_from_args(args)
    if not args.image.is_file():
        raise errors.UserError(f"image {args.image} not found: pass an existing file to --image")
    paths = None
    if args.model_name is not None:
        paths = model_paths(args.model_name).require_model_dir()
        if args.expected_label is None:
            raise errors.UserError("-n/--model_name records the image for calc_perf.py, which "
                                   "needs its true label: pass -e/--expected_label <label>")
        model_file = args.model_file or paths.tflite_model
        label_file = args.label_file or paths.labels_file
    elif args.expected_label is not None:
        raise errors.UserError("-e/--expected_label is recorded only with -n/--model_name <model>")
    else:
        model_file = args.model_file or Path("tflite_model.tflite")
        label_file = args.label_file or Path("labels.txt")
    classifier = Classifier(model_file, label_file, num_threads=args.num_threads,
                            preprocessing=preprocessing)
    probabilities, elapsed_ms = classifier.classify_file(args.image)
    recorded = None
    if paths is not None:
        recorded = record_image(paths, args.image, args.expected_label, probabilities,
                                elapsed_ms, classifier.labels, args.threshold, preprocessing.mode,
                                seen=classifier.preprocessing)
    results = ranked(probabilities, classifier.labels, args.top_k)
    if args.json:
        out = {"predictions": dict(results), "time_ms": round(elapsed_ms, 3),
               "predicted": predicted_label(probabilities, classifier.labels, args.threshold)}
        if recorded is not None:
            out.update(csv=str(recorded.csv_path), copy=str(recorded.copy))
        print(json.dumps(out))
        return 0
    for label, confidence in results:
        print(f"{label}: {confidence:.6f}")
    if recorded is not None:
        print(f"recorded: {recorded.predicted} -> {recorded.copy}; row in {recorded.csv_path}")
    return 0


if __name__ == "__main__":
    cli.run(main)
