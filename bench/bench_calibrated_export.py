"""Does the exported model with the temperature folded in (and, with --ensemble_seeds,
the one graph that averages its members) give in SmartCam's k8 build the probabilities
LiteRT gives, and what does it cost on board? Trains a named recipe on all of the bundled
real sample (123 OPS-SAT thumbnails, plus the recipe's top-up made from them) with
``--temperature T`` and ``--ensemble_seeds N``, then runs every real image through LiteRT
(on-board input) and through SmartCam's own resizer and image_classifier (k8 build).

Prints the model file's size, the largest difference between the two runtimes'
probabilities, the top-1 disagreements, and SmartCam's invoke time per image. With
``--check_folding`` it trains the same recipe again with ``--temperature off`` (training
is deterministic per seed) and prints the largest difference between the folded model's
LiteRT probabilities and softmax(log p / T) of the plain model's: the folded model gives
the calibrated probabilities that the out-of-fold figures were computed with.

    .venv/bin/python bench/bench_calibrated_export.py --recipe frozen_top_up --temperature 1.5 \\
        --check_folding --smartcam_dir /work/shared/smartcam_runtime
    # timing only: a short schedule (size and time do not depend on the weights)
    .venv/bin/python bench/bench_calibrated_export.py --recipe fine_tune_strong \\
        --ensemble_seeds 3 --smartcam_dir ... -- --train_epochs 2 --fine_tune_after_epochs 1
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from opssat.core.paths import ModelPaths
from opssat.data import images, sample, topup
from opssat.judge import infer, metrics
from opssat.onboard import flight, smartcam
from opssat.train import recipes

ORACLE_DIR = Path(__file__).resolve().parents[1] / ".." / ".." / "shared" / "onboard_oracle"


def _train(paths: ModelPaths, recipe: recipes.Recipe, out: Path, extra: list[str]) -> Path:
    from opssat.train.options import parse_flags
    from opssat.train.trainer import train

    options = parse_flags([*recipe.flags, "--image_dir", str(paths.all_dir),
                           "--tflite_output_file", str(out / "model.tflite"),
                           "--labels_output_file", str(out / "labels.txt"), *extra])
    started = time.perf_counter()
    result = train(options)
    print(f"trained in {time.perf_counter() - started:.0f} s; temperature "
          f"{result.record.temperature}; members {result.record.ensemble_seeds}", flush=True)
    return out / "model.tflite"


def _litert(model: Path, labels: list[str], files: list[Path]) -> np.ndarray:
    answers = infer.judge_variants({"float": model}, labels, files, ["onboard"])
    return answers.of("onboard", "float")


def _fly(folder: Path, model: Path, labels: list[str], files: list[Path], work: Path,
         oracle_dir: Path) -> None:
    """SmartCam's k8 build against LiteRT: fed the toolkit's on-board input, then (with
    the onboard oracle) SmartCam's own resized JPEG decoded by its uJPEG, so that only
    the runtime differs (bench_smartcam.py's "exact input")."""
    from bench_smartcam import oracle_decoder

    inputs = {"toolkit's on-board input": None}
    if (oracle_dir / "build.sh").is_file():
        inputs["exact input"] = oracle_decoder(oracle_dir, work, smartcam.INPUT_MEAN,
                                               smartcam.INPUT_STD)
    for name, litert_input in inputs.items():
        with flight.FlightClassifier(flight.Runtime(folder, "k8"), model, labels) as flown:
            compared = infer.compare_runtimes(flown, files, litert_input=litert_input)
        print(f"SmartCam k8 vs LiteRT ({name}) on {len(compared.names)} images: largest "
              f"probability difference {compared.largest_difference:.2e}, top-1 differs on "
              f"{len(compared.differing)}; k8 image_classifier {np.mean(compared.flight_ms):.0f} "
              f"ms per image (median {np.median(compared.flight_ms):.0f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=recipes.RECOMMENDED)
    parser.add_argument("--temperature", default="1.5")
    parser.add_argument("--ensemble_seeds", default="1")
    parser.add_argument("--check_folding", action="store_true")
    parser.add_argument("--smartcam_dir", default=None)
    parser.add_argument("--oracle_dir", type=Path, default=ORACLE_DIR,
                        help="the onboard oracle (SmartCam's uJPEG) for the exact-input check")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    recipe = recipes.get(args.recipe)
    root = Path(tempfile.mkdtemp(prefix="bench-calibrated-"))
    paths = ModelPaths("real", root)
    sample.install_real(paths.all_dir)
    files = sorted(p for folder in images.label_folders(paths.all_dir)
                   for p in images.list_files(folder))
    sources = topup.data_top_up_sources(paths.all_dir)
    for label, count in recipe.top_up:
        topup.top_up(paths.all_dir, label, count, sources=sources)
    print(f"recipe {recipe.name}, --temperature {args.temperature}, --ensemble_seeds "
          f"{args.ensemble_seeds}, extra flags {extra}; judged on the {len(files)} real "
          "thumbnails", flush=True)
    flags = ["--temperature", args.temperature, "--ensemble_seeds", args.ensemble_seeds, *extra]
    model = _train(paths, recipe, root / "folded", flags)
    labels = (root / "folded" / "labels.txt").read_text().split()
    litert = _litert(model, labels, files)
    print(f"model file: {model.stat().st_size / 1e6:.2f} MB", flush=True)
    if args.check_folding:
        plain_flags = ["--temperature", "off", "--ensemble_seeds", args.ensemble_seeds, *extra]
        plain = _litert(_train(paths, recipe, root / "plain", plain_flags), labels, files)
        members = [plain] if args.ensemble_seeds == "1" else None
        if members is not None:
            want = metrics.scale_temperature(members, float(args.temperature))
            print(f"folded model vs softmax(log p / T) of the plain one (LiteRT): largest "
                  f"difference {np.abs(litert - want).max():.2e}", flush=True)
    folder = flight.smartcam_dir(args.smartcam_dir)
    if folder is not None:
        _fly(folder, model, labels, files, root, args.oracle_dir)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
