"""Flight rehearsal: a user's own clone of opssat-smartcam runs its ``smartcam.py`` (unchanged
on disk, DEBUG mode set in memory by ``rehearsal_runner``) over the user's thumbnails with
the packages of ``package_smartcam.py`` plugged into its config, in a fresh work folder under
``repo/<model>/rehearsal/``; then what SmartCam kept, deleted and downlinked is read back
from its own outputs (``rehearsal_outputs``) into ``rehearsal.csv`` and ``summary.json``.

The mock camera is given each thumbnail as its picture, and the thumbnail SmartCam would
make from a raw picture is that thumbnail: the work folder's ``bin/<arch>/`` holds small
launchers of the clone's programs (with the library folder they need, under qemu for
armhf), and the launcher of the resizer passes the picture through for the thumbnail call
(``-c 3``) only. Everything else is SmartCam's own code and programs.
"""

from __future__ import annotations

import configparser
import csv
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from opssat.core import atomic, progress
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths, model_paths
from opssat.data import images
from opssat.judge import agreement, contract
from opssat.judge import rehearsal_report as rr
from opssat.onboard import flight
from opssat.onboard.smartcam import LABELS_FILE, MODEL_FILE
from opssat.uplink import package, rehearsal_runner, smartcam_config
from opssat.uplink.rehearsal_outputs import build_rows, parse_log, read_downlink, summarize
from opssat.uplink.smartcam_config import set_value

RUNNER = Path(rehearsal_runner.__file__)
SMARTCAM_PY = Path("home/exp1000/smartcam.py")
#: SmartCam's own requirements, pinned in the toolkit's requirements.txt.
PACKAGES = "ephem==3.7.6.0 and shapely==1.8.5.post1"
#: The run's time limit: a start-up allowance plus a budget per image.
START_S = 60.0
PER_IMAGE_S = {"k8": 10.0, "armhf": 60.0}


class RehearsalError(UserError):
    """SmartCam's app could not rehearse these models."""


@dataclass
class PackageRef:
    """One package of ``package_smartcam.py``: ``repo/<model>/smartcam/<name>/``."""

    paths: ModelPaths
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name


def find_package(spec: str) -> PackageRef:
    """``model`` (its package named after it, or its only one) or ``model/package``."""
    model, _, name = spec.partition("/")
    paths = model_paths(model).require_model_dir()
    root = paths.smartcam_root
    found = sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file()) \
        if root.is_dir() else []
    if not name:
        name = model if model in found else (found[0] if len(found) == 1 else "")
    if name not in found:
        choice = f" (packages: {', '.join(found)}; pass {model}/<package>)" if found else ""
        raise UserError(f"no SmartCam package {name or model!r} in {root}{choice}: run "
                        f"package_smartcam.py {model} first")
    return PackageRef(paths, paths.smartcam_dir(name))


@dataclass
class Clone:
    """The user's opssat-smartcam clone and the build it runs."""

    exp_dir: Path
    runtime: flight.Runtime

    @property
    def script(self) -> Path:
        return self.exp_dir / SMARTCAM_PY.name


def find_clone(folder: Path | None, arch: str) -> Clone:
    if folder is None:
        raise UserError(f"no SmartCam clone: pass --smartcam_dir (or set {flight.ENV_VAR}) to "
                        "your clone of opssat-smartcam")
    runtime = flight.Runtime(folder, arch)
    script = folder / SMARTCAM_PY
    if not script.is_file():
        raise UserError(f"no {SMARTCAM_PY} in {folder}: pass your clone of opssat-smartcam")
    missing = [p for p in (flight.RESIZER, flight.CLASSIFIER)
               if not (runtime.bin_dir / p).is_file()]
    if missing:
        raise UserError(f"SmartCam's {arch} build in {runtime.bin_dir} lacks {missing[0]}")
    return Clone(script.parent.resolve(), runtime)


