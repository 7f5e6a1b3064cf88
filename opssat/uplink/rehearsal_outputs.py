"""What a rehearsal's SmartCam run left behind, read back: its downlink (the tar, maybe split
into chunks, in the mock filestore's toGround/), its log and metadata CSV (inside that tar,
or still in logs/ when nothing was tarred), and its toGround/<label>/ folders. Every figure
of the rehearsal comes from here; nothing is recomputed from the model.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opssat.judge import rehearsal_report as rr

#: SmartCam's log format: '%(asctime)s %(levelname)s %(message)s', messages may span lines.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ", re.M)
#: The mock filestore where SmartCam puts the downlink in DEBUG mode.
FILESTORE = Path("mocks/filestore/toGround")
STOP_MESSAGES = ("Exit image acquisition loop", "Exiting: ")


@dataclass
class Downlink:
    """SmartCam's outputs of one run."""

    log: str = ""
    metadata: list[dict[str, str]] = field(default_factory=list)
    #: image name (without extension) -> the toGround/<label> it is in
    toground: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    bytes: int = 0


def _relative(member: str, work: Path) -> str | None:
    prefix = str(work.resolve()).lstrip("/") + "/"
    return member[len(prefix):] if member.startswith(prefix) else None


def _tar_streams(filestore: Path) -> list[bytes]:
    """Each downlinked tar whole: SmartCam splits one into ``<tar>_aa``, ``<tar>_ab``..."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(filestore.iterdir()):
        base = re.sub(r"_[a-z]{2}$", "", path.name)
        groups.setdefault(base, []).append(path)
    return [b"".join(part.read_bytes() for part in parts) for parts in groups.values()]


def _note_toground(downlink: Downlink, relative: str) -> None:
    parts = Path(relative).parts
    if len(parts) >= 3 and parts[0] == "toGround":
        stem = Path(parts[-1]).name.split(".")[0].removesuffix("_thumbnail")
        downlink.toground.setdefault(stem, parts[1])


def _read_member(downlink: Downlink, relative: str, data: bytes) -> None:
    if relative.startswith("logs/") and relative.endswith(".log"):
        downlink.log += data.decode("utf-8", errors="replace")
    elif relative.startswith("logs/") and relative.endswith(".csv"):
        downlink.metadata += list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    else:
        _note_toground(downlink, relative)


def read_downlink(work: Path) -> Downlink:
    """The run's outputs: the tar(s) in the mock filestore, then what stayed in the folder."""
    downlink = Downlink()
    filestore = work / FILESTORE
    downlink.files = sorted(p.name for p in filestore.iterdir())
    downlink.bytes = sum((filestore / name).stat().st_size for name in downlink.files)
    for stream in _tar_streams(filestore):
        with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
            for member in tar.getmembers():
                relative = _relative(member.name, work)
                handle = tar.extractfile(member) if member.isfile() else None
                if relative is not None and handle is not None:
                    _read_member(downlink, relative, handle.read())
    for path in sorted((work / "logs").glob("*")):  # what SmartCam did not tar
        if path.is_file():
            _read_member(downlink, path.relative_to(work).as_posix(), path.read_bytes())
    for path in sorted((work / "toGround").rglob("*")):
        if path.is_file():
            _note_toground(downlink, path.relative_to(work).as_posix())
    return downlink


