"""The package that ships a checked model to SmartCam (``repo/<model>/smartcam/<name>/``):
the model files, the config.ini snippet, a README and checksums, and the
confidence threshold the snippet sets, suggested from the newest evaluation.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import images, sample
from opssat.data.labels import write_labels
from opssat.judge import infer, metrics
from opssat.judge.confidences import check_threshold, load_confidences
from opssat.judge.contract import ContractError, ContractReport, check_contract
from opssat.judge.metrics import ThresholdRow
from opssat.onboard import flight, tflite25
from opssat.onboard.smartcam import (
    CONFIDENCE_THRESHOLD,
    DEFAULT_TARGET_ACCURACY,
    INPUT_HEIGHT,
    INPUT_MEAN,
    INPUT_SIZE,
    INPUT_STD,
    INPUT_WIDTH,
    LABELS_FILE,
    MODEL_FILE,
    ONBOARD_MODELS_DIR,
    TENSOR_DTYPE,
)

#: The other files of a package, beside MODEL_FILE and LABELS_FILE.
CONFIG_SNIPPET_FILE = "config_snippet.ini"
CHECKSUMS_FILE = "SHA256SUMS"
README_FILE = "README.txt"

#: The package step never suggests a lower threshold: below 0.5 a label can be
#: applied while the model gives the other labels more confidence together.
MIN_SUGGESTED_THRESHOLD = 0.5

#: A package name is a config section suffix, a key prefix and an on-board folder.
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class ThresholdAdvice:
    """The confidence_threshold to configure, and where it came from."""

    threshold: float
    reason: str
    source: Path | None = None
    #: The threshold table's row at ``threshold`` (kept share and accuracy), if any.
    row: ThresholdRow | None = None
    warnings: list[str] = field(default_factory=list)


def evaluation_csv(paths: ModelPaths) -> Path | None:
    """The evaluation to take the threshold from: on-board preprocessing first,
    because that is what the payload feeds the model, else ground; None if none."""
    for mode in ("onboard", "ground"):
        csv_path = paths.confidences_csv(mode)
        if csv_path.is_file():
            return csv_path
    return None


def recommend_threshold(
    paths: ModelPaths,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    labels: list[str] | None = None,
    threshold: float | None = None,
    model_file: Path | None = None,
) -> ThresholdAdvice:
    """The threshold to configure: ``threshold`` when given, else the lowest
    threshold (not below MIN_SUGGESTED_THRESHOLD) whose kept images reach
    ``target_accuracy`` in the newest evaluation, else SmartCam's default."""
    if threshold is not None:
        check_threshold(threshold)
    check_threshold(target_accuracy, "--target_accuracy")
    default = "SmartCam's default"
    csv_path = evaluation_csv(paths)
    conf = load_confidences(csv_path) if csv_path else None
    warnings = []
    if conf is not None and labels is not None and list(conf.labels) != list(labels):
        warnings.append(f"{csv_path} evaluated labels {', '.join(conf.labels)}, not this "
                        f"model's {', '.join(labels)}: ignoring it")
        conf = None
    judged, of_split_model = model_file, False
    all_data_dir = paths.all_data.model_dir.resolve()
    if model_file is not None and all_data_dir in model_file.resolve().parents:
        # The all-data model has no held-out images: the evaluation of its recipe is the
        # test split's, made by the split model.
        judged, of_split_model = paths.tflite_model, True
    if conf is not None and judged is not None and judged.is_file() \
            and csv_path.stat().st_mtime < judged.stat().st_mtime:
        warnings.append(f"{csv_path} is older than {judged}: re-run "
                        "batch_label_images.py for a current evaluation")

    if threshold is not None:
        row = metrics.threshold_table(conf, [threshold])[0] if conf is not None else None
        return ThresholdAdvice(threshold, "given with --threshold", csv_path if row else None,
                               row, warnings)
    if conf is None:
        reason = (f"{default}: no evaluation found ({paths.confidences_csv('onboard').name} or "
                  f"{paths.confidences_csv('ground').name}); run batch_label_images.py "
                  f"{paths.name} for a suggestion")
        if csv_path is not None:
            reason = f"{default}: the evaluation does not match the model"
        return ThresholdAdvice(CONFIDENCE_THRESHOLD, reason, None, None, warnings)

    table = metrics.threshold_table(conf)
    eligible = [row for row in table if row.threshold >= MIN_SUGGESTED_THRESHOLD - 1e-9]
    best = metrics.suggest_threshold(eligible, target_accuracy)
    if best is None:
        row = metrics.threshold_table(conf, [CONFIDENCE_THRESHOLD])[0]
        reason = (f"{default}: no threshold from {MIN_SUGGESTED_THRESHOLD:.2f} up reaches "
                  f"{target_accuracy:.0%} accuracy on the images it keeps in {csv_path}")
        return ThresholdAdvice(CONFIDENCE_THRESHOLD, reason, csv_path, row, warnings)
    reason = (f"suggested from {csv_path}: the lowest threshold from "
              f"{MIN_SUGGESTED_THRESHOLD:.2f} up whose kept images reach "
              f"{target_accuracy:.0%} accuracy")
    if of_split_model:
        reason += (" (the split model's test images, the same recipe: the all-data model "
                   "has none held out)")
    reason += calibration_note(paths.train_record)
    return ThresholdAdvice(round(float(best.threshold), 4), reason, csv_path, best, warnings)


