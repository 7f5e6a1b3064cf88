#!/usr/bin/env python3
"""Every TFLite variant of a trained model in SmartCam's own TensorFlow Lite 2.5
binaries, against LiteRT, on real thumbnails (default: the 123 bundled ones).

For each variant (tflite_model.tflite and its _float16/_dynamic/_int8 files) and each
build (k8 natively; armhf under qemu-user when installed): the static TFLite 2.5 check,
top-1 agreement with LiteRT (fed the toolkit's on-board preprocessing, the same input),
the largest probability difference, the file size and the time per image of
SmartCam's image_classifier (process start, model load and one invoke, as SmartCam
runs it), and the verdict of the toolkit's one judge (opssat/judge/agreement.py).
``--tf_default_int8`` adds TensorFlow's own per-channel int8 conversion, which the judge
must refuse. Prints a Markdown table.

  python bench/bench_smartcam.py MODEL --smartcam_dir ../shared/smartcam_runtime
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from opssat.core import cli, errors
from opssat.core.paths import model_paths
from opssat.data import images, sample
from opssat.data.labels import read_labels
from opssat.data.preprocess import PreprocessOptions
from opssat.judge import agreement
from opssat.judge.infer import Classifier, RuntimeComparison, compare_runtimes
from opssat.onboard import flight, smartcam, tflite25
from opssat.train import export

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("--smartcam_dir", help=f"clone of opssat-smartcam (default: "
                        f"${flight.ENV_VAR})")
    parser.add_argument("--images", type=Path, default=sample.REAL_SAMPLE_DIR,
                        help="folder of <label>/ images (default: the bundled real sample)")
    parser.add_argument("--arch", action="append", choices=flight.ARCHES,
                        help="builds to run (repeatable; default: k8, and armhf when qemu "
                        "and the armhf runtime are installed)")
    parser.add_argument("--oracle_dir", type=Path,
                        default=next((d / "shared" / "onboard_oracle" for d in
                                      (PROJECT_ROOT.parent, PROJECT_ROOT.parents[1])
                                      if (d / "shared" / "onboard_oracle").is_dir()),
                                     PROJECT_ROOT.parent / "shared" / "onboard_oracle"),
                        help="the onboard oracle (its uJPEG decoder): also compare with LiteRT "
                        "fed SmartCam's exact input, when present (default: %(default)s)")
    parser.add_argument("--variant", action="append", choices=export.QUANTIZATIONS,
                        help="variants to run (repeatable; default: every one written)")
    parser.add_argument("--tf_default_int8", action="store_true",
                        help="also TensorFlow's own default int8 conversion of the model's "
                        "saved_model/ (dense weights per channel, made outside the toolkit): "
                        "what the judge must refuse")
    parser.add_argument("--armhf_images", type=int, default=None,
                        help="run armhf on every n-th image only (about 2 s per image)")
    return parser.parse_args()


def oracle_decoder(oracle_dir: Path, work: Path, mean: float, std: float):
    """``(file, resized JPEG) -> model input`` decoded by SmartCam's own uJPEG (the
    onboard oracle's ``ujdump``): LiteRT then sees exactly what image_classifier sees,
    so the difference left is the runtime's alone."""
    built = subprocess.run(["sh", str(oracle_dir / "build.sh"), str(work)], check=True,
                           capture_output=True, text=True).stdout.strip()
    ujdump = Path(built) / "ujdump"

    def decode(_: Path, resized: Path) -> np.ndarray:
        raw = work / "input.raw"
        size = subprocess.run([str(ujdump), str(resized), str(raw)], check=True,
                              capture_output=True, text=True).stdout.split()
        width, height = int(size[0]), int(size[1])
        pixels = np.frombuffer(raw.read_bytes(), np.uint8).reshape(height, width, 3)
        return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)

    return decode


def toolkit_input(flown: RuntimeComparison, classifier: flight.FlightClassifier,
                  files: list[Path], names: list[str]) -> RuntimeComparison:
    """SmartCam's answers of ``flown`` against LiteRT fed the toolkit's own on-board
    preprocessing (what batch_label_images.py --preprocess onboard computes)."""
    litert = Classifier(classifier.model_file, labels=classifier.labels,
                        preprocessing=PreprocessOptions("onboard").preprocessing(
                            size=classifier.input_size))
    by_name = dict(zip(names, files, strict=True))
    rows = np.array([litert.classify_file(by_name[name])[0] for name in flown.names],
                    np.float32).reshape(flown.flight.shape)
    return RuntimeComparison(flown.labels, flown.names, rows, flown.flight, flown.flight_ms)