@dataclass
class ImageLog:
    """One image's passage through SmartCam's chain, as its log tells it."""

    name: str
    models: list[str] = field(default_factory=list)
    answers: dict[str, dict[str, float]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    detail: str = ""
    kept: bool = False
    #: failures of the resizer for this image (SmartCam retries the model input forever)
    retries: int = 0


def _records(log: str) -> list[tuple[str, str]]:
    starts = list(_RECORD.finditer(log))
    ends = [m.start() for m in starts[1:]] + [len(log)]
    return [(m["level"], log[m.end():end].strip()) for m, end in zip(starts, ends, strict=True)]


_EVENTS = [  # (message pattern, what it means for the current image)
    (re.compile(r"Labeling the image using the '(.*)' model\."), "model"),
    (re.compile(r"(?:Model prediction|Classification) results: (.*)", re.S), "answer"),
    (re.compile(r"Labeling the image as '(.*)'\."), "label"),
    (re.compile(r"Insufficient prediction confidence .* set to (.*)\)\.", re.S), "below"),
    (re.compile(r"Skipping the '(.*)' model"), "missing"),
    (re.compile(r"(The image classification program returned error code.*|The executable "
                r"binary returned error code.*|An error was thrown while attempting.*)", re.S),
     "error"),
    (re.compile(r"(Failed to generate .*|Generated .* is an empty file.*)", re.S), "resizer"),
    (re.compile(r"Keeping the image\."), "keep"),
    (re.compile(r"Failed to acquire and classify image\.(.*)", re.S), "crash"),
]


def _apply(image: ImageLog, event: str, value: str) -> None:
    model = image.models[-1] if image.models else ""
    image.retries += event == "resizer"
    if event == "model":
        image.models.append(value)
    elif event == "answer":
        try:
            image.answers[model] = {k: float(v) for k, v in json.loads(value).items()}
        except (ValueError, AttributeError):
            image.reason, image.detail = rr.CLASSIFIER_ERROR, value.splitlines()[0][:300]
    elif event == "label":
        image.labels[model] = value
    elif event == "keep":
        image.kept = True
    elif not image.reason or event in ("missing", "error", "crash"):
        reasons = {"below": rr.BELOW_THRESHOLD, "missing": rr.MISSING_MODEL,
                   "error": rr.CLASSIFIER_ERROR, "resizer": rr.RESIZER_FAILED,
                   "crash": rr.APP_ERROR}
        lines = value.strip().splitlines()
        first = (lines[-1] if event == "crash" else lines[0])[:300] if lines else ""
        detail = {"below": f"{model} threshold {first}", "missing": f"no section [model_{first}]"}
        image.reason, image.detail = reasons[event], detail.get(event, first)


def parse_log(log: str) -> tuple[dict[str, ImageLog], str]:
    """Each image's passage (by name, in the order SmartCam took them) and why the run
    stopped early ('' when it did not)."""
    images: dict[str, ImageLog] = {}
    current, stopped = None, ""
    for _, message in _records(log):
        if message.startswith("Running command to create thumbnail:"):
            found = re.search(r" -i (\S+)", message)
            name = Path(found[1]).name.removesuffix(".png") if found else ""
            current = images.setdefault(name, ImageLog(name))
            continue
        if message.startswith(STOP_MESSAGES):
            stopped = message.splitlines()[0]
        if current is None:
            continue
        for pattern, event in _EVENTS:
            match = pattern.match(message)
            if match:
                _apply(current, event, match[1] if match.groups() else "")
                break
    return images, stopped


def image_row(name: str, true_label: str, image: ImageLog | None,
              meta: dict[str, str] | None, stopped: str) -> dict[str, str]:
    """rehearsal.csv's row of one image."""
    row = dict.fromkeys(rr.COLUMNS, "")
    row.update(file=name, true_label=true_label)
    if image is None:
        row.update(outcome=rr.NOT_REACHED,
                   reason=stopped or "SmartCam's run ended before it took this image")
        return row
    row["chain"] = ">".join(f"{m}:{image.labels.get(m, '')}" for m in image.models)
    row["answers"] = json.dumps(image.answers, sort_keys=True)
    kept = meta["keep"] == "True" if meta else image.kept
    labels = list(image.labels.values())
    row.update(final_label=meta["label"] if meta else (labels[-1] if labels else ""),
               confidence=meta["confidence"] if meta else "",
               outcome=rr.KEPT if kept else rr.DELETED)
    if not kept:
        row.update(reason=image.reason or rr.NOT_KEPT,
                   detail=image.detail or f"labels_keep has no '{row['final_label']}'")
    return row


def build_rows(manifest: dict[str, str], downlink: Downlink) -> tuple[list[dict], str]:
    """A row per image of ``manifest`` (name -> true label), and the early stop, if any."""
    images, stopped = parse_log(downlink.log)
    meta = {row["filename"]: row for row in downlink.metadata}
    rows = [image_row(name, label, images.get(name), meta.get(name), stopped)
            for name, label in manifest.items()]
    return rows, stopped


def summarize(rows: list[dict], downlink: Downlink, stopped: str) -> dict:
    """The totals of rehearsal.csv's summary.json, each from SmartCam's outputs."""
    kept = Counter(r["label"] for r in downlink.metadata if r.get("keep") == "True")
    toground = Counter(downlink.toground.values())
    deleted = Counter(r["reason"] for r in rows if r["outcome"] == rr.DELETED)
    return {
        "images": len(rows),
        "rows": sum(r["outcome"] != rr.NOT_REACHED for r in rows),
        "metadata_rows": len(downlink.metadata),
        "kept_per_label": dict(sorted(kept.items())),
        "toground_per_label": dict(sorted(toground.items())),
        "deleted_per_reason": dict(sorted(deleted.items())),
        "not_reached": [r["file"] for r in rows if r["outcome"] == rr.NOT_REACHED],
        "downlink": {"files": downlink.files, "bytes": downlink.bytes,
                     "chunks": len(downlink.files)},
        "stopped": stopped,
    }