def threshold_text(threshold: float) -> str:
    """The threshold as the snippet writes it: the value the figures were computed at
    (0.755 stays 0.755, 0.999 stays 0.999), never rounded."""
    return f"{threshold:.6g}"


def calibration_note(record_file: Path) -> str:
    """What the suggested threshold reads: calibrated probabilities (the temperature the
    evaluated model has folded in, from its train_record.json) or the model's own."""
    try:  # the key alone: a partial or older record still says its temperature
        temperature = json.loads(record_file.read_text(encoding="utf-8")).get("temperature")
    except (OSError, ValueError, AttributeError):
        return ""
    if not isinstance(temperature, dict):
        return "; it reads the probabilities as trained (recorded before calibration)"
    t = float(temperature.get("T") or 1.0)
    if t == 1.0:
        return ("; it reads the probabilities as trained (no temperature folded in: "
                f"{temperature.get('fitted_on') or 'recorded before calibration'})")
    return (f"; it reads calibrated probabilities (temperature T = {t:.3f}, "
            f"{temperature.get('fitted_on')}, folded into the model)")


def describe_row(row: ThresholdRow | None) -> str:
    """'passes 80.0% of images (40), 97.5% correct' for a threshold table row. SmartCam
    deletes the rest; of those passing, it keeps only the labels in labels_keep and what
    the models after this one keep (rehearse.py shows what it downlinks)."""
    if row is None:
        return ""
    accuracy = "none passes" if row.kept_accuracy is None else (
        f"{row.kept_accuracy:.1%} correct")
    return (f"passes the threshold on {row.kept_share:.1%} of images ({row.kept}), "
            f"{accuracy}; SmartCam deletes the rest")


# --- the package ------------------------------------------------------------------


def check_package_name(name: str) -> str:
    """A package name that is safe as an on-board folder and a config.ini key prefix.

    Stricter than a model name: SmartCam builds ``model_<name>`` sections,
    ``<name>.<key>`` keys and ``label:<name>`` pipeline links from it.
    """
    if not _PACKAGE_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"invalid package name {name!r}: use letters, digits, '_', '-' or '.' "
                        "(SmartCam uses it in config.ini keys and on-board paths)")
    return name


def package_name(given: str | None, model_name: str) -> str:
    """The checked package name: ``given``, else the model's name (the error then says
    how to choose another with ``--name``)."""
    if given is not None:
        return check_package_name(given)
    try:
        return check_package_name(model_name)
    except UserError as err:
        raise UserError(f"{err}; the package name defaults to the model name: pass "
                        "--name <name> to choose one") from err


def onboard_dir(name: str) -> PurePosixPath:
    """Where the payload expects the package's model files."""
    return PurePosixPath(ONBOARD_MODELS_DIR) / name


