"""Running SmartCam's own programs: the stb ``resize`` and the TensorFlow Lite 2.5
``image_classifier`` from a user's clone of opssat-smartcam (``home/exp1000/bin/``).

These are the programs that classify on board, so they judge whether a model really
runs there. ``k8`` is their x86-64 build and runs natively; ``armhf`` is the flight
build and runs under qemu-user. The project keeps no copy of them: the user points the
toolkit at a clone with ``--smartcam_dir`` or ``$OPSSAT_SMARTCAM_DIR``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from opssat.core.errors import UnreadableImageError, UserError, first_line
from opssat.onboard import smartcam

#: The confidences mode of SmartCam's own runtime, beside ground and onboard.
MODE = "flight"
#: The environment variable naming the opssat-smartcam clone when no flag does.
ENV_VAR = "OPSSAT_SMARTCAM_DIR"
#: The builds in ``home/exp1000/bin/``: x86-64 (native here) and the flight build.
ARCHES = ("k8", "armhf")
#: Where the builds live inside a clone.
BIN_DIR = Path("home/exp1000/bin")
CLASSIFIER = Path("tensorflow/lite/c/image_classifier")
RESIZER = Path("resizer/resize")
#: qemu-user runs the flight build with the armhf C and C++ runtime of the host.
QEMU = "qemu-arm-static"
QEMU_ROOT = Path("/usr/arm-linux-gnueabihf")
ARMHF_INSTALL = ("apt-get install qemu-user-static; dpkg --add-architecture armhf; "
                 "apt-get update; apt-get install libc6:armhf libstdc++6:armhf")
#: Seconds one program may take (the flight build under qemu takes about 2 s).
TIMEOUT_S = 120


#: printf's spellings of NaN and infinity after a JSON key.
_C_SPECIALS = re.compile(r"(?<=:)(\s*)(-?)(nan|inf(?:inity)?)\b", re.IGNORECASE)


def _json_special(match: re.Match) -> str:
    word = "NaN" if match.group(3).lower() == "nan" else f"{match.group(2)}Infinity"
    return match.group(1) + word


class FlightError(UserError):
    """SmartCam's runtime failed on a model or an image."""


def smartcam_dir(given: str | Path | None) -> Path | None:
    """The clone to use: ``given``, else ``$OPSSAT_SMARTCAM_DIR``, else None."""
    value = given if given not in (None, "") else os.environ.get(ENV_VAR) or None
    return None if value is None else Path(value).expanduser()


