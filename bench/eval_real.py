#!/usr/bin/env python3
"""Evaluate a packaged SmartCam model on real OPS-SAT thumbnails, with the
ground preprocessing and the on-board one (grayscale, Mitchell resize, JPEG
round trip), and show how much the two disagree.

Reads <real_dir>/<label>/*.jpeg in place (never copies them). When the folder
is absent it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import opssat  # noqa: F401  (selects tf_keras before TensorFlow loads)
from opssat.core import cli, errors, flags
from opssat.core.paths import model_paths
from opssat.data import images, sample
from opssat.data.preprocess import PreprocessOptions
from opssat.judge.confidences import check_threshold
from opssat.judge.infer import Classifier
from opssat.onboard import smartcam
from opssat.uplink import package

DEFAULT_REAL_DIR = sample.REAL_SAMPLE_DIR
MODES = images.PREPROCESS_MODES


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name: evaluate its package "
                        "repo/<model>/smartcam/<package>/")
    parser.add_argument("--package", help="package name (default: the model name)")
    parser.add_argument("--model_file", help="a .tflite to evaluate instead of a package")
    parser.add_argument("--label_file", help="its labels (default: labels.txt beside it)")
    parser.add_argument("--real_dir", type=Path, default=DEFAULT_REAL_DIR,
                        help="folder of <label>/ sub-folders of real thumbnails "
                        "(default: the bundled sample_data/opssat_real)")
    parser.add_argument("--threshold", type=float, help="confidence threshold for the "
                        "'kept' figures (default: the package's, else "
                        f"{smartcam.CONFIDENCE_THRESHOLD:.2f})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    # Both modes are judged: only the on-board settings are flags.
    flags.add_flags(parser, [PreprocessOptions], skip=("preprocess",))
    return parser.parse_args()


def model_files(args: argparse.Namespace) -> tuple[Path, Path, float | None]:
    """(model file, labels file, the package's configured threshold or None)."""
    if args.model_file:
        model_file = Path(args.model_file)
        label_file = Path(args.label_file) if args.label_file else model_file.parent / "labels.txt"
        return model_file, label_file, None
    if not args.model:
        raise errors.UserError("give --model NAME (its SmartCam package) or --model_file FILE")
    paths = model_paths(args.model).require_model_dir()
    name = package.check_package_name(args.package or paths.name)
    folder = paths.smartcam_dir(name)
    if not folder.is_dir():
        raise errors.UserError(f"no SmartCam package {folder}: run package_smartcam.py "
                            f"{paths.name} --name {name} first")
    label_file = Path(args.label_file) if args.label_file else folder / smartcam.LABELS_FILE
    return folder / smartcam.MODEL_FILE, label_file, package.package_threshold(folder)


def real_images(real_dir: Path) -> list[tuple[str, Path]]:
    """(label, file) for each image under ``real_dir/<label>/``."""
    return [(folder.name, path) for folder in images.label_folders(real_dir)
            for path in images.list_files(folder) if images.is_image_name(path)]


def evaluate(classifier: Classifier, files: list[tuple[str, Path]], threshold: float,
             options: PreprocessOptions) -> dict:
    """Every figure, JSON-ready: per mode accuracy, recall per label and kept
    share at the threshold; top-1 agreement between modes; input difference."""
    labels = classifier.labels
    preprocessing = {mode: replace(options, preprocess=mode).preprocessing(
        size=classifier.input_size) for mode in MODES}
    rows, skipped = [], []
    for expected, path in files:
        try:
            inputs = [images.load_input(path, preprocessing[mode]) for mode in MODES]
        except images.UnreadableImageError as err:
            skipped.append(str(err))
            continue
        results = {mode: classifier.classify(model_input)[0]
                   for mode, model_input in zip(MODES, inputs, strict=True)}
        row = {"file": f"{expected}/{path.name}", "expected": expected,
               "input_mad": float(np.mean(np.abs(inputs[0] - inputs[1])))}
        for mode, probabilities in results.items():
            best = int(np.argmax(probabilities))
            row[mode] = {"label": labels[best], "confidence": float(probabilities[best])}
        rows.append(row)
    real_labels = sorted({expected for expected, _ in files})
    figures = {
        "images": len(rows),
        "labels": labels,
        "real_labels": real_labels,
        "absent_from_model": [label for label in real_labels if label not in labels],
        "without_real_images": [label for label in labels if label not in real_labels],
        "threshold": threshold,
        "onboard_channels": options.onboard_channels,
        "modes": {mode: _mode_figures(rows, mode, real_labels, threshold) for mode in MODES},
        "skipped": skipped,
        "per_image": rows,
    }
    agreeing = sum(row[MODES[0]]["label"] == row[MODES[1]]["label"] for row in rows)
    figures["agreement"] = {"agreeing": agreeing,
                            "share": agreeing / len(rows) if rows else None}
    mad = float(np.mean([row["input_mad"] for row in rows])) if rows else None
    figures["input_mad"] = mad
    figures["input_mad_pixel_levels"] = None if mad is None else mad * smartcam.INPUT_STD
    return figures


def _mode_figures(rows: list[dict], mode: str, real_labels: list[str], threshold: float) -> dict:
    correct = [row[mode]["label"] == row["expected"] for row in rows]
    kept = [row[mode]["confidence"] >= threshold for row in rows]
    kept_correct = sum(c for c, k in zip(correct, kept, strict=True) if k)
    recall = {}
    for label in real_labels:
        hits = [c for c, row in zip(correct, rows, strict=True) if row["expected"] == label]
        recall[label] = {"images": len(hits), "correct": sum(hits),
                         "recall": sum(hits) / len(hits) if hits else None}
    return {
        "correct": sum(correct),
        "accuracy": sum(correct) / len(rows) if rows else None,
        "recall": recall,
        "kept": sum(kept),
        "kept_share": sum(kept) / len(rows) if rows else None,
        "kept_accuracy": kept_correct / sum(kept) if any(kept) else None,
        "predicted": {label: sum(row[mode]["label"] == label for row in rows)
                      for label in sorted({row[mode]["label"] for row in rows})},
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_text(figures: dict, model_file: Path, real_dir: Path) -> None:
    modes = figures["modes"]
    counts = ", ".join(f"{label} {modes[MODES[0]]['recall'][label]['images']}"
                       for label in figures["real_labels"])
    print(f"real thumbnails: {real_dir} ({figures['images']} images: {counts})")
    print(f"model: {model_file} (labels: {', '.join(figures['labels'])})")
    channels = "grayscale" if figures["onboard_channels"] == 1 else "colour"
    print(f"on-board preprocessing: {channels}, Mitchell resize, JPEG q"
          f"{smartcam.ONBOARD_JPEG_QUALITY} round trip\n")
    print(f"{'':24}{MODES[0]:>10}{MODES[1]:>10}")

    def line(title: str, values: list[str]) -> None:
        print(f"{title:24}" + "".join(f"{v:>10}" for v in values))

    line("accuracy (top-1)", [_pct(modes[m]["accuracy"]) for m in MODES])
    for label in figures["real_labels"]:
        line(f"recall {label}", [_pct(modes[m]["recall"][label]["recall"]) for m in MODES])
    threshold = figures["threshold"]
    line(f"kept at {threshold:.2f}", [_pct(modes[m]["kept_share"]) for m in MODES])
    line("accuracy of kept", [_pct(modes[m]["kept_accuracy"]) for m in MODES])
    for mode in MODES:
        spread = ", ".join(f"{k} {v}" for k, v in modes[mode]["predicted"].items())
        print(f"predicted ({mode}): {spread}")
    agreement = figures["agreement"]
    print(f"\ntop-1 agreement between modes: {agreement['agreeing']}/{figures['images']} "
          f"({_pct(agreement['share'])})")
    if figures["input_mad"] is not None:
        print(f"mean |ground - onboard| model input: {figures['input_mad']:.4f} "
              f"({figures['input_mad_pixel_levels']:.1f} of 255 pixel levels)")
    for label in figures["absent_from_model"]:
        print(f"note: {label} is not a label of this model; its images count as wrong")
    for label in figures["without_real_images"]:
        print(f"note: no real {label} images: its recall is not measured here")
    for problem in figures["skipped"]:
        errors.warn(f"skipped {problem}")


def main() -> int:
    args = parse_args()
    real_dir = args.real_dir
    if not real_dir.is_dir():
        message = f"no real thumbnails at {real_dir}: nothing to evaluate"
        if args.json:
            print(json.dumps({"real_dir": str(real_dir), "available": False}))
        print(message, file=sys.stderr if args.json else sys.stdout)
        return 0
    model_file, label_file, package_threshold = model_files(args)
    threshold = args.threshold if args.threshold is not None else (
        package_threshold if package_threshold is not None else smartcam.CONFIDENCE_THRESHOLD)
    check_threshold(threshold)
    files = real_images(real_dir)
    if not files:
        raise errors.UserError(f"no images in {real_dir}/<label>/: put thumbnails in label folders")
    classifier = Classifier(model_file, label_file)
    figures = evaluate(classifier, files, threshold, PreprocessOptions.from_args(args))
    if not figures["images"]:
        raise errors.UserError(f"none of the images in {real_dir} could be read")
    if args.json:
        figures.update(real_dir=str(real_dir), available=True, model_file=str(model_file),
                       label_file=str(label_file))
        print(json.dumps(figures, indent=2))
    else:
        print_text(figures, model_file, real_dir)
    return 0


if __name__ == "__main__":
    cli.run(main)