def config_snippet(
    name: str,
    labels: list[str],
    threshold: float,
    input_size: tuple[int, int] = INPUT_SIZE,
    mean: float = INPUT_MEAN,
    std: float = INPUT_STD,
) -> str:
    """The ``[model_<name>]`` section for SmartCam's config.ini.

    SmartCam's smartcam.py reads each key as ``<name>.<key>`` inside the
    section and parses ``labels_keep`` as JSON; every label is kept.
    """
    check_package_name(name)
    folder = onboard_dir(name)
    values = {
        "tflite_model": str(folder / MODEL_FILE),
        "labels": str(folder / LABELS_FILE),
        "labels_keep": json.dumps(list(labels)),
        "input_height": str(input_size[0]),
        "input_width": str(input_size[1]),
        "input_mean": f"{mean:g}",
        "input_std": f"{std:g}",
        "confidence_threshold": threshold_text(threshold),
    }
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep the name's case; SmartCam's lookup ignores case
    parser[f"model_{name}"] = {f"{name}.{key}": value for key, value in values.items()}
    text = io.StringIO()
    parser.write(text)
    header = (f"# SmartCam model '{name}': paste into /home/exp1000/config.ini, then set\n"
              f"# entry_point_model = {name}, or add \"<label>:{name}\" to another model's "
              "labels_keep.\n")
    return header + text.getvalue().rstrip("\n") + "\n"


def package_threshold(folder: Path) -> float | None:
    """The confidence_threshold a package's config snippet sets, or None."""
    name = folder.name
    parser = configparser.ConfigParser()
    try:
        parser.read(folder / CONFIG_SNIPPET_FILE, encoding="utf-8")
        return parser.getfloat(f"model_{name}", f"{name}.confidence_threshold")
    except (configparser.Error, ValueError):
        return None


def sha256sums(folder: Path, names: list[str]) -> str:
    """``sha256sum`` format (``<hex>  <file>``), verifiable with ``sha256sum -c``."""
    return "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n"
                   for n in names)


@dataclass
class Package:
    """A written package and what went into it."""

    folder: Path
    name: str
    report: ContractReport
    advice: ThresholdAdvice
    config_text: str

    @property
    def copies(self) -> list[tuple[Path, PurePosixPath]]:
        """(file here, where it goes on the spacecraft) for the two model files."""
        return [(self.folder / n, onboard_dir(self.name) / n) for n in (MODEL_FILE, LABELS_FILE)]


def build_package(
    paths: ModelPaths,
    name: str,
    model_file: Path,
    label_file: Path,
    threshold: float | None = None,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    runtime: flight.Runtime | None = None,
) -> Package:
    """Check the model (with ``runtime``, SmartCam's binaries, also in flight on the test
    images), then write ``smartcam/<name>/`` in a staged folder swapped in at the end: a
    refused model or a crash leaves any previous package as it was."""
    check_package_name(name)
    atomic.check_writable(paths.smartcam_dir(name))
    report = check_contract(model_file, label_file)
    if report.ok and runtime is not None:
        check_in_flight(report, paths, runtime)
    if not report.ok:
        raise ContractError(report)
    advice = recommend_threshold(paths, target_accuracy, report.labels, threshold, model_file)
    data = Path(model_file).read_bytes()
    if hashlib.sha256(data).hexdigest() != report.sha256:
        raise UserError(f"{model_file} changed while it was checked: package it again")
    config_text = config_snippet(name, report.labels, advice.threshold)
    target = paths.smartcam_dir(name)
    with atomic.staged_dir(target) as staging:
        staging.chmod(0o755)  # mkdtemp's 0700 would follow the files onto the spacecraft
        (staging / MODEL_FILE).write_bytes(data)
        write_labels(staging / LABELS_FILE, report.labels)
        (staging / CONFIG_SNIPPET_FILE).write_text(config_text, encoding="utf-8")
        (staging / README_FILE).write_text(
            _readme(paths, name, report, advice), encoding="utf-8")
        names = [MODEL_FILE, LABELS_FILE, CONFIG_SNIPPET_FILE, README_FILE]
        (staging / CHECKSUMS_FILE).write_text(sha256sums(staging, names), encoding="utf-8")
        for path in staging.iterdir():
            path.chmod(0o644)
    return Package(target, name, report, advice, config_text)


def check_in_flight(report: ContractReport, paths: ModelPaths,
                    runtime: flight.Runtime) -> None:
    """Add the ``flight`` check to ``report``: the model in SmartCam's own binaries on
    every test image, judged against LiteRT (fed the same on-board input) by
    ``agreement.compare``. A check that cannot run is a failure with its reason."""
    try:
        files = infer.list_test_images(paths.test_dir, report.labels)
    except UserError as err:
        report.add("flight", False, f"cannot run: {err}")
        return
    check_files_in_flight(report, runtime, files, f"test images in {paths.test_dir}")


