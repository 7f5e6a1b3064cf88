"""TFLite invoke time of the built-in backbones' classifiers on this CPU.

Builds a 3-label classifier on EfficientNet-Lite0 (its ImageNet weights) and on
MobileNetV2 (random weights: Keras' ImageNet download needs a network, and the
time does not depend on the weights), exports each to float32 TFLite, checks it
against the SmartCam contract, and prints size and median invoke time.

    .venv/bin/python bench/bench_backbones.py [--invokes 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from opssat.data import labels
from opssat.judge import contract
from opssat.judge.infer import Classifier
from opssat.onboard import smartcam
from opssat.train import export
from opssat.train.backbones import load_backbone
from opssat.train.options import TrainOptions
from opssat.train.trainer import build_classifier, build_head

LABELS = list(smartcam.DEFAULT_LABELS)


def mobilenet_v2_weights(folder: Path) -> Path:
    """Random MobileNetV2 weights in a file, loaded the offline way (--backbone_weights)."""
    import tf_keras

    core = tf_keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False,
                                             pooling="avg", weights=None)
    path = folder / "mobilenet_v2_random.h5"
    core.save_weights(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invokes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backbones-"))
    labels_file = work / "labels.txt"
    labels.write_labels(labels_file, LABELS)
    image = np.random.default_rng(0).random((224, 224, 3), dtype=np.float32)

    print(f"{'backbone':<20} {'TFLite KiB':>11} {'contract':>9} {'invoke ms':>10}")
    backbones = (load_backbone("efficientnet_lite0"),
                 load_backbone("mobilenet_v2", weights_file=str(mobilenet_v2_weights(work))))
    for backbone in backbones:
        model = build_classifier(backbone, build_head(len(LABELS), TrainOptions()))
        path = work / f"{backbone.name}.tflite"
        path.write_bytes(export.tflite_bytes(model))
        report = contract.check_contract(path, labels_file)
        classifier = Classifier(path, labels_file, num_threads=args.threads)
        classifier.classify(image)
        times = [classifier.classify(image)[1] for _ in range(args.invokes)]
        print(f"{backbone.name:<20} {path.stat().st_size / 1024:>11.0f} "
              f"{'ok' if report.ok else 'FAILS':>9} {np.median(times):>10.2f}")
    print(f"(median of {args.invokes} invokes, {args.threads} thread(s), float32)")


if __name__ == "__main__":
    main()
