"""SmartCam's on-board contract: what the OPS-SAT payload feeds a model and
reads back. Every other module takes these values from here.

Also the check that a TFLite file honours that contract and the package that
ships it: a model the payload cannot run fails in orbit, where nobody can
debug it, so it must be refused on the ground.

``images`` imports this module for its constants, so ``images``, ``metrics``
and the LiteRT interpreter are imported inside the functions that need them.
"""

from __future__ import annotations

import configparser
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from opssat import atomic
from opssat.cli import UserError
from opssat.labels import read_labels, write_labels
from opssat.paths import ModelPaths, check_model_name

if TYPE_CHECKING:
    from opssat.metrics import ThresholdRow

#: Model input size (height, width) configured on board.
INPUT_HEIGHT = 224
INPUT_WIDTH = 224
INPUT_SIZE = (INPUT_HEIGHT, INPUT_WIDTH)
#: The payload fills the input with (pixel - INPUT_MEAN) / INPUT_STD, float32.
INPUT_MEAN = 0.0
INPUT_STD = 255.0
#: Below this top-1 confidence SmartCam leaves an image unclassified.
CONFIDENCE_THRESHOLD = 0.70
#: The labels of SmartCam's default model, in labels.txt order.
DEFAULT_LABELS = ("bad", "earth", "edge")
#: The on-board classifier only feeds and reads float32 tensors.
TENSOR_DTYPE = "float32"
#: The on-board resizer's channel count (1: grayscale) and JPEG quality.
ONBOARD_CHANNELS = 1
ONBOARD_JPEG_QUALITY = 90
#: Where the payload keeps a model's files.
ONBOARD_MODELS_DIR = "/home/exp1000/models"

#: The file names SmartCam expects in ``ONBOARD_MODELS_DIR/<name>/``.
MODEL_FILE = "model.tflite"
LABELS_FILE = "labels.txt"
#: The other files of a package (``repo/<model>/smartcam/<name>/``).
CONFIG_SNIPPET_FILE = "config_snippet.ini"
CHECKSUMS_FILE = "SHA256SUMS"
README_FILE = "README.txt"

#: How far the outputs' sum may be from 1 on a sample input. An int8 model with
#: float32 I/O computes its softmax in steps of 1/256 before dequantizing, so its
#: sum is off by a few of those steps; a model without a softmax is off by far more.
SOFTMAX_TOLERANCE = 0.02
#: The package step never suggests a lower threshold: below 0.5 a label can be
#: applied while the model gives the other labels more confidence together.
MIN_SUGGESTED_THRESHOLD = 0.5
DEFAULT_TARGET_ACCURACY = 0.95

#: SmartCam's labels_keep splits "label:next_model" on ':', config.ini
#: interpolates '%', and the classifier prints labels inside JSON strings.
_LABEL_FORBIDDEN = (":", "%", '"', "\\")
#: A package name is a config section suffix, a key prefix and an on-board folder.
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


# --- the contract check ----------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One contract rule: passed (True), failed (False) or not run (None)."""

    name: str
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "skip"}[self.passed]


@dataclass
class ContractReport:
    """Every rule checked on one model file, with what was found."""

    model_file: Path
    label_file: Path | None
    size_bytes: int | None = None
    sha256: str | None = None
    labels: list[str] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def problems(self) -> list[str]:
        """``"<check>: <reason>"`` for each failed check."""
        return [f"{c.name}: {c.detail}" for c in self.checks if c.passed is False]

    def add(self, name: str, passed: bool | None, detail: str) -> bool:
        self.checks.append(Check(name, passed, detail))
        return bool(passed)

    def format(self) -> str:
        """The report as text: one line per check, then the verdict."""
        size = "?" if self.size_bytes is None else f"{self.size_bytes:,} bytes"
        lines = [f"SmartCam contract check of {self.model_file} ({size})"]
        lines += [f"  {c.status:4}  {c.name:8} {c.detail}" for c in self.checks]
        verdict = "OK: SmartCam can run this model" if self.ok else (
            f"REFUSED: {len(self.problems)} problem(s)")
        lines.append(f"  {verdict}")
        return "\n".join(lines)


def check_contract(
    model_file: Path,
    label_file: Path | None,
    input_size: tuple[int, int] = INPUT_SIZE,
    mean: float = INPUT_MEAN,
    std: float = INPUT_STD,
) -> ContractReport:
    """Check ``model_file`` and ``label_file`` against what the payload runs.

    Never raises for a bad model: every problem becomes a failed check, so the
    user sees all of them at once.
    """
    model_file, label_file = Path(model_file), label_file and Path(label_file)
    report = ContractReport(model_file, label_file)
    data = _read_model(model_file, report)
    interpreter = _load_interpreter(data, report) if data is not None else None
    _check_labels(label_file, report)
    if interpreter is None:
        for name in ("ops", "input", "output", "softmax"):
            report.add(name, None, "not checked: the file is not a loadable TFLite model")
        return report
    ops_ok = _check_ops(data, report)
    input_ok = _check_input(interpreter, input_size, report)
    output_ok = _check_output(interpreter, report)
    if ops_ok and input_ok and output_ok:
        _check_softmax(interpreter, mean, std, report)
    else:
        report.add("softmax", None, "not run: fix the problems above first")
    return report