def armhf_problem() -> str | None:
    """Why the flight build cannot run here (None when it can)."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed ({ARMHF_INSTALL})"
    loaders = [QEMU_ROOT / "lib/ld-linux-armhf.so.3", Path("/lib/ld-linux-armhf.so.3"),
               Path("/usr/lib/ld-linux-armhf.so.3")]
    if not any(path.exists() for path in loaders):
        return f"the armhf C runtime (libc6:armhf) is not installed ({ARMHF_INSTALL})"
    cxx = [QEMU_ROOT / "lib/libstdc++.so.6", Path("/usr/lib/arm-linux-gnueabihf/libstdc++.so.6"),
           Path("/lib/arm-linux-gnueabihf/libstdc++.so.6")]
    if not any(path.exists() for path in cxx):
        return f"the armhf C++ runtime (libstdc++6:armhf) is not installed ({ARMHF_INSTALL})"
    return None


def solib_name(relative: str) -> str:
    """The Bazel-mangled name a binary looks its library up by:
    ``tensorflow/lite/c/libc_api.so`` -> ``libtensorflow_Slite_Sc_Slibc_Uapi.so``."""
    return "lib" + relative.replace("_", "_U").replace("/", "_S")


class Runtime:
    """One build (``k8`` or ``armhf``) of SmartCam's programs, ready to run."""

    def __init__(self, folder: str | Path, arch: str = "k8") -> None:
        if arch not in ARCHES:
            raise UserError(f"unknown SmartCam build {arch!r}: use one of {', '.join(ARCHES)}")
        folder = Path(folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UserError(f"SmartCam folder {folder} is a file, not a folder: pass "
                            f"--smartcam_dir (or set {ENV_VAR}) to your clone of "
                            "opssat-smartcam")
        if not folder.is_dir():
            raise UserError(f"SmartCam folder {folder} not found: pass --smartcam_dir (or set "
                            f"{ENV_VAR}) to your clone of opssat-smartcam")
        candidates = [folder / BIN_DIR / arch, folder / "bin" / arch, folder / arch]
        found = next((c for c in candidates if (c / CLASSIFIER).is_file()), None)
        if found is None:
            raise UserError(f"no SmartCam {arch} build in {folder}: expected "
                            f"{folder / BIN_DIR / arch / CLASSIFIER} (pass your clone of "
                            "opssat-smartcam)")
        if arch == "armhf" and (problem := armhf_problem()):
            raise UserError(f"SmartCam's armhf build cannot run here: {problem}")
        self.arch = arch
        self.bin_dir = found.resolve()
        self._solib: Path | None = None

    def __repr__(self) -> str:
        return f"Runtime({str(self.bin_dir)!r}, {self.arch!r})"

    @property
    def solib_dir(self) -> Path:
        """A private cache folder of links under the mangled names the binaries use,
        made once per build folder (nothing is written into the clone)."""
        if self._solib is None:
            self._solib = _solib_links(self.bin_dir)
        return self._solib

    def run(self, program: Path, *args: str | Path,
            timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run one program of this build (``CLASSIFIER`` or ``RESIZER``); output as text."""
        binary = self.bin_dir / program
        environment = {**os.environ, "LD_LIBRARY_PATH": str(self.solib_dir)}
        if self.arch == "k8":
            command = [str(binary)]
        else:
            environment.pop("LD_LIBRARY_PATH")
            command = [QEMU, "-L", str(QEMU_ROOT), "-E",
                       f"LD_LIBRARY_PATH={self.solib_dir}", str(binary)]
        try:
            process = subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, errors="replace",
                                       env=environment)
        except OSError as err:
            raise FlightError(f"cannot run SmartCam's {binary}: {first_line(err)}") from err
        with process:
            stdout, stderr = _wait(process, f"SmartCam's {program.name} ({self.arch})",
                                   timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


#: Seconds between two "still running" lines while a program of SmartCam's runs.
STILL_RUNNING_S = 15.0


def _wait(process: subprocess.Popen, what: str, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of ``process``; a line on stderr every STILL_RUNNING_S seconds
    while it runs (a hung binary is not silent for two minutes), killed at ``timeout``."""
    start = time.monotonic()
    while True:
        left = timeout - (time.monotonic() - start)
        try:
            return process.communicate(timeout=max(0.0, min(STILL_RUNNING_S, left)))
        except subprocess.TimeoutExpired:
            waited = time.monotonic() - start
            if waited >= timeout:
                process.kill()
                process.communicate()
                raise FlightError(f"{what} took more than {timeout:.0f} s") from None
            print(f"{what} still running after {waited:.0f} s (stopped at {timeout:.0f} s)",
                  file=sys.stderr, flush=True)


def _solib_links(bin_dir: Path) -> Path:
    libraries = sorted(bin_dir.rglob("*.so"))
    listing = "\n".join([str(bin_dir), *(str(p.relative_to(bin_dir)) for p in libraries)])
    key = hashlib.sha256(listing.encode()).hexdigest()[:16]
    base = Path(os.environ.get("SMARTCAM_SOLIB_CACHE")
                or Path(tempfile.gettempdir()) / f"opssat_smartcam_solib_{os.getuid()}")
    target = base / key
    if (target / ".done").is_file():
        return target
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if base.stat().st_uid != os.getuid():
        raise UserError(f"{base} belongs to another user: set SMARTCAM_SOLIB_CACHE to a "
                        "folder of yours")
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=base))
    for library in libraries:
        relative = library.relative_to(bin_dir).as_posix()
        (staging / solib_name(relative)).symlink_to(library)
    (staging / ".done").touch()
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


#: Private work folders in the temporary folder: ``opssat_flight_<pid>_<random>``.
WORK_PREFIX = "opssat_flight_"


def remove_stale_work(folder: Path | None = None) -> list[Path]:
    """Delete the work folders of this user's processes that no longer run (killed,
    so ``close`` never ran); return them."""
    base = Path(folder or tempfile.gettempdir())
    removed = []
    for work in base.glob(f"{WORK_PREFIX}*_*"):
        pid = work.name[len(WORK_PREFIX):].split("_", 1)[0]
        try:
            if not pid.isdigit() or work.is_symlink() or work.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _running(int(pid)):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