def list_images(folder: Path) -> list[tuple[str, Path]]:
    """(true label or '', file): image files in ``folder`` and in its label subfolders
    (others, such as a MANIFEST.csv, are left out: SmartCam would retry them forever)."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} not found: pass --images FOLDER")
    found = [("", path) for path in images.list_files(folder)]
    found += [(sub.name, path) for sub in images.label_folders(folder)
              for path in images.list_files(sub)]
    found = [(label, path) for label, path in found if images.is_image_name(path)]
    if not found:
        raise UserError(f"no images in {folder} or its label subfolders")
    return found


def mock_names(found: list[tuple[str, Path]]) -> dict[str, tuple[str, Path]]:
    """The mock camera's picture name of each image (its name without ``_thumbnail``,
    made unique and safe for SmartCam's shell commands) -> (true label, file)."""
    names: dict[str, tuple[str, Path]] = {}
    for label, path in found:
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", path.stem).removesuffix("_thumbnail") or "image"
        name, count = stem, 1
        while name in names:
            count += 1
            name = f"{stem}_{count}"
        names[name] = (label, path)
    return names


# --- the config SmartCam reads in the work folder -----------------------------------


def _bin_path(value: str, arch: str) -> str:
    """A program path of the config (``/home/exp1000/bin/armhf/kmeans/...``) in the work
    folder's build (``bin/<arch>/kmeans/...``)."""
    tail = re.sub(r"^.*?bin/[^/]+/", "", value)
    return f"bin/{arch}/{tail}"


def plug_packages(parser: configparser.ConfigParser, packages: list[PackageRef]) -> None:
    """The packages' sections (the user's own when the config has one) pointed at the
    package files; the first package is the entry point."""
    for ref in packages:
        snippet = (ref.folder / package.CONFIG_SNIPPET_FILE).read_text(encoding="utf-8")
        smartcam_config.with_section(parser, snippet)
        section = smartcam_config.section(ref.name)
        set_value(parser, section, f"{ref.name}.tflite_model",
                  str((ref.folder / MODEL_FILE).resolve()))
        set_value(parser, section, f"{ref.name}.labels", str((ref.folder / LABELS_FILE).resolve()))
    set_value(parser, "conf", "entry_point_model", packages[0].name)


def rewrite_for_work(parser: configparser.ConfigParser, clone: Clone, count: int,
                     packages: list[PackageRef]) -> list[str]:
    """Point the config at the work folder and acquire each thumbnail once; the notes say
    what the rehearsal cannot keep as configured."""
    notes = []
    own = {smartcam_config.section(ref.name) for ref in packages}
    for section in parser.sections():
        for key, value in parser.items(section, raw=True):
            if key.endswith(".bin_model"):
                set_value(parser, section, key, _bin_path(value, clone.runtime.arch))
            elif section not in own and key.endswith((".tflite_model", ".labels")):
                relative = value.removeprefix("/home/exp1000/")
                set_value(parser, section, key, str(clone.exp_dir / relative))
    parser["gen"].update(gen_type="poll", gen_number=str(count), gen_interval_default="0",
                         gen_interval_throttle="0")
    if parser.getboolean("conf", "downlink_compressed_raws", fallback=False):
        notes.append("downlink_compressed_raws off: the fapec compressor is not rehearsed")
    parser["conf"].update(downlink_compressed_raws="no", collect_metadata="yes")
    return notes


def config_text(parser: configparser.ConfigParser) -> str:
    text = io.StringIO()
    parser.write(text)
    return text.getvalue()


# --- checks before running ------------------------------------------------------------


def check_packages(packages: list[PackageRef]) -> list[str]:
    """Each package passes the static TFLite 2.5 check (one line each)."""
    lines = []
    for ref in packages:
        report = contract.check_contract(ref.folder / MODEL_FILE, ref.folder / LABELS_FILE)
        if not report.ok:
            raise RehearsalError(f"package {ref.folder} fails SmartCam's contract: "
                                 f"{'; '.join(report.problems)}")
        lines.append(f"package {ref.name}: passes the static TFLite 2.5 check")
    return lines


def check_quota(parser: configparser.ConfigParser, files: list[Path]) -> str:
    """toGround's quota must not stop the run: kept images stay there (png and thumbnail)
    until the end, and SmartCam stops acquiring once ``du`` reaches the quota (KB)."""
    quota = parser.getint("conf", "quota_toGround", fallback=0)
    needed_kb = 2 * sum(path.stat().st_size for path in files) // 1024 + 64 * len(files)
    if quota < needed_kb:
        raise RehearsalError(f"[conf] quota_toGround = {quota} KB can stop the run early: "
                             f"these {len(files)} images may take up to {needed_kb} KB in "
                             "toGround/; raise it to rehearse them all")
    return f"quota_toGround {quota} KB: room for all {len(files)} images"


