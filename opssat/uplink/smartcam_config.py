"""SmartCam's ``config.ini`` read as its ``smartcam.py`` reads it, and the checks that catch
what would make it delete images as errors or classify nothing.

SmartCam starts at ``[conf] entry_point_model`` and follows ``<model>.labels_keep`` entries
(``label`` or ``label:next_model``) from one ``[model_<name>]`` section to the next. Section
names are matched exactly (case included); keys are not case-sensitive. Used by
``package_smartcam.py --config`` and by the rehearsal, which also rewrites a config so its
paths point at the packages and at the rehearsal's work folder.
"""

from __future__ import annotations

import configparser
import json
from pathlib import Path

from opssat.core.errors import UserError

SECTION_PREFIX = "model_"
#: The keys smartcam.py's AppConfig reads at start: without one it stops before any image.
APP_KEYS = {
    "conf": ("downlink_log_if_no_images", "entry_point_model", "raw_compression_type",
             "downlink_compressed_split", "downlink_thumbnails", "downlink_compressed_raws",
             "collect_metadata", "tle_path", "quota_toGround", "max_error_count"),
    "camera": ("cam_exposure", "cam_gains"),
    "gen": ("gen_type", "gen_interval_default", "gen_interval_throttle", "gen_number",
            "gen_geojson"),
    "img": ("raw_keep", "png_keep"),
    "jpeg": ("jpeg_scaling", "jpeg_quality"),
    "clustering": ("cluster", "cluster_for_labels", "cluster_k", "cluster_collect_threshold",
                   "cluster_img_types"),
}
#: The keys smartcam.py reads from a model section, by the kind of model (its first key).
MODEL_KEYS = {
    "tflite_model": ("labels", "labels_keep", "input_height", "input_width", "input_mean",
                     "input_std", "confidence_threshold"),
    "bin_model": ("labels", "labels_keep", "input_format", "write_mode", "args",
                  "confidence_threshold"),
}


def read_config(path: Path) -> configparser.ConfigParser:
    """``path`` parsed as SmartCam's ConfigParser would; one-line UserError when it cannot be."""
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as err:
        raise UserError(f"cannot read SmartCam config {path}: {err.strerror or err}") from None
    except (configparser.Error, UnicodeDecodeError) as err:
        detail = str(err).splitlines()[0]
        raise UserError(f"SmartCam config {path} is not a config.ini: {detail}") from None
    return parser


def app_problem(parser: configparser.ConfigParser) -> str | None:
    """The keys SmartCam reads at start that the config lacks, in one line (None if none)."""
    missing = [f"[{name}] {key}" for name, keys in APP_KEYS.items() for key in keys
               if not parser.has_option(name, key)]
    if not missing:
        return None
    shown = ", ".join(missing[:6]) + (", ..." if len(missing) > 6 else "")
    return f"the config lacks {shown}: SmartCam stops at start without them"


def set_value(parser: configparser.ConfigParser, name: str, key: str, value: str) -> None:
    """Set ``key`` as SmartCam's ConfigParser reads it back (``%`` doubled)."""
    parser.set(name, key, value.replace("%", "%%"))


def section(model: str) -> str:
    return f"{SECTION_PREFIX}{model}"


def labels_keep(parser: configparser.ConfigParser, model: str) -> list[str]:
    """``<model>.labels_keep`` parsed as SmartCam parses it (JSON); [] when absent."""
    key = f"{model}.labels_keep"
    if not parser.has_option(section(model), key):
        return []
    text = parser.get(section(model), key)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UserError(f"[{section(model)}] {key} = {text} is not a JSON list of strings: "
                        "SmartCam would stop on it")
    return value


def routes(parser: configparser.ConfigParser, model: str) -> list[tuple[str, str]]:
    """(label, next model) for each ``label:next_model`` entry of ``model``'s labels_keep
    (SmartCam follows the first next model when an entry names several)."""
    pairs = [entry.split(":") for entry in labels_keep(parser, model)]
    return [(parts[0], parts[1]) for parts in pairs if len(parts) >= 2]


