"""The option groups several scripts share, each option declared once (flag, default,
help) with the mechanism of the trainer's options (``opssat.core.flags``), so that
``--threshold`` or ``--smartcam_dir`` says the same in every script and in
docs/scripts.md. Two more shared groups live where their stage needs them:
preprocessing in ``opssat.data.preprocess`` and the recipe by name in
``opssat.train.recipes``.

A script adds the groups it takes with ``flags.add_flags(parser, [ModelFiles, ...])``
and reads them from the parsed namespace under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from opssat.core.flags import option
from opssat.data import split
from opssat.judge import agreement
from opssat.onboard import flight, smartcam


@dataclass
class ModelFiles:
    """model files: the .tflite and its labels"""

    model_file: str | None = option(
        None, ".tflite model (default: repo/<model>/tflite_model.tflite; label_image.py "
        "without -n: ./tflite_model.tflite); package_smartcam.py looks a bare file name, such "
        "as tflite_model_int8.tflite, up in repo/<model>/", aliases=("-m",), metavar="FILE")
    label_file: str | None = option(
        None, "labels, one per line in the model's output order (default: "
        "repo/<model>/labels.txt; label_image.py without -n: ./labels.txt); "
        "package_smartcam.py looks a bare file name up in repo/<model>/", aliases=("-l",),
        metavar="FILE")


@dataclass
class Threshold:
    """threshold: SmartCam's confidence_threshold"""

    threshold: float = option(
        smartcam.CONFIDENCE_THRESHOLD, "below this top-1 confidence an image stays "
        "unclassified, as on SmartCam (and calc_perf.py's 'at threshold' figures)",
        aliases=("-t",))


@dataclass
class Threads:
    """threads"""

    num_threads: int | None = option(
        None, "LiteRT interpreter threads (default: LiteRT's choice)")


@dataclass
class Progress:
    """progress"""

    no_progress: bool = option(False, "hide the progress bar")


@dataclass
class SmartCamRuntime:
    """SmartCam's runtime: its own binaries"""

    smartcam_dir: str | None = option(
        None, "your clone of opssat-smartcam, whose own resizer and TFLite 2.5 "
        "image_classifier run the model (batch_label_images.py --runtime smartcam, "
        "crossval.py --modes flight, rehearse.py, package_smartcam.py's check: refused unless "
        "SmartCam's answers are probabilities that depend on the image and agree with "
        f"LiteRT's, the top-1 and every probability within {agreement.BOUND:g}) "
        f"(default: ${flight.ENV_VAR})", metavar="DIR")
    smartcam_arch: str = option(
        "k8", "SmartCam build: k8 (x86-64, native) or armhf (the flight build, under "
        "qemu-user)", choices=flight.ARCHES, aliases=("--arch",))


@dataclass
class Bursts:
    """bursts: thumbnails taken seconds apart"""

    group_seconds: str = option(
        f"{split.DEFAULT_GROUP_SECONDS:g}", "images taken within this many seconds of each "
        "other are one burst and stay on one side of a split or fold",
        aliases=("--group-seconds",), metavar="SECONDS")


@dataclass
class TopUp:
    """top-up: synthetic images"""

    top_up: list[str] = option(
        [], "N synthetic LABEL images (repeatable, e.g. bad=20; bad ones over-exposed from "
        "real earth and edge frames): make_sample_data.py adds them to data/all (alone, "
        "beside what it holds), crossval.py to every training fold (never held out, made "
        "from that fold's training frames)", metavar="LABEL=N")