def sample_files(stride: int = 5) -> list[tuple[str, Path]]:
    """Every ``stride``-th image of the bundled real sample, (folder, file): what the
    flight check runs on when there is no model and so no test split."""
    found = [(folder.name, path) for folder in images.label_folders(sample.REAL_SAMPLE_DIR)
             for path in images.list_files(folder)]
    return found[::stride]


def check_files_in_flight(report: ContractReport, runtime: flight.Runtime,
                          files: list[tuple[str, Path]], what: str) -> None:
    """The ``flight`` check of ``report`` on ``files`` ((folder, file)), named ``what``."""
    name = f"SmartCam's {runtime.arch} build"
    with flight.FlightClassifier(runtime, report.model_file, report.labels) as classifier:
        try:
            result = infer.compare_runtimes(
                classifier, [path for _, path in files],
                [f"{label}/{path.name}" for label, path in files], progress=None)
        except flight.FlightError as err:
            report.add("flight", False, f"{err}: {tflite25.FIX}")
            return
    total = len(result.names)
    if not total:
        first = result.unreadable[0] if result.unreadable else "no images"
        report.add("flight", False, f"cannot run: none of the {len(files)} {what} could be "
                   f"read (first: {first})")
        return
    if result.problem:
        report.add("flight", False, f"in {name}, {result.problem}: {tflite25.FIX}")
        return
    report.add("flight", True, f"{name} gives LiteRT's top-1 on {total}/{total} {what}"
               f", every probability within {result.agreement.bound:g} of LiteRT's (largest "
               f"difference {result.largest_difference:.4f})")


def _readme(paths: ModelPaths, name: str, report: ContractReport,
            advice: ThresholdAdvice) -> str:
    folder = onboard_dir(name)
    kept = describe_row(advice.row)
    lines = [
        f"SmartCam package '{name}' of model '{paths.name}'",
        "",
        f"Model: {report.model_file} ({report.size_bytes:,} bytes, sha256 {report.sha256})",
        f"Contract: input 1x{INPUT_HEIGHT}x{INPUT_WIDTH}x3 {TENSOR_DTYPE}, (pixel - "
        f"{INPUT_MEAN:g}) / {INPUT_STD:g}; output {len(report.labels)} {TENSOR_DTYPE} "
        f"confidences ({', '.join(report.labels)}); builtin ops only. Checked with "
        "package_smartcam.py.",
        f"Runtime: {tflite25.RUNTIME}: every operator version and quantization checked."
        + "".join(f" {c.detail}." for c in report.checks if c.name == "flight" and c.passed),
        "",
        "Copy to the spacecraft (SEPP):",
        f"  {MODEL_FILE:14} -> {folder / MODEL_FILE}",
        f"  {LABELS_FILE:14} -> {folder / LABELS_FILE}",
        "",
        f"Paste {CONFIG_SNIPPET_FILE} into /home/exp1000/config.ini. Run it first with",
        f"entry_point_model = {name}, or after another model by adding \"<label>:{name}\"",
        "to that model's labels_keep. labels_keep lists every label of this model: remove",
        "those whose images should not be kept. Current SmartCam (smartcam.py) reads the",
        f"keys as '{name}.<key>'; the older acquire_and_label_images.py reads them without",
        f"the '{name}.' prefix.",
        "",
        f"confidence_threshold = {threshold_text(advice.threshold)}: {advice.reason}.",
    ]
    if kept:
        lines.append(f"At that threshold the evaluation {kept}.")
    lines += [
        "Below the threshold SmartCam deletes the image on board (only its metadata row",
        "remains). Above it, the image is kept only if its label is in labels_keep (and the",
        "models it is routed to keep it). rehearse.py runs SmartCam's own app to show it.",
        "",
        f"Verify the files: sha256sum -c {CHECKSUMS_FILE} (on board, after copying only the",
        f"model files: sha256sum -c --ignore-missing {CHECKSUMS_FILE}).",
    ]
    return "\n".join(lines) + "\n"