def chain(parser: configparser.ConfigParser, entry: str) -> list[str]:
    """Every model SmartCam can reach from ``entry``, in the order first reached."""
    reached, queue = [], [entry]
    while queue:
        model = queue.pop(0)
        if model in reached:
            continue
        reached.append(model)
        if parser.has_section(section(model)):
            queue += [target for _, target in routes(parser, model)]
    return reached


def _missing_section(parser: configparser.ConfigParser, model: str, where: str) -> str:
    near = [name for name in parser.sections() if name.lower() == section(model).lower()]
    hint = f" (there is [{near[0]}]: section names are case-sensitive)" if near else ""
    return (f"{where} names model '{model}' but the config has no section "
            f"[{section(model)}]{hint}: SmartCam deletes those images as errors and stops "
            "after max_error_count of them")


def routing_problems(parser: configparser.ConfigParser, entry: str) -> list[str]:
    """One line per model of the chain from ``entry`` that SmartCam cannot run."""
    problems = []
    if not parser.has_section(section(entry)):
        problems.append(_missing_section(parser, entry, "entry_point_model"))
    for model in chain(parser, entry):
        if not parser.has_section(section(model)):
            continue
        for label, target in routes(parser, model):
            if not parser.has_section(section(target)):
                problems.append(_missing_section(
                    parser, target, f"[{section(model)}] labels_keep entry '{label}:{target}'"))
        problems += _missing_keys(parser, model)
    return problems


def _missing_keys(parser: configparser.ConfigParser, model: str) -> list[str]:
    kind = next((k for k in MODEL_KEYS if parser.has_option(section(model), f"{model}.{k}")),
                None)
    if kind is None:
        return [f"[{section(model)}] has neither {model}.tflite_model nor {model}.bin_model: "
                "SmartCam cannot run it"]
    missing = [f"{model}.{key}" for key in MODEL_KEYS[kind]
               if not parser.has_option(section(model), f"{model}.{key}")]
    if not missing:
        return []
    return [f"[{section(model)}] lacks {', '.join(missing)}: SmartCam fails on every image "
            "that reaches it"]


def thumbnails_problem(parser: configparser.ConfigParser) -> str | None:
    """Why SmartCam would classify nothing: without thumbnails it has no classifier input."""
    try:
        on = parser.getboolean("conf", "downlink_thumbnails")
    except (configparser.Error, ValueError):
        return "[conf] downlink_thumbnails is missing or not yes/no: SmartCam stops on it"
    if on:
        return None
    return ("[conf] downlink_thumbnails = no: SmartCam then makes no thumbnail, and the "
            "thumbnail is the classifier's input, so it classifies nothing and keeps nothing")


def check_config(parser: configparser.ConfigParser, entry: str | None = None) -> None:
    """UserError (one line, the problems joined) when SmartCam would not classify as the
    config intends: a routing name without its section, or thumbnails off."""
    entry = entry or parser.get("conf", "entry_point_model", fallback="")
    problems = [problem for problem in [app_problem(parser)] if problem]
    problems += routing_problems(parser, entry)
    thumbnails = thumbnails_problem(parser)
    if thumbnails:
        problems.append(thumbnails)
    if problems:
        raise UserError("; ".join(problems))


def with_section(parser: configparser.ConfigParser, snippet: str) -> configparser.ConfigParser:
    """``parser`` plus the sections of a package's config snippet that it lacks."""
    extra = configparser.ConfigParser()
    extra.read_string(snippet)
    for name in extra.sections():
        if not parser.has_section(name):
            parser[name] = dict(extra.items(name, raw=True))
    return parser


def check_with_package(path: Path, snippet: str) -> None:
    """Check the user's config at ``path`` with a package's snippet plugged in where the
    config has no section of it yet (``package_smartcam.py --config``)."""
    check_config(with_section(read_config(path), snippet))
