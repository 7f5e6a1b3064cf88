#!/usr/bin/env python3
"""Classify one image with a TFLite model: flags as TensorFlow's label_image example.

Runs on LiteRT alone (no TensorFlow import), so it starts in well under a second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opssat import cli, images, smartcam
from opssat.infer import Classifier, ranked


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True, type=Path, help="image to classify")
    parser.add_argument("--model_file", type=Path, default=Path("tflite_model.tflite"),
                        help=".tflite model (default: %(default)s)")
    parser.add_argument("--label_file", type=Path, default=Path("labels.txt"),
                        help="labels, one per line in output order (default: %(default)s)")
    parser.add_argument("--input_mean", type=float, default=smartcam.INPUT_MEAN,
                        help="input = (pixel - mean) / std (default: %(default)s)")
    parser.add_argument("--input_std", type=float, default=smartcam.INPUT_STD,
                        help="input = (pixel - mean) / std (default: %(default)s)")
    parser.add_argument("--top_k", type=int, default=None,
                        help="print only the k most confident labels (default: all)")
    parser.add_argument("--num_threads", type=int, default=None, help="interpreter threads")
    images.add_preprocess_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.top_k is not None and args.top_k < 1:
        raise cli.UserError(f"--top_k must be 1 or more, not {args.top_k}")
    if not args.image.is_file():
        raise cli.UserError(f"image {args.image} not found: pass an existing file to --image")
    preprocessing = images.preprocessing_from_args(args)
    classifier = Classifier(args.model_file, args.label_file, num_threads=args.num_threads,
                            preprocessing=preprocessing)
    probabilities, elapsed_ms = classifier.classify_file(args.image)
    results = ranked(probabilities, classifier.labels, args.top_k)
    if args.json:
        print(json.dumps({"predictions": dict(results), "time_ms": round(elapsed_ms, 3)}))
    else:
        for label, confidence in results:
            print(f"{label}: {confidence:.6f}")
    return 0


if __name__ == "__main__":
    cli.run(main)
