#!/usr/bin/env python3
"""Package a trained model for the OPS-SAT SmartCam payload, or only check that
SmartCam can run a .tflite file (--check_only).

Writes repo/<model>/smartcam/<name>/: model.tflite, labels.txt,
config_snippet.ini, README.txt, SHA256SUMS. A model that breaks SmartCam's
contract is refused and nothing is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import opssat  # noqa: F401  (selects tf_keras before TensorFlow loads)
from opssat.core import cli, errors
from opssat.core.paths import ModelPaths, model_paths
from opssat.judge import agreement, contract
from opssat.onboard import flight, smartcam
from opssat.uplink import package


def parse_args() -> argparse.Namespace:
    parser = cli.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="model name, the folder repo/<model>/")
    parser.add_argument("--name", help="package name: the on-board folder "
                        f"{smartcam.ONBOARD_MODELS_DIR}/<name>/ and the config section "
                        "[model_<name>] (default: the model name)")
    parser.add_argument("--model_file", help="the .tflite to package (default: "
                        "repo/<model>/tflite_model.tflite); a bare file name such as "
                        "tflite_model_float16.tflite is looked up in repo/<model>/")
    parser.add_argument("--label_file", help="its labels (default: repo/<model>/labels.txt; "
                        "a bare file name is looked up in repo/<model>/)")
    parser.add_argument("--threshold", type=float, help="confidence_threshold to configure "
                        "(default: suggested from the newest evaluation, else "
                        f"{smartcam.CONFIDENCE_THRESHOLD:.2f})")
    parser.add_argument("--target_accuracy", type=float, default=smartcam.DEFAULT_TARGET_ACCURACY,
                        help="accuracy the kept images must reach for the suggested threshold "
                        "(default: %(default)s)")
    parser.add_argument("--check_only", nargs="?", const="", metavar="FILE",
                        help="only check the SmartCam contract of FILE (any .tflite; labels "
                        "from --label_file, else the model's labels.txt, else labels.txt "
                        "beside FILE), or of the model's .tflite when FILE is left out; "
                        "print the report, exit 0 if SmartCam can run it, 1 if not")
    parser.add_argument("--smartcam_dir", default=None,
                        help="your clone of opssat-smartcam: then the model also runs in "
                        "SmartCam's own TFLite 2.5 binaries on the test images (the bundled "
                        "sample for --check_only FILE alone) and is refused unless its answers "
                        "are probabilities that depend on the image and agree with LiteRT's: "
                        f"the top-1, and every probability within {agreement.BOUND:g} "
                        f"(default: ${flight.ENV_VAR})")
    parser.add_argument("--smartcam_arch", choices=flight.ARCHES, default="k8",
                        help="SmartCam build for that check: k8 (x86-64) or armhf (the "
                        "flight build, under qemu-user) (default: %(default)s)")
    return parser.parse_args()


def smartcam_runtime(args: argparse.Namespace) -> flight.Runtime | None:
    """SmartCam's binaries when the user has them (--smartcam_dir or the variable)."""
    folder = flight.smartcam_dir(args.smartcam_dir)
    return None if folder is None else flight.Runtime(folder, args.smartcam_arch)


def resolve(paths: ModelPaths | None, value: str | None, default: Path | None) -> Path | None:
    """A bare file name is looked up in the model folder; any other path is used as is."""
    if value is None:
        return default
    if paths is not None and "/" not in value:
        return paths.model_dir / value
    return Path(value)


def check_only(args: argparse.Namespace, paths: ModelPaths | None) -> int:
    if args.check_only:
        model_file = Path(args.check_only)
    elif paths is not None:
        model_file = resolve(paths, args.model_file, paths.tflite_model)
    else:
        raise errors.UserError("--check_only needs a .tflite FILE or a model name: "
                               "package_smartcam.py --check_only model.tflite")
    default_labels = paths.labels_file if paths is not None else model_file.parent / "labels.txt"
    label_file = resolve(paths, args.label_file, default_labels)
    report = contract.check_contract(model_file, label_file)
    runtime = smartcam_runtime(args)
    if report.ok and runtime is not None and paths is not None:
        package.check_in_flight(report, paths, runtime)
    elif report.ok and runtime is not None:  # no model, so no test split: the sample
        package.check_files_in_flight(report, runtime, package.sample_files(),
                                      "images of the bundled real sample")
    print(report.format())
    return 0 if report.ok else 1


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir() if args.model else None
    if args.check_only is not None:
        return check_only(args, paths)
    if paths is None:
        raise errors.UserError("no model given: package_smartcam.py <model> "
                               "(or --check_only FILE to only check a .tflite)")
    name = package.package_name(args.name, paths.name)
    model_file = resolve(paths, args.model_file, paths.tflite_model)
    label_file = resolve(paths, args.label_file, paths.labels_file)
    try:
        built = package.build_package(paths, name, model_file, label_file,
                                      args.threshold, args.target_accuracy,
                                      smartcam_runtime(args))
    except contract.ContractError as err:
        print(err.report.format())
        raise
    print(built.report.format())
    advice = built.advice
    for warning in advice.warnings:
        errors.warn(warning)
    print(f"\nconfidence_threshold {advice.threshold:.2f}: {advice.reason}")
    if advice.row is not None:
        print(f"  at {advice.threshold:.2f} the evaluation {package.describe_row(advice.row)}")
    print(f"\npackaged {built.folder}/ (verify: cd {built.folder} && "
          f"sha256sum -c {package.CHECKSUMS_FILE})")
    print("copy to the spacecraft:")
    for here, there in built.copies:
        print(f"  {here} -> {there}")
    print(f"\nconfig snippet ({package.CONFIG_SNIPPET_FILE}) for /home/exp1000/config.ini:")
    print(built.config_text, end="")
    return 0


if __name__ == "__main__":
    cli.run(main)