class FlightClassifier:
    """SmartCam's chain for one model: ``resize`` to a grey JPEG at quality 90, then
    ``image_classifier``, as its smartcam.py calls them; the same interface as
    ``infer.Classifier`` (``load`` then ``classify``), so batch labelling takes either.

    ``load`` runs the resizer (it can run in a worker thread while the classifier runs);
    ``classify`` runs the classifier and returns SmartCam's confidences and the
    program's wall time in ms (start, model load and invoke: SmartCam runs it per image).
    """

    def __init__(
        self,
        runtime: Runtime,
        model_file: Path,
        labels: list[str],
        input_size: tuple[int, int] = smartcam.INPUT_SIZE,
        mean: float = smartcam.INPUT_MEAN,
        std: float = smartcam.INPUT_STD,
        channels: int = smartcam.ONBOARD_CHANNELS,
    ) -> None:
        self.runtime = runtime
        self.model_file = Path(model_file).resolve()
        self.labels = list(labels)
        self.input_size = input_size
        self.mean, self.std, self.channels = mean, std, channels
        remove_stale_work()
        self._work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}_"))
        self._labels_file = self._work / "labels.txt"
        self._labels_file.write_text("".join(f"{label}\n" for label in self.labels),
                                     encoding="utf-8")
        self._count = itertools.count(1)

    @property
    def source(self) -> str:
        """Who answers, as the judge's messages name it."""
        return f"SmartCam's {self.runtime.arch} build"

    def close(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> FlightClassifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def load(self, path: Path) -> Path:
        """SmartCam's resized grey JPEG of ``path`` (a file in a private folder)."""
        resized = self._work / f"input_{next(self._count)}.jpeg"  # load runs in threads
        height, width = self.input_size
        proc = self.runtime.run(RESIZER, "-i", Path(path).resolve(), "-x", width, "-y", height,
                                "-c", self.channels, "-q", smartcam.ONBOARD_JPEG_QUALITY,
                                "-o", resized)
        if proc.returncode != 0 or not resized.is_file() or resized.stat().st_size == 0:
            resized.unlink(missing_ok=True)
            reason = first_line(proc.stderr or proc.stdout) or f"exit code {proc.returncode}"
            raise UnreadableImageError(f"{path}: SmartCam's resizer cannot read it ({reason})")
        return resized

    def classify(self, resized: Path) -> tuple[np.ndarray, float]:
        """Run ``image_classifier`` on a resized JPEG from ``load`` (deleted afterwards)."""
        height, width = self.input_size
        start = time.perf_counter()
        try:
            proc = self.runtime.run(CLASSIFIER, resized, self.model_file, self._labels_file,
                                    height, width, f"{self.mean:g}", f"{self.std:g}")
        finally:
            if Path(resized).parent == self._work:
                Path(resized).unlink(missing_ok=True)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return self._parse(proc), elapsed_ms

    def classify_file(self, path: Path) -> tuple[np.ndarray, float]:
        return self.classify(self.load(path))

    def _parse(self, proc: subprocess.CompletedProcess) -> np.ndarray:
        """SmartCam's JSON as probabilities in labels.txt order. A model the runtime
        cannot load makes it print an error and often crash without a non-zero exit,
        so anything but the expected JSON is a failure."""
        try:
            # C's printf writes a NaN or an infinity as nan / inf, which JSON lacks: read
            # them, so that the judge (opssat.judge.agreement) can name them.
            answer = json.loads(_C_SPECIALS.sub(_json_special, proc.stdout))
            values = [float(answer[label]) for label in self.labels]
            if len(answer) != len(self.labels):
                raise KeyError
        except (ValueError, KeyError, TypeError):
            lines = [line.strip() for line in (proc.stderr + "\n" + proc.stdout).splitlines()
                     if line.strip()]
            errors = [line for line in lines if "error" in line.lower()] or lines
            reason = errors[0][:300] if errors else f"exit code {proc.returncode}, no output"
            raise FlightError(f"SmartCam's TFLite 2.5 runtime ({self.runtime.arch}) cannot run "
                              f"{self.model_file.name}: {reason}") from None
        return np.asarray(values, dtype=np.float64)  # 1e308 stays itself, not inf
