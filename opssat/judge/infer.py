"""Running a TFLite classifier through LiteRT, the interpreter SmartCam uses.

Only ``ai_edge_litert`` is imported (never TensorFlow), so one-image tools start
in a fraction of a second. Quantized input and output tensors are converted with
the tensor's own scale and zero point, so float, float16, dynamic-range and int8
models all read and return the same float32 scale.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from opssat.core import atomic
from opssat.core.errors import UserError, warn
from opssat.core.paths import ModelPaths, check_inside
from opssat.core.progress import bar as progress_bar
from opssat.data import images
from opssat.data.images import GROUND, Preprocessing
from opssat.data.labels import read_labels, validate_labels
from opssat.data.preprocess import PreprocessOptions
from opssat.judge import agreement, confidences
from opssat.judge.confidences import NOT_CLASSIFIED
from opssat.judge.contract import tensor_problems
from opssat.onboard import flight, smartcam, tflite25
from opssat.onboard.litert import load_interpreter


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class Classifier:
    """One LiteRT interpreter (ai_edge_litert.interpreter.Interpreter), its labels and
    the preprocessing of the files it classifies (at the model's input size).

    Built once and reused for every image: loading the model per image is what
    made the original batch labelling slow.
    """

    def __init__(
        self,
        model_file: Path,
        label_file: Path | None = None,
        labels: list[str] | None = None,
        num_threads: int | None = None,
        preprocessing: Preprocessing = GROUND,
    ) -> None:
        model_file = Path(model_file)
        if labels is None:
            if label_file is None:
                raise UserError("no labels given: pass --label_file with the model's labels.txt")
            labels = read_labels(Path(label_file))
            source = str(label_file)
        else:
            source = "the label list"
            labels = validate_labels(list(labels), source)
        self.model_file = model_file
        self.labels: list[str] = labels
        self._interpreter = load_interpreter(model_file, num_threads)
        inputs, outputs = tensor_problems(self._interpreter, len(labels), source)
        if inputs or outputs:
            raise UserError(f"{model_file} is not an image classifier SmartCam can feed: "
                            f"{'; '.join(inputs + outputs)}")
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        shape = tuple(int(x) for x in self._input["shape"])
        self.input_size: tuple[int, int] = (shape[1], shape[2])
        self.preprocessing: Preprocessing = preprocessing.at_size(self.input_size)
        self.input_dtype: np.dtype = np.dtype(self._input["dtype"])
        self.output_dtype: np.dtype = np.dtype(self._output["dtype"])
        self._in_scale, self._in_zero = _quantization(self._input)
        self._out_scale, self._out_zero = _quantization(self._output)
        if self._is_integer(self.input_dtype) and self._in_scale == 0:
            raise UserError(f"{model_file} has an integer input without quantization "
                            "parameters: export it with float32 or quantized input")

    @staticmethod
    def _is_integer(dtype: np.dtype) -> bool:
        return np.issubdtype(dtype, np.integer)

    def _quantize_input(self, model_input: np.ndarray) -> np.ndarray:
        if not self._is_integer(self.input_dtype):
            return model_input.astype(self.input_dtype, copy=False)
        info = np.iinfo(self.input_dtype)
        q = np.rint(model_input / np.float32(self._in_scale)) + self._in_zero
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def _dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if self._is_integer(self.output_dtype) and self._out_scale != 0:
            return ((raw.astype(np.float32) - self._out_zero) * self._out_scale).astype(np.float32)
        return raw.astype(np.float32)

    def classify(self, model_input: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) float32 in SmartCam scaling -> (float32 probabilities, one per label,
        dequantized; invoke time in ms). Quantized input tensors are quantized with the
        tensor's own scale/zero point."""
        expected = (*self.input_size, 3)
        if model_input.shape != expected:
            raise UserError(f"model input has shape {model_input.shape}, {self.model_file} "
                            f"needs {expected}: preprocess with images.load_input")
        self._interpreter.set_tensor(self._input["index"], self._quantize_input(model_input)[None])
        start = time.perf_counter()
        self._interpreter.invoke()
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        raw = self._interpreter.get_tensor(self._output["index"]).reshape(-1)
        return self._dequantize_output(raw), elapsed_ms

    def load(self, path: Path) -> np.ndarray:
        """The model input for ``path`` (safe to call from a worker thread while another
        image is being classified)."""
        return images.load_input(path, self.preprocessing)

    def classify_file(self, path: Path) -> tuple[np.ndarray, float]:
        """images.load_input(...) at the model's input size, then classify."""
        return self.classify(self.load(path))


def predicted_label(
    probabilities: np.ndarray,
    labels: list[str],
    threshold: float = smartcam.CONFIDENCE_THRESHOLD,
) -> str:
    """The top-1 label, or ``NOT_CLASSIFIED`` when its confidence is below ``threshold``
    (what SmartCam does with an image it is unsure about)."""
    best = int(np.argmax(probabilities))
    return labels[best] if probabilities[best] >= threshold else NOT_CLASSIFIED


# --- judging model variants: the one engine ------------------------------------------


@dataclass
class VariantAnswers:
    """Every variant's answers on the same files, per input mode."""

    labels: list[str]
    #: (mode, variant) -> (files, labels) float probabilities
    probabilities: dict[tuple[str, str], np.ndarray]
    #: (mode, variant) -> (files,) invoke time in ms
    times_ms: dict[tuple[str, str], np.ndarray]

    def of(self, mode: str, variant: str) -> np.ndarray:
        return self.probabilities[(mode, variant)]


def judge_variants(model_files: dict[str, Path], labels: Sequence[str], files: Sequence[Path],
                   modes: Sequence[str] = ("onboard",),
                   onboard_channels: int = smartcam.ONBOARD_CHANNELS,
                   runtime: flight.Runtime | None = None) -> VariantAnswers:
    """Each TFLite variant's probabilities for ``files`` under each preprocessing mode:
    every image is decoded once per mode and fed to every variant (mode ``flight``:
    SmartCam's own binaries, ``runtime``, classify it). The trainer, cross-validation
    and the benches all judge variants through this function."""
    classifiers = {name: Classifier(path, labels=list(labels))
                   for name, path in model_files.items()}
    size = next(iter(classifiers.values())).input_size
    shape = (len(files), len(labels))
    keys = [(m, v) for m in modes for v in classifiers]
    answers = VariantAnswers(list(labels), {k: np.zeros(shape, np.float32) for k in keys},
                             {k: np.zeros(len(files)) for k in keys})
    if flight.MODE in modes:
        _fly_variants(answers, model_files, files, size, onboard_channels, runtime)
    for row, path in enumerate(files):
        for mode in (m for m in modes if m != flight.MODE):
            model_input = images.load_input(
                path, PreprocessOptions(mode, onboard_channels).preprocessing(size=size))
            for name, classifier in classifiers.items():
                probs, ms = classifier.classify(model_input)
                answers.probabilities[(mode, name)][row] = probs
                answers.times_ms[(mode, name)][row] = ms
    return answers


def _fly_variants(answers: VariantAnswers, model_files: dict[str, Path], files: Sequence[Path],
                  size: tuple[int, int], channels: int, runtime: flight.Runtime | None) -> None:
    """Mode ``flight`` of ``judge_variants``: SmartCam's binaries classify every file."""
    if runtime is None:
        raise UserError("mode flight runs SmartCam's own binaries: pass --smartcam_dir "
                        f"(or set {flight.ENV_VAR})")
    for name, model_file in model_files.items():
        with flight.FlightClassifier(runtime, model_file, answers.labels, size,
                                     channels=channels) as flown:
            for row, path in enumerate(files):
                probs, ms = flown.classify_file(path)
                answers.probabilities[(flight.MODE, name)][row] = probs
                answers.times_ms[(flight.MODE, name)][row] = ms
        agreement.check(answers.of(flight.MODE, name), answers.labels,
                        [Path(p).name for p in files], f"{flown.source} ({name})")


# --- batch labelling ------------------------------------------------------------


@dataclass
class BatchResult:
    """What one batch_label_images.py run did."""

    images: int
    classified: int
    unclassified: int
    unreadable: list[str]
    seconds: float
    csv_path: Path
    classified_dir: Path
    unclassified_dir: Path

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def list_test_images(test_dir: Path, labels: list[str],
                     skip_labels: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """(expected label, file) for every file under ``test_dir/<label>/``, in label
    then name order, leaving out the folders named in ``skip_labels``; UserError when
    the folder is missing, empty or has unknown labels."""
    if not test_dir.is_dir():
        raise UserError(f"test folder {test_dir} not found: run split_data.py <model> <test_pct> "
                        "first")
    skip = set(skip_labels)
    folders = images.label_folders(test_dir)
    absent = sorted(skip - {f.name for f in folders})
    if absent:
        warn(f"no test folder {', '.join(absent)} in {test_dir} to skip")
    if folders and all(f.name in skip for f in folders):
        raise UserError(f"every test folder in {test_dir} ({', '.join(f.name for f in folders)})"
                        " is among the labels to skip: leave at least one out of the list")
    folders = [f for f in folders if f.name not in skip]
    unknown = [f.name for f in folders if f.name not in labels]
    if unknown:
        raise UserError(f"test folder(s) {', '.join(unknown)} in {test_dir} are not in the "
                        f"model's labels ({', '.join(labels)}): rename them or use the matching "
                        "--label_file")
    stray = images.list_files(test_dir)
    if stray:
        warn(f"{len(stray)} file(s) directly in {test_dir} ignored (first: {stray[0].name}): "
             "put test images in data/test/<label>/")
    files = [(f.name, path) for f in folders for path in images.list_files(f)]
    if not files:
        raise UserError(f"no images in {test_dir}/<label>/: run split_data.py <model> "
                        "<test_pct> first")
    return files


#: Who classifies in batch labelling: LiteRT here, or SmartCam's own binaries
#: (opssat.onboard.flight), whose confidences are the ``flight`` mode.
RUNTIMES = ("litert", "smartcam")


def runtime_classifier(
    runtime: str,
    model_file: Path,
    label_file: Path | None,
    preprocessing: Preprocessing = GROUND,
    num_threads: int | None = None,
    smartcam_dir: str | Path | None = None,
    smartcam_arch: str = "k8",
) -> tuple[Classifier | flight.FlightClassifier, str]:
    """(classifier, confidences mode) for ``runtime``: LiteRT with ``preprocessing``
    (mode ground or onboard), or SmartCam's resizer and image_classifier (mode flight)
    from the clone ``smartcam_dir`` (else $OPSSAT_SMARTCAM_DIR). Close a flight one."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    classifier = Classifier(model_file, label_file, num_threads=num_threads,
                            preprocessing=preprocessing)
    if runtime == "litert":
        return classifier, preprocessing.mode
    folder = flight.smartcam_dir(smartcam_dir)
    if folder is None:
        raise UserError(f"--runtime smartcam needs SmartCam's binaries: pass --smartcam_dir "
                        f"with your clone of opssat-smartcam, or set {flight.ENV_VAR}")
    runtime_build = flight.Runtime(folder, smartcam_arch)
    return flight.FlightClassifier(
        runtime_build, model_file, classifier.labels, classifier.input_size,
        preprocessing.mean, preprocessing.std, preprocessing.onboard_channels), flight.MODE


def _prefetched(loader: Callable[[Path], np.ndarray], paths: Iterable[Path],
                depth: int) -> Iterator[tuple[Path, np.ndarray | Exception]]:
    """Yield (path, model input or its UnreadableImageError), decoding up to ``depth``
    images ahead in worker threads while the caller runs the interpreter; the bounded
    window keeps memory flat whatever the number of images."""
    def safe(path: Path) -> np.ndarray | Exception:
        try:
            return loader(path)
        except images.UnreadableImageError as err:
            return err

    pending: deque[tuple[Path, Future]] = deque()
    iterator = iter(paths)
    with ThreadPoolExecutor(max_workers=max(1, depth // 2)) as pool:
        for path in iterator:
            pending.append((path, pool.submit(safe, path)))
            if len(pending) >= depth:
                break
        while pending:
            path, future = pending.popleft()
            nxt = next(iterator, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(safe, nxt)))
            yield path, future.result()


def _clashing_names(files: list[tuple[str, Path]]) -> set[str]:
    """File names found in more than one label folder: their copies get a
    ``<expected label>_`` prefix so that none overwrites another."""
    counts = Counter(path.name for _, path in files)
    return {name for name, count in counts.items() if count > 1}


def label_test_set(
    paths: ModelPaths,
    model_file: Path | None = None,
    label_file: Path | None = None,
    threshold: float = smartcam.CONFIDENCE_THRESHOLD,
    preprocessing: Preprocessing = GROUND,
    num_threads: int | None = None,
    prefetch: int = 4,
    progress: bool | None = None,
    skip_labels: Iterable[str] = (),
    runtime: str = "litert",
    smartcam_dir: str | Path | None = None,
    smartcam_arch: str = "k8",
) -> BatchResult:
    """Classify every test image with ONE interpreter, streaming, and replace the CSV
    and the classified/unclassified copies of this preprocessing mode all at once
    (``runtime`` smartcam: with SmartCam's binaries, as mode ``flight``).

    Everything is written to staged temporaries first, so an interrupted or failed
    run leaves the previous outputs as they were and two runs never mix.
    """
    confidences.check_threshold(threshold)
    classifier, preprocess = runtime_classifier(
        runtime, model_file or paths.tflite_model, label_file or paths.labels_file,
        preprocessing, num_threads, smartcam_dir, smartcam_arch)
    # What the model saw, for the CSV's sidecar: SmartCam's own chain in flight mode.
    seen = replace(preprocessing.at_size(classifier.input_size),
                   mode=preprocessing.mode if preprocess != flight.MODE else "onboard")
    try:
        return _label_files(paths, classifier, preprocess, threshold, prefetch, progress,
                            skip_labels, seen)
    finally:
        if isinstance(classifier, flight.FlightClassifier):
            classifier.close()


def _classify_judged(classifier: Classifier | flight.FlightClassifier, loaded: np.ndarray | Path,
                     name: str, answers: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """(probabilities, ms) of one image; SmartCam's answer must be a probability vector
    (``agreement.answer_problem``), or nothing is written. Appends it to ``answers``."""
    probabilities, elapsed_ms = classifier.classify(loaded)
    if isinstance(classifier, flight.FlightClassifier):
        problem = agreement.answer_problem(probabilities, classifier.labels, name,
                                           classifier.source)
        if problem:
            raise flight.FlightError(f"{problem}: {tflite25.FIX}")
    answers.append(probabilities)
    return probabilities, elapsed_ms


def _checked_outputs(paths: ModelPaths, preprocess: str, labels: Sequence[str]) -> Path:
    """The confidences CSV of ``preprocess``, once it and its folders are known to be
    inside the model folder and writable."""
    csv_path = paths.confidences_csv(preprocess)
    outputs = [csv_path, confidences.preprocessing_file(csv_path),
               paths.classified_dir(preprocess), paths.unclassified_dir(preprocess)]
    check_inside(paths.model_dir, *outputs, *(paths.classified_dir(preprocess) / label
                                              for label in labels), what="output")
    atomic.check_writable(*outputs)
    return csv_path


def _check_image_dependence(classifier: Classifier | flight.FlightClassifier,
                            answers: list[np.ndarray]) -> None:
    """SmartCam's answers over the whole set must depend on the image
    (``agreement.constant_answers_problem``)."""
    if isinstance(classifier, flight.FlightClassifier) and (problem := agreement.
            constant_answers_problem(np.asarray(answers), classifier.labels, classifier.source)):
        raise flight.FlightError(f"{problem}: {tflite25.FIX}")


def _label_files(paths: ModelPaths, classifier: Classifier | flight.FlightClassifier,
                 preprocess: str, threshold: float, prefetch: int, progress: bool | None,
                 skip_labels: Iterable[str], seen: Preprocessing) -> BatchResult:
    labels = classifier.labels
    files = list_test_images(paths.test_dir, labels, skip_labels)
    clashing = _clashing_names(files)
    csv_path = _checked_outputs(paths, preprocess, labels)
    unreadable: list[str] = []
    answers: list[np.ndarray] = []
    counts = {"classified": 0, "unclassified": 0}
    start = time.perf_counter()
    with (
        atomic.staged_file(csv_path) as staged_csv,
        atomic.staged_dir(paths.classified_dir(preprocess)) as staged_classified,
        atomic.staged_dir(paths.unclassified_dir(preprocess)) as staged_unclassified,
        staged_csv.open("w", newline="", encoding="utf-8") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(confidences.header(labels))
        for label in labels:
            (staged_classified / label).mkdir()
        stream = _prefetched(classifier.load, (path for _, path in files), prefetch)
        for path, loaded in progress_bar(stream, len(files), "classifying", "img", progress):
            if isinstance(loaded, Exception):
                unreadable.append(str(loaded))
                continue
            expected = path.parent.name
            probabilities, elapsed_ms = _classify_judged(classifier, loaded,
                                                         f"{expected}/{path.name}", answers)
            predicted = predicted_label(probabilities, labels, threshold)
            writer.writerow(confidences.row(f"{expected}/{path.name}", elapsed_ms, predicted,
                                            expected, probabilities))
            if predicted == NOT_CLASSIFIED:
                folder, key = staged_unclassified, "unclassified"
            else:
                folder, key = staged_classified / predicted, "classified"
            name = f"{expected}_{path.name}" if path.name in clashing else path.name
            shutil.copy2(path, folder / name)
            counts[key] += 1
        if not counts["classified"] + counts["unclassified"]:
            raise UserError(f"none of the {len(files)} images in {paths.test_dir} could be read "
                            f"(first: {unreadable[0]}): replace them with JPEG/PNG/BMP images")
        _check_image_dependence(classifier, answers)
        handle.flush()
        os.fsync(handle.fileno())
        confidences.write_preprocessing(csv_path, seen)
    seconds = time.perf_counter() - start
    return BatchResult(
        images=counts["classified"] + counts["unclassified"],
        classified=counts["classified"],
        unclassified=counts["unclassified"],
        unreadable=unreadable,
        seconds=seconds,
        csv_path=csv_path,
        classified_dir=paths.classified_dir(preprocess),
        unclassified_dir=paths.unclassified_dir(preprocess),
    )


# --- one image, recorded as the original label_image.py -n did -----------------------


@dataclass
class Recorded:
    """Where one classified image went."""

    predicted: str
    csv_path: Path
    copy: Path


def record_image(
    paths: ModelPaths,
    image: Path,
    expected: str,
    probabilities: np.ndarray,
    elapsed_ms: float,
    labels: list[str],
    threshold: float,
    preprocess: str = "ground",
    seen: Preprocessing | None = None,
) -> Recorded:
    """Copy ``image`` to classified/<label>/ (unclassified/ below ``threshold``) and
    append its row to the confidences CSV, as one batch run would have written it;
    both or neither. ``seen``, the input the model saw, goes to the CSV's sidecar."""
    if expected not in labels:
        raise UserError(f"expected label {expected!r} is not one of the model's labels "
                        f"({', '.join(labels)}): pass one of them with -e/--expected_label")
    images.check_utf8_name(image)
    predicted = predicted_label(probabilities, labels, threshold)
    folder = (paths.unclassified_dir(preprocess) if predicted == NOT_CLASSIFIED
              else paths.classified_dir(preprocess) / predicted)
    copy = folder / image.name
    csv_path = paths.confidences_csv(preprocess)
    check_inside(paths.model_dir, copy, csv_path, what="output")
    atomic.check_writable(folder, csv_path)
    atomic.check_appendable(csv_path)
    # The row is appended while the copy is staged: a failed append (a full disk)
    # leaves no copy, and the rename that follows it does not fail.
    with atomic.staged_file(copy) as staged:
        shutil.copy2(image, staged)
        confidences.append_row(csv_path, labels, confidences.row(
            f"{expected}/{image.name}", elapsed_ms, predicted, expected, probabilities))
    if seen is not None:
        confidences.write_preprocessing(csv_path, seen)
    return Recorded(predicted, csv_path, copy)


# --- SmartCam's runtime against LiteRT ----------------------------------------------


@dataclass
class RuntimeComparison:
    """One model on the same images in LiteRT (on-board preprocessing, the input that
    SmartCam's resizer and decoder produce) and in SmartCam's own runtime, judged by
    ``agreement.compare`` (the one judge: probabilities, image dependence, top-1 and
    the largest probability difference)."""

    labels: list[str]
    names: list[str]
    litert: np.ndarray
    flight: np.ndarray
    flight_ms: list[float]
    #: Why each left-out file could not be read (SmartCam's resizer or the decoder).
    unreadable: list[str] = field(default_factory=list)

    @cached_property
    def agreement(self) -> agreement.Agreement:
        return agreement.compare(self.litert, self.flight, self.labels, self.names)

    @property
    def problem(self) -> str | None:
        """The one line to refuse on, or None when SmartCam agrees with LiteRT."""
        return self.agreement.problem

    @property
    def differing(self) -> list[str]:
        """One line per image on which the runtimes differ (a tie is no difference)."""
        return self.agreement.differing

    @property
    def agreeing(self) -> int:
        return self.agreement.agreeing

    @property
    def largest_difference(self) -> float:
        return self.agreement.largest_difference


def compare_runtimes(
    classifier: flight.FlightClassifier,
    files: list[Path],
    names: list[str] | None = None,
    progress: bool | None = False,
    litert_input: Callable[[Path, Path], np.ndarray] | None = None,
) -> RuntimeComparison:
    """Classify ``files`` with ``classifier`` (SmartCam's programs) and with LiteRT fed
    the toolkit's on-board preprocessing, or ``litert_input(file, SmartCam's resized
    JPEG)`` when given; unreadable files are left out."""
    preprocessing = PreprocessOptions("onboard", classifier.channels).preprocessing(
        size=classifier.input_size, mean=classifier.mean, std=classifier.std)
    litert = Classifier(classifier.model_file, labels=classifier.labels,
                        preprocessing=preprocessing)
    names = [str(path) for path in files] if names is None else names
    kept, litert_rows, flight_rows, times, unreadable = [], [], [], [], []
    pairs = list(zip(names, files, strict=True))
    for name, path in progress_bar(pairs, len(pairs), "SmartCam vs LiteRT", "img", progress):
        try:
            resized = classifier.load(path)
            model_input = litert.load(path) if litert_input is None else \
                litert_input(path, resized)
        except images.UnreadableImageError as err:
            unreadable.append(str(err))
            continue
        probabilities, elapsed_ms = classifier.classify(resized)
        kept.append(name)
        flight_rows.append(probabilities)
        litert_rows.append(litert.classify(model_input)[0])
        times.append(elapsed_ms)
    shape = (len(kept), len(classifier.labels))
    return RuntimeComparison(list(classifier.labels), kept,
                             np.asarray(litert_rows, np.float32).reshape(shape),
                             np.asarray(flight_rows, np.float64).reshape(shape), times,
                             unreadable)
