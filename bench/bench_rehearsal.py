#!/usr/bin/env python3
"""The flight rehearsal's cost per image next to flight mode's, on the same images, and
whether the two give each image the same answer.

Flight mode (batch_label_images.py --runtime smartcam) runs SmartCam's resizer and
image_classifier once per image; the rehearsal (rehearse.py) runs SmartCam's whole app
over them (mock camera, thumbnail, input, classifier, metadata, toGround moves, tar).
Prints both wall times per image, the rehearsal's SmartCam run alone, the top-1
agreement and largest probability difference of the entry model's answers, and the kept
counts per label from the metadata CSV against the files in SmartCam's toGround/.
Writes repo/<model>/rehearsal/ as rehearse.py does.

  python bench/bench_rehearsal.py MODEL --smartcam_dir DIR [--images FOLDER] [--arch k8]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from opssat.core import cli, flags
from opssat.core.paths import model_paths
from opssat.data.labels import read_labels
from opssat.judge import agreement as judge
from opssat.judge.shared_options import SmartCamRuntime
from opssat.onboard import flight
from opssat.uplink import rehearsal


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name; its package smartcam/<model>/ is rehearsed")
    parser.add_argument("--images", type=Path, default=None,
                        help="thumbnails (default: the model's data/test)")
    flags.add_flags(parser, [SmartCamRuntime])
    return parser.parse_args()


def flight_mode(runtime: flight.Runtime, model_file: Path, labels: list[str],
                files: list[Path]) -> tuple[dict[Path, np.ndarray], float]:
    """Flight mode's answers by file and its wall seconds (resize then classify, in turn)."""
    answers = {}
    start = time.perf_counter()
    with flight.FlightClassifier(runtime, model_file, labels) as classifier:
        for path in files:
            answers[path] = classifier.classify_file(path)[0]
    return answers, time.perf_counter() - start


def agreement(rows: list[dict], files: dict[str, str], package: str, labels: list[str],
              answer_of) -> tuple[int, float]:
    """(images that agree, largest probability difference) between ``answer_of(source
    file)`` and the rehearsal's entry-model answers, by the toolkit's one judge
    (``opssat.judge.agreement.compare``: top-1 and the probability bound)."""
    mine = [[json.loads(row["answers"]).get(package, {}).get(label, np.nan) for label in labels]
            for row in rows]
    theirs = [answer_of(Path(files[row["file"]])) for row in rows]
    judged = judge.compare(theirs, mine, labels, [row["file"] for row in rows],
                           reference_name="flight mode", candidate_name="the rehearsal")
    if judged.answers_problem:
        print(f"warning: {judged.answers_problem}")
    return judged.agreeing, judged.largest_difference


def batch_label_csv(paths, labels: list[str]) -> dict[str, list[float]] | None:
    """batch_label_images.py --runtime smartcam's answers by file name, when it ran."""
    csv_path = paths.confidences_csv(flight.MODE)
    if not csv_path.is_file():
        return None
    with open(csv_path, newline="") as handle:
        return {Path(r["filename"]).name: [float(r[k]) for k in labels]
                for r in csv.DictReader(handle)}


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir()
    folder = flight.smartcam_dir(args.smartcam_dir)
    ref = rehearsal.find_package(args.model)
    labels = read_labels(ref.folder / "labels.txt")
    found = rehearsal.list_images(args.images or paths.test_dir)
    files = [path for _, path in found]
    answers, flight_s = flight_mode(flight.Runtime(folder, args.smartcam_arch),
                                    ref.folder / "model.tflite", labels, files)
    start = time.perf_counter()
    result = rehearsal.rehearse([args.model], folder, args.images, arch=args.smartcam_arch)
    rehearsal_s = time.perf_counter() - start
    n = len(files)
    by_path = {path.resolve(): answers[path] for path in files}
    rows, sources = result.rows, result.summary["files"]
    same, largest = agreement(rows, sources, ref.name, labels, lambda p: by_path[p.resolve()])
    print(f"{n} images, model {ref.folder / 'model.tflite'}, SmartCam {args.smartcam_arch} build")
    print(f"flight mode (resize + image_classifier): {1000 * flight_s / n:.0f} ms per image")
    print(f"rehearsal (rehearse, whole):             {1000 * rehearsal_s / n:.0f} ms per image "
          f"({rehearsal_s / flight_s:.2f}x flight mode)")
    print(f"  of which SmartCam's app ran:           "
          f"{1000 * result.summary['seconds'] / n:.0f} ms per image")
    print(f"same top-1 as flight mode: {same}/{len(result.rows)}; largest probability "
          f"difference {largest:.2g}")
    written = batch_label_csv(paths, labels)
    if written is not None and all(Path(s).name in written for s in sources.values()):
        same, largest = agreement(rows, sources, ref.name, labels, lambda p: written[p.name])
        print(f"same top-1 as {paths.confidences_csv(flight.MODE).name} (batch_label_images.py "
              f"--runtime smartcam): {same}/{len(rows)}; largest probability difference "
              f"{largest:.2g}")
    print(f"kept per label, metadata CSV: {result.summary['kept_per_label']}; files in "
          f"toGround/: {result.summary['toground_per_label']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
