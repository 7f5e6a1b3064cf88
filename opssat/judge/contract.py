"""Whether a TFLite file honours SmartCam's contract: a model the payload cannot
run fails in orbit, where nobody can debug it, so it must be refused on the ground.

Every rule becomes a pass/fail line of one report, so the user sees all the
problems at once. The tensor rules are shared with ``infer.Classifier``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from opssat.core.errors import UserError, first_line
from opssat.data.images import to_model_input
from opssat.data.labels import read_labels
from opssat.onboard import smartcam, tflite25
from opssat.onboard.litert import load_interpreter

#: How far the outputs' sum may be from 1 on a sample input. An int8 model with
#: float32 I/O computes its softmax in steps of 1/256 before dequantizing, so its
#: sum is off by a few of those steps; a model without a softmax is off by far more.
SOFTMAX_TOLERANCE = 0.02


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
    input_size: tuple[int, int] = smartcam.INPUT_SIZE,
    mean: float = smartcam.INPUT_MEAN,
    std: float = smartcam.INPUT_STD,
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
        for name in ("ops", "tfl2.5", "input", "output", "softmax"):
            report.add(name, None, "not checked: the file is not a loadable TFLite model")
        return report
    ops_ok = _check_ops(data, report) & _check_runtime(data, report)
    input_ok, output_ok = _check_tensors(interpreter, input_size, report)
    if ops_ok and input_ok and output_ok:
        _check_softmax(interpreter, mean, std, report)
    else:
        report.add("softmax", None, "not run: fix the problems above first")
    return report


def _read_model(model_file: Path, report: ContractReport) -> bytes | None:
    if model_file.is_dir():
        report.add("file", False, f"{model_file} is a folder, not a .tflite file: give an "
                   "exported .tflite file")
        return None
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
    try:
        # Without the default XNNPACK delegate, as SmartCam's plain C API runtime.
        interpreter = load_interpreter(data, num_threads=1, plain_runtime=True, allocate=False)
    except UserError as err:
        reason = first_line(err.__cause__) if err.__cause__ else str(err)
        report.add("file", False, f"LiteRT cannot load it ({reason}): re-export it")
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
    report.labels = labels
    report.add("labels", True, f"{len(labels)} labels: {', '.join(labels)}")


def model_ops(data: bytes) -> list[str]:
    """The operator codes a TFLite flatbuffer uses (all subgraphs), in file order.

    Builtin ops by their builtin name (``CONV_2D``), custom and Flex ops by
    their custom code (``FlexCumprod``). Read from the flatbuffer itself, so
    it works for models the interpreter cannot prepare.
    """
    model = schema.Model.GetRootAs(data, 0)
    ops = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            ops.append(custom.decode("utf-8", "replace") if custom else "CUSTOM")
        else:
            ops.append(tflite25.operator_name(builtin))
    return ops


def _check_ops(data: bytes, report: ContractReport) -> bool:
    try:
        report.ops = model_ops(data)
        builtin_names = set(vars(schema.BuiltinOperator))
    except Exception as err:  # a corrupt flatbuffer can fail anywhere in the parser
        return report.add("ops", False, f"cannot read the operator list ({first_line(err)})")
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


def _check_runtime(data: bytes, report: ContractReport) -> bool:
    """The static TFLite 2.5 check: one failed "tfl2.5" line per problem."""
    try:
        found = tflite25.problems(data)
    except Exception as err:  # a corrupt flatbuffer can fail anywhere in the parser
        return report.add("tfl2.5", False, f"cannot read the model ({first_line(err)})")
    for problem in found:
        report.add("tfl2.5", False, problem)
    if not found:
        report.add("tfl2.5", True, f"every operator version and quantization is one "
                   f"{tflite25.RUNTIME} runs")
    return not found


def tensor_problems(
    interpreter,
    n_labels: int | None,
    label_source: str = "labels.txt",
    input_size: tuple[int, int] | None = None,
    dtype: str | None = None,
) -> tuple[list[str], list[str]]:
    """(input problems, output problems) of a loaded model: one image in, one row of
    ``n_labels`` confidences out; also of ``input_size`` and ``dtype`` when given.

    The one tensor check, shared by the contract (exact size, float32) and the
    classifier (any size, quantized tensors allowed).
    """
    return (_input_problems(interpreter.get_input_details(), input_size, dtype),
            _output_problems(interpreter.get_output_details(), n_labels, label_source, dtype))


def _input_problems(details: list[dict], input_size: tuple[int, int] | None,
                    dtype: str | None) -> list[str]:
    if len(details) != 1:
        return [f"{len(details)} input tensors: SmartCam feeds one image tensor"]
    shape = [int(n) for n in details[0]["shape"]]
    problems = []
    if input_size is not None:
        wanted = [1, *input_size, 3]
        if shape != wanted:
            problems.append(f"shape {_dims(shape)}, but the config feeds {_dims(wanted)}: "
                            f"export at {input_size[0]}x{input_size[1]} RGB")
    elif len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        problems.append(f"shape {_dims(shape)}, but SmartCam feeds 1xheightxwidthx3: "
                        "export the model with that input")
    found = np.dtype(details[0]["dtype"]).name
    if dtype is not None and found != dtype:
        problems.append(f"type {found}, but SmartCam feeds {dtype}: export with "
                        "float32 input/output (quantize weights only)")
    return problems


def _output_problems(details: list[dict], n_labels: int | None, label_source: str,
                     dtype: str | None) -> list[str]:
    if len(details) != 1:
        return [f"{len(details)} output tensors: SmartCam reads one vector of confidences"]
    shape = [int(n) for n in details[0]["shape"]]
    found = np.dtype(details[0]["dtype"]).name
    values = int(np.prod(shape[1:])) if shape else 0
    problems = []
    if dtype is not None and found != dtype:
        problems.append(f"type {found}, but SmartCam reads {dtype}: export with "
                        "float32 input/output (quantize weights only)")
    if not shape or shape[0] != 1:
        problems.append(f"shape {_dims(shape)}: expected one row per image (1xN)")
    elif n_labels and values != n_labels:
        problems.append(f"{values} values per image but {n_labels} labels in "
                        f"{label_source}: use the labels.txt written with this model")
    return problems


def _check_tensors(interpreter, input_size: tuple[int, int],
                   report: ContractReport) -> tuple[bool, bool]:
    inputs, outputs = tensor_problems(interpreter, len(report.labels), str(report.label_file),
                                      input_size, smartcam.TENSOR_DTYPE)
    results = []
    for name, problems, details in (("input", inputs, interpreter.get_input_details()),
                                    ("output", outputs, interpreter.get_output_details())):
        if problems:
            results.append(report.add(name, False, "; ".join(problems)))
        else:
            shape = [int(n) for n in details[0]["shape"]]
            found = np.dtype(details[0]["dtype"]).name
            results.append(report.add(name, True, f"{_dims(shape)} {found}"))
    return results[0], results[1]


def _check_softmax(interpreter, mean: float, std: float, report: ContractReport) -> None:
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
        report.add("softmax", False, f"the model does not run in LiteRT: {first_line(err)}")
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


class ContractError(UserError):
    """A model SmartCam cannot run; the message lists every reason."""

    def __init__(self, report: ContractReport):
        self.report = report
        super().__init__(f"{report.model_file} is refused, SmartCam cannot run it: "
                         f"{'; '.join(report.problems)} (nothing was written)")