def _read_model(model_file: Path, report: ContractReport) -> bytes | None:
    if not model_file.is_file():
        report.add("file", False, f"{model_file} not found: give an exported .tflite file")
        return None
    data = model_file.read_bytes()
    report.size_bytes = len(data)
    report.sha256 = hashlib.sha256(data).hexdigest()
    if len(data) < 8 or data[4:8] != b"TFL3":
        report.add("file", False, "not a TFLite model (no TFL3 flatbuffer identifier): "
                   "give the .tflite file that training exported")
        return None
    return data


def _load_interpreter(data: bytes, report: ContractReport):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        # Without the default XNNPACK delegate, as SmartCam's plain C API runtime.
        interpreter = Interpreter(
            model_content=data, num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except (ValueError, RuntimeError) as err:
        report.add("file", False, f"LiteRT cannot load it ({_first_line(err)}): re-export it")
        return None
    report.add("file", True, f"TFLite flatbuffer, {len(data):,} bytes")
    return interpreter


def _check_labels(label_file: Path | None, report: ContractReport) -> None:
    if label_file is None:
        report.add("labels", False, "no labels file given: pass the model's labels.txt")
        return
    try:
        labels = read_labels(label_file)
    except UserError as err:
        report.add("labels", False, str(err))
        return
    bad = [label for label in labels if any(ch in label for ch in _LABEL_FORBIDDEN)]
    if bad:
        report.add("labels", False, f"{', '.join(bad)}: SmartCam labels cannot contain "
                   f"{' '.join(_LABEL_FORBIDDEN)}; rename the label folders and retrain")
        return
    report.labels = labels
    report.add("labels", True, f"{len(labels)} labels: {', '.join(labels)}")


def model_ops(data: bytes) -> list[str]:
    """The operator codes a TFLite flatbuffer uses (all subgraphs), in file order.

    Builtin ops by their builtin name (``CONV_2D``), custom and Flex ops by
    their custom code (``FlexCumprod``). Read from the flatbuffer itself, so
    it works for models the interpreter cannot prepare.
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(data, 0)
    ops = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            ops.append(custom.decode("utf-8", "replace") if custom else "CUSTOM")
        else:
            ops.append(names.get(builtin, f"BUILTIN_{builtin}"))
    return ops


def _check_ops(data: bytes, report: ContractReport) -> bool:
    from ai_edge_litert import schema_py_generated as schema

    try:
        report.ops = model_ops(data)
        builtin_names = set(vars(schema.BuiltinOperator))
    except Exception as err:  # a corrupt flatbuffer can fail anywhere in the parser
        return report.add("ops", False, f"cannot read the operator list ({_first_line(err)})")
    flex = [op for op in report.ops if op.startswith("Flex")]
    custom = [op for op in report.ops if op not in builtin_names and op not in flex]
    if flex or custom:
        parts = []
        if flex:
            parts.append(f"TensorFlow (Flex) ops {', '.join(flex)} need the select-ops "
                         "runtime SmartCam lacks")
        if custom:
            parts.append(f"custom ops {', '.join(custom)} are unknown to SmartCam's runtime")
        return report.add("ops", False, "; ".join(parts) +
                          ": re-export with builtin ops only (TFLITE_BUILTINS)")
    return report.add("ops", True, f"builtin only ({', '.join(sorted(set(report.ops)))})")


def _check_input(interpreter, input_size: tuple[int, int], report: ContractReport) -> bool:
    details = interpreter.get_input_details()
    if len(details) != 1:
        return report.add("input", False, f"{len(details)} input tensors: SmartCam feeds one "
                          "image tensor")
    shape = [int(n) for n in details[0]["shape"]]
    dtype = np.dtype(details[0]["dtype"]).name
    wanted = [1, *input_size, 3]
    problems = []
    if shape != wanted:
        problems.append(f"shape {_dims(shape)}, but the config feeds {_dims(wanted)}: "
                        f"export at {input_size[0]}x{input_size[1]} RGB")
    if dtype != TENSOR_DTYPE:
        problems.append(f"type {dtype}, but SmartCam feeds {TENSOR_DTYPE}: export with "
                        "float32 input/output (quantize weights only)")
    if problems:
        return report.add("input", False, "; ".join(problems))
    return report.add("input", True, f"{_dims(shape)} {dtype}")


def _check_output(interpreter, report: ContractReport) -> bool:
    details = interpreter.get_output_details()
    if len(details) != 1:
        return report.add("output", False, f"{len(details)} output tensors: SmartCam reads "
                          "one vector of confidences")
    shape = [int(n) for n in details[0]["shape"]]
    dtype = np.dtype(details[0]["dtype"]).name
    values = int(np.prod(shape[1:])) if shape else 0
    problems = []
    if dtype != TENSOR_DTYPE:
        problems.append(f"type {dtype}, but SmartCam reads {TENSOR_DTYPE}: export with "
                        "float32 input/output (quantize weights only)")
    if not shape or shape[0] != 1:
        problems.append(f"shape {_dims(shape)}: expected one row per image (1xN)")
    elif report.labels and values != len(report.labels):
        problems.append(f"{values} values per image but {len(report.labels)} labels in "
                        f"{report.label_file}: use the labels.txt written with this model")
    if problems:
        return report.add("output", False, "; ".join(problems))
    return report.add("output", True, f"{_dims(shape)} {dtype}")


def _check_softmax(interpreter, mean: float, std: float, report: ContractReport) -> None:
    from opssat.images import to_model_input

    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    height, width = (int(n) for n in inp["shape"][1:3])
    rng = np.random.default_rng(0)
    samples = {
        "noise": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "mid-gray": np.full((height, width, 3), 128, np.uint8),
    }
    sums = []
    try:
        interpreter.allocate_tensors()
        for pixels in samples.values():
            interpreter.set_tensor(inp["index"], to_model_input(pixels, mean, std)[None])
            interpreter.invoke()
            values = interpreter.get_tensor(out["index"]).astype(np.float64).ravel()
            if not np.all(np.isfinite(values)):
                report.add("softmax", False, "non-finite outputs on a sample input")
                return
            sums.append((values.sum(), values.min(), values.max()))
    except (RuntimeError, ValueError) as err:
        report.add("softmax", False, f"the model does not run in LiteRT: {_first_line(err)}")
        return
    text = ", ".join(f"{s:.4f} on {name}" for (s, _, _), name in zip(sums, samples, strict=True))
    bad = any(abs(s - 1) > SOFTMAX_TOLERANCE or lo < -SOFTMAX_TOLERANCE
              or hi > 1 + SOFTMAX_TOLERANCE for s, lo, hi in sums)
    if bad:
        report.add("softmax", False, f"outputs sum to {text}: SmartCam reads probabilities, "
                   "end the model with a softmax")
    else:
        report.add("softmax", True, f"outputs sum to {text}")


def _dims(shape: list[int]) -> str:
    return "x".join(str(n) for n in shape) or "scalar"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- the threshold ----------------------------------------------------------------


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
    from opssat import metrics

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold} is outside 0..1: give a confidence like 0.7")
    if not 0.0 < target_accuracy <= 1.0:
        raise UserError(f"--target_accuracy {target_accuracy} is outside (0, 1]: e.g. 0.95")
    default = "SmartCam's default"
    csv_path = evaluation_csv(paths)
    conf = metrics.load_confidences(csv_path) if csv_path else None
    warnings = []
    if conf is not None and labels is not None and list(conf.labels) != list(labels):
        warnings.append(f"{csv_path} evaluated labels {', '.join(conf.labels)}, not this "
                        f"model's {', '.join(labels)}: ignoring it")
        conf = None
    if conf is not None and model_file is not None and model_file.is_file() \
            and csv_path.stat().st_mtime < model_file.stat().st_mtime:
        warnings.append(f"{csv_path} is older than {model_file}: re-run "
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
    return ThresholdAdvice(round(float(best.threshold), 4), reason, csv_path, best, warnings)


def describe_row(row: ThresholdRow | None) -> str:
    """'keeps 80.0% of images (40), 97.5% correct' for a threshold table row."""
    if row is None:
        return ""
    accuracy = "no image kept" if row.kept_accuracy is None else (
        f"{row.kept_accuracy:.1%} correct")
    return f"keeps {row.kept_share:.1%} of images ({row.kept}), {accuracy}"


# --- the package ------------------------------------------------------------------


def check_package_name(name: str) -> str:
    """A package name that is safe as an on-board folder and a config.ini key prefix.

    Stricter than a model name: SmartCam builds ``model_<name>`` sections,
    ``<name>.<key>`` keys and ``label:<name>`` pipeline links from it.
    """
    check_model_name(name, "package name")
    if not _PACKAGE_NAME.match(name):
        raise UserError(f"invalid package name {name!r}: use letters, digits, '_', '-' or '.' "
                        "(SmartCam uses it in config.ini keys and on-board paths)")
    return name


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
        "confidence_threshold": f"{threshold:.2f}",
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
) -> Package:
    """Check the model, then write ``smartcam/<name>/`` in a staged folder swapped in
    at the end: a refused model or a crash leaves any previous package as it was."""
    check_package_name(name)
    report = check_contract(model_file, label_file)
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


class ContractError(UserError):
    """A model SmartCam cannot run; the message lists every reason."""

    def __init__(self, report: ContractReport):
        self.report = report
        super().__init__(f"{report.model_file} is refused, SmartCam cannot run it: "
                         f"{'; '.join(report.problems)} (nothing was written)")


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
        f"confidence_threshold = {advice.threshold:.2f}: {advice.reason}.",
    ]
    if kept:
        lines.append(f"At that threshold the evaluation {kept}.")
    lines += [
        "SmartCam leaves an image unclassified below the threshold.",
        "",
        f"Verify the files: sha256sum -c {CHECKSUMS_FILE} (on board, after copying only the",
        f"model files: sha256sum -c --ignore-missing {CHECKSUMS_FILE}).",
    ]
    return "\n".join(lines) + "\n"
