"""Does training on on-board preprocessing pay off on real OPS-SAT images?

Trains the demo recipe (frozen EfficientNet-Lite0 on the synthetic sample) with
``--train_preprocess ground`` and ``onboard`` for several seeds, and evaluates
every model on the real thumbnails in ``../shared/opssat_real/`` with both
preprocessings (as ``bench/eval_real.py`` does). Prints the mean and spread of
accuracy per (training, evaluation) pair: one seed on 19 images says little.

    .venv/bin/python bench/compare_train_preprocess.py [--seeds 1,2,3,4,5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from eval_real import DEFAULT_REAL_DIR, MODES, evaluate, real_images

from opssat.data import sample
from opssat.judge.infer import Classifier
from opssat.onboard import smartcam
from opssat.train.make_image_classifier import options_from_args
from opssat.train.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--images", type=int, default=120, help="synthetic training images")
    parser.add_argument("--real_dir", type=Path, default=DEFAULT_REAL_DIR)
    args = parser.parse_args()
    if not args.real_dir.is_dir():
        print(f"no real images in {args.real_dir}: nothing to compare")
        return
    real = real_images(args.real_dir)
    work = Path(tempfile.mkdtemp(prefix="compare-preprocess-"))
    sample.generate(work / "all", args.images)
    seeds = [int(s) for s in args.seeds.split(",")]

    accuracy: dict[tuple[str, str], list[float]] = {}
    recall: dict[tuple[str, str, str], list[float]] = {}
    for trained in MODES:
        for seed in seeds:
            out = work / f"{trained}-{seed}"
            train(options_from_args([
                "--image_dir", str(work / "all"), "--backbone", "efficientnet_lite0",
                "--train_epochs", str(args.epochs), "--seed", str(seed),
                "--train_preprocess", trained, "--cache_dir", str(work / f"cache-{trained}"),
                "--tflite_output_file", str(out / "model.tflite"),
                "--labels_output_file", str(out / "labels.txt"),
            ]))
            classifier = Classifier(out / "model.tflite", out / "labels.txt")
            figures = evaluate(classifier, real, smartcam.CONFIDENCE_THRESHOLD,
                               smartcam.ONBOARD_CHANNELS)
            for evaluated, mode in figures["modes"].items():
                accuracy.setdefault((trained, evaluated), []).append(mode["accuracy"])
                for label, per_label in mode["recall"].items():
                    recall.setdefault((trained, evaluated, label), []).append(
                        per_label["recall"])

    labels = sorted({label for _, _, label in recall})
    print(f"\n{len(real)} real thumbnails, {len(seeds)} seeds, mean ± standard deviation:")
    header = f"{'trained on':<11} {'evaluated as':<13} {'accuracy':>15}"
    print(header + "".join(f" {'recall ' + label:>15}" for label in labels))
    for trained in MODES:
        for evaluated in MODES:
            values = np.asarray(accuracy[(trained, evaluated)])
            line = f"{trained:<11} {evaluated:<13} {_spread(values):>15}"
            for label in labels:
                line += f" {_spread(np.asarray(recall[(trained, evaluated, label)])):>15}"
            print(line)


def _spread(values: np.ndarray) -> str:
    return f"{values.mean():.1%} ± {values.std():.1%}"


if __name__ == "__main__":
    main()