def check_programs(parser: configparser.ConfigParser, clone: Clone, chain: list[str]) -> str:
    """The programs the chain and the clustering run exist in the clone's build."""
    needed = [flight.RESIZER, flight.CLASSIFIER]
    for model in chain:
        value = parser.get(smartcam_config.section(model), f"{model}.bin_model", fallback=None)
        if value is not None:
            needed.append(Path(_bin_path(value, "x")).relative_to("bin/x"))
    if parser.getboolean("clustering", "cluster", fallback=False):
        needed.append(Path("kmeans/K_Means"))
    for program in needed:
        if not (clone.runtime.bin_dir / program).is_file():
            raise RehearsalError(f"SmartCam's {clone.runtime.arch} build has no {program} "
                                 f"({clone.runtime.bin_dir / program}): the config runs it")
    return f"SmartCam's {clone.runtime.arch} programs found: {', '.join(map(str, needed))}"


def checks_before(parser: configparser.ConfigParser, clone: Clone,
                  packages: list[PackageRef], files: list[Path]) -> list[str]:
    """The one-line checks before running; RehearsalError at the first that fails."""
    entry = packages[0].name
    smartcam_config.check_config(parser, entry)
    chain = smartcam_config.chain(parser, entry)
    unreached = [ref.name for ref in packages if ref.name not in chain]
    if unreached:
        raise RehearsalError(f"package(s) {', '.join(unreached)} not reached from the entry "
                             f"point {entry}: route images to them with a labels_keep entry "
                             "'label:<package>' in your --config")
    lines = [f"chain {' > '.join(chain)}: every model has its section",
             "downlink_thumbnails on"]
    lines += check_packages(packages)
    lines.append(check_quota(parser, files))
    lines.append(check_programs(parser, clone, chain))
    return lines


# --- the work folder and the run ------------------------------------------------------

#: The resizer's launcher: SmartCam's thumbnail call (``-c 3``) gets the mock camera's
#: picture, which is the user's thumbnail, as it is; every other call runs the resizer.
_PASS_THUMBNAIL = """case " $* " in *" -c 3 "*)
  while [ $# -gt 0 ]; do case $1 in -i) src=$2;; -o) dst=$2;; esac; shift; done
  exec cp "$src" "$dst";;
esac
"""


def _launcher(binary: Path, runtime: flight.Runtime) -> str:
    solib = shlex.quote(str(runtime.solib_dir))
    if runtime.arch == "k8":  # SmartCam's process has LD_LIBRARY_PATH (run_smartcam)
        command = f"exec {shlex.quote(str(binary))}"
    else:
        command = (f"exec {flight.QEMU} -L {flight.QEMU_ROOT} -E LD_LIBRARY_PATH={solib} "
                   f"{shlex.quote(str(binary))}")
    thumbnail = _PASS_THUMBNAIL if binary.name == flight.RESIZER.name else ""
    return f"#!/bin/sh\n{thumbnail}{command} \"$@\"\n"