def variants(args: argparse.Namespace, paths, files: list[Path],
             work: Path) -> list[tuple[str, Path]]:
    """(variant, .tflite) to run: the model's exports, and TensorFlow's default int8
    conversion of its saved_model/ when asked."""
    found = [(q, paths.tflite_model if q == "none" else paths.tflite_variant(q))
             for q in args.variant or export.QUANTIZATIONS]
    found = [(q, path) for q, path in found if path.is_file()]
    if args.tf_default_int8:
        found.append(("tf_default_int8", tf_default_int8(paths.saved_model_dir, files, work)))
    return found


def tf_default_int8(saved_model: Path, files: list[Path], work: Path) -> Path:
    """TensorFlow's default int8 conversion, calibrated on ``files`` (on-board input)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    preprocessing = images.Preprocessing(mode="onboard", size=smartcam.INPUT_SIZE)
    converter.representative_dataset = lambda: (
        [images.load_input(path, preprocessing)[None]] for path in files[::4])
    path = work / "tf_default_int8.tflite"
    path.write_bytes(converter.convert())
    return path


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir()
    folder = flight.smartcam_dir(args.smartcam_dir)
    if folder is None:
        raise errors.UserError(f"pass --smartcam_dir or set {flight.ENV_VAR}")
    arches = args.arch or (["k8"] if flight.armhf_problem() else ["k8", "armhf"])
    if "armhf" not in arches and (problem := flight.armhf_problem()):
        print(f"armhf: skipped, {problem}")
    labels = read_labels(paths.labels_file)
    files = [path for label in images.label_folders(args.images)
             for path in images.list_files(label)]
    names = [f"{path.parent.name}/{path.name}" for path in files]
    print(f"{len(files)} images from {args.images}; model {paths.model_dir}\n")
    work = Path(tempfile.mkdtemp(prefix="bench_smartcam_"))
    exact = oracle_decoder(args.oracle_dir, work, smartcam.INPUT_MEAN, smartcam.INPUT_STD) \
        if (args.oracle_dir / "build.sh").is_file() else None
    print("LiteRT is fed the toolkit's --preprocess onboard input; 'exact input': SmartCam's "
          "own resized JPEG decoded by its uJPEG (onboard oracle), so only the runtime differs"
          + ("" if exact else f" (not measured: no {args.oracle_dir})") + "\n")
    print("| variant | build | TFLite 2.5 check | top-1 = LiteRT | largest prob. diff | "
          "top-1 = LiteRT, exact input | largest prob. diff, exact input | size (bytes) | "
          f"image_classifier per image (ms, k8) | the judge (bound {agreement.BOUND:g}) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for quantization, model_file in variants(args, paths, files, work):
        static = tflite25.problems(model_file.read_bytes())
        check = "pass" if not static else f"REFUSED: {static[0]}"
        for arch in arches:
            step = args.armhf_images if arch == "armhf" and args.armhf_images else 1
            with flight.FlightClassifier(flight.Runtime(folder, arch), model_file,
                                         labels) as classifier:
                try:
                    pure = compare_runtimes(classifier, files[::step], names[::step],
                                            progress=None, litert_input=exact)
                    # Without the oracle, compare_runtimes already fed LiteRT the
                    # toolkit's on-board input: no second LiteRT pass.
                    result = pure if exact is None else \
                        toolkit_input(pure, classifier, files[::step], names[::step])
                except flight.FlightError as err:
                    print(f"| {quantization} | {arch} | {check} | fails: {err} | | | | "
                          f"{model_file.stat().st_size:,} | | refused |")
                    continue
            timing = f"{np.median(result.flight_ms):.0f}" if arch == "k8" else ""
            exact_cells = (f"{pure.agreeing}/{len(pure.names)} | {pure.largest_difference:.4f}"
                           if exact else " | ")
            print(f"| {quantization} | {arch} | {check} | {result.agreeing}/{len(result.names)}"
                  f" | {result.largest_difference:.4f} | {exact_cells} | "
                  f"{model_file.stat().st_size:,} | {timing} | "
                  f"{'agree' if result.problem is None else 'refused'} |", flush=True)
            for line in [result.problem] if result.agreement.answers_problem else \
                    result.differing + (pure.differing if exact else []):
                print(f"|   | | | differs: {line} | | | | | | |")
    return 0


if __name__ == "__main__":
    cli.run(main)