def write_launchers(work_bin: Path, runtime: flight.Runtime) -> None:
    """``work_bin`` mirrors the build's programs: links to them (k8, run natively) or
    launchers under qemu (armhf); the resizer's launcher passes thumbnails through."""
    for binary in sorted(runtime.bin_dir.rglob("*")):
        if not binary.is_file() or ".so" in binary.name or not os.access(binary, os.X_OK):
            continue
        target = work_bin / binary.relative_to(runtime.bin_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if runtime.arch == "k8" and binary.name != flight.RESIZER.name:
            target.symlink_to(binary)  # one process less per call
            continue
        target.write_text(_launcher(binary, runtime), encoding="utf-8")
        target.chmod(0o755)


def make_work(work: Path, clone: Clone, names: dict[str, tuple[str, Path]], config: str) -> None:
    """The folder SmartCam's DEBUG mode runs in, as its README lists it."""
    for sub in ("mocks/pictures", "mocks/filestore/toGround", "logs", "toGround"):
        (work / sub).mkdir(parents=True)
    for name, (_, path) in names.items():
        (work / "mocks/pictures" / f"{name}.png").symlink_to(path.resolve())
    (work / "config.dev.ini").write_text(config, encoding="utf-8")
    if (clone.exp_dir / "aois").is_dir():
        (work / "aois").symlink_to(clone.exp_dir / "aois")
    write_launchers(work / "bin" / clone.runtime.arch, clone.runtime)


def _stuck(console: Path, retries: int = 3) -> bool:
    """SmartCam retries an image whose model input its resizer cannot make without end:
    stop once the current image has failed ``retries`` times."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return False
    current = text[text.rfind("Running command to create thumbnail"):]
    return current.count("ERROR Failed to generate") + current.count(
        "ERROR Generated image input is an empty") >= retries


def _reached(console: Path) -> int:
    try:
        return console.read_text(errors="replace").count("Running command to create thumbnail")
    except OSError:
        return 0


def run_smartcam(work: Path, clone: Clone, count: int, timeout: float | None = None) -> float:
    """Run SmartCam's app in ``work`` (console output in ``work/console.txt``); seconds."""
    timeout = timeout or START_S + PER_IMAGE_S[clone.runtime.arch] * count
    console = work / "console.txt"
    start = time.perf_counter()
    with open(console, "wb") as out:
        environment = dict(os.environ)
        if clone.runtime.arch == "k8":  # the linked programs find their libraries here
            environment["LD_LIBRARY_PATH"] = str(clone.runtime.solib_dir)
        proc = subprocess.Popen([sys.executable, str(RUNNER), str(clone.script),
                                 clone.runtime.arch], cwd=work, stdout=out, env=environment,
                                stderr=subprocess.STDOUT, start_new_session=True)
        with progress.bar(total=count, desc="SmartCam", unit="img") as bar:
            while proc.poll() is None and time.perf_counter() - start < timeout \
                    and not _stuck(console):
                time.sleep(0.05)
                bar.update(max(0, min(count, _reached(console)) - bar.n))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise RehearsalError(_timeout_message(console, timeout, count))
    _check_exit(proc.returncode, console)
    return time.perf_counter() - start


def _timeout_message(console: Path, timeout: float, count: int) -> str:
    """Why SmartCam did not finish, from its log: an image whose model input its resizer
    cannot make is retried without end (on board too); else a program hangs."""
    images, _ = parse_log(console.read_text(errors="replace"))
    last = list(images.values())[-1] if images else None
    if last is not None and last.retries >= 2:
        return (f"SmartCam retries image {last.name} without end: its resizer cannot make "
                f"the model input from it ({last.detail}); on board this stops the run: "
                "remove the image")
    return (f"SmartCam's app did not finish within {timeout:.0f} s (it took "
            f"{_reached(console)} of {count} images): a program of its build hangs or cannot "
            "run")


def _check_exit(code: int, console: Path) -> None:
    text = console.read_text(errors="replace")
    runner = [line for line in text.splitlines() if line.startswith(rehearsal_runner.PREFIX)]
    if code == rehearsal_runner.MISSING_PACKAGE:
        raise RehearsalError(f"{runner[0].removeprefix(rehearsal_runner.PREFIX).strip()} "
                             f"({sys.executable}): install the toolkit's requirements.txt "
                             f"(SmartCam needs {PACKAGES})")
    if code != 0:
        shown = runner or [line for line in text.splitlines() if line.strip()][-1:]
        raise RehearsalError(f"SmartCam's app stopped with exit code {code}: "
                             f"{(shown or ['no output'])[0].strip()[:300]}")


# --- the rehearsal --------------------------------------------------------------------


@dataclass
class Result:
    """A finished rehearsal: where it is, the checks passed, and what SmartCam did."""

    paths: ModelPaths
    checks: list[str]
    report: rr.Rehearsal

    @property
    def rows(self) -> list[dict[str, str]]:
        return self.report.rows

    @property
    def summary(self) -> dict:
        return self.report.summary


def _write(folder: Path, rows: list[dict[str, str]], summary: dict) -> None:
    with open(folder / "rehearsal.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=rr.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


@dataclass
class Plan:
    """Everything settled and checked before SmartCam runs."""

    packages: list[PackageRef]
    clone: Clone
    #: the mock camera's picture name -> (true label, file)
    names: dict[str, tuple[str, Path]]
    config: configparser.ConfigParser
    checks: list[str]


def prepare(specs: list[str], smartcam_dir: Path | None, images_dir: Path | None,
            config: Path | None, arch: str) -> Plan:
    packages = [find_package(spec) for spec in specs]
    clone = find_clone(smartcam_dir, arch)
    names = mock_names(list_images(images_dir or packages[0].paths.test_dir))
    parser = smartcam_config.read_config(config or clone.exp_dir / "config.dev.ini")
    problem = smartcam_config.app_problem(parser)
    if problem:
        raise RehearsalError(problem)
    plug_packages(parser, packages)
    notes = rewrite_for_work(parser, clone, len(names), packages)
    checks = checks_before(parser, clone, packages, [path for _, path in names.values()])
    return Plan(packages, clone, names, parser, checks + notes)


def rehearse(specs: list[str], smartcam_dir: Path | None, images_dir: Path | None = None,
             config: Path | None = None, arch: str = "k8",
             timeout: float | None = None) -> Result:
    """Run SmartCam's app over the images with the packages; write rehearsal.csv and
    summary.json in ``repo/<first model>/rehearsal/`` (a failed run keeps the last one)."""
    plan = prepare(specs, smartcam_dir, images_dir, config, arch)
    paths = plan.packages[0].paths
    atomic.check_writable(paths.rehearsal_dir)
    manifest = {name: label for name, (label, _) in plan.names.items()}
    with atomic.staged_dir(paths.rehearsal_dir) as staging:
        work = staging / "work"
        make_work(work, plan.clone, plan.names, config_text(plan.config))
        seconds = run_smartcam(work, plan.clone, len(plan.names), timeout)
        downlink = read_downlink(work)
        rows, stopped = build_rows(manifest, downlink)
        summary = summarize(rows, downlink, stopped)
        summary.update(arch=arch, smartcam=str(plan.clone.exp_dir), seconds=round(seconds, 3),
                       chain=smartcam_config.chain(plan.config, plan.packages[0].name),
                       checks=plan.checks,
                       files={name: str(path) for name, (_, path) in plan.names.items()})
        _write(staging, rows, summary)
    return Result(paths, plan.checks, rr.Rehearsal(rows, summary))


def failure(rehearsal: Result) -> str | None:
    """Why the rehearsal shows SmartCam failing as a whole (None when it did not)."""
    rows = rehearsal.rows
    errors = [row for row in rows if row["reason"] == rr.CLASSIFIER_ERROR]
    if rows and len(errors) == len(rows):
        return (f"SmartCam's classifier failed on all {len(rows)} images (first: "
                f"{errors[0]['detail']}): on board it deletes every image and downlinks only "
                "its log")
    return entry_answers_problem(rehearsal)


def entry_answers_problem(rehearsal: Result) -> str | None:
    """The entry model's answers, as SmartCam's log gave them, judged by the one judge of
    runtime answers (``agreement.matrix_problem``): probabilities that depend on the image."""
    chain = rehearsal.summary.get("chain") or []
    if not chain:
        return None
    entry = chain[0]
    answered = [(row["file"], json.loads(row["answers"] or "{}").get(entry))
                for row in rehearsal.rows]
    answered = [(name, answer) for name, answer in answered if answer]
    if not answered:
        return None
    labels = list(answered[0][1])
    matrix = [[answer.get(label, float("nan")) for label in labels] for _, answer in answered]
    return agreement.matrix_problem(matrix, labels, [name for name, _ in answered],
                                    f"SmartCam's {entry} model")


def unreached_line(rehearsal: Result) -> str | None:
    missing = rehearsal.summary["not_reached"]
    if not missing:
        return None
    shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    why = rehearsal.summary["stopped"] or "its run ended first"
    return f"SmartCam never reached {len(missing)} image(s) ({shown}): {why}"
