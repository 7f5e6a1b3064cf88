"""Moving images between ``data/all/<label>/`` folders, and from ``data/unlabelled/``
into them, journaled so that any batch can be undone byte for byte.

Safety rules, in order:
- every row of the reviewed CSV is checked before anything moves (all or nothing);
- a move is one ``os.rename`` inside data/ (data/all, or data/unlabelled -> data/all;
  the journal names an unlabelled file ``../unlabelled/<file>``), so a file is never in two folders
  nor in none, whenever the run stops; nothing is ever overwritten;
- the whole batch is written to the journal as ``planned`` (and fsynced) before
  the first rename, and each rename is followed by its ``moved`` row; Ctrl-C is
  held back between a rename and its row. After a crash between the two, the
  files themselves (found by name and sha256) tell where each one is, so
  ``--undo`` and a re-run of the same CSV both work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from opssat.core import atomic
from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths, check_inside, outside_root
from opssat.data import images, labels, split

REVIEWED_COLUMNS = ("filename", "new_label")
JOURNAL_COLUMNS = ("time", "batch", "status", "file", "sha256", "from", "to")
#: Journal row statuses: a batch's moves, an undo's moves, and the undo's end.
PLANNED, MOVED = "planned", "moved"
UNDO_PLANNED, UNDONE, REVERTED = "undo-planned", "undone", "reverted"
_STATUSES = {PLANNED, MOVED, UNDO_PLANNED, UNDONE, REVERTED}


@dataclass(frozen=True)
class Move:
    """One file to move; ``source``/``target`` are absolute, the journal keeps
    them relative to data/all (``<label>/<file>``)."""

    source: Path
    target: Path
    sha256: str

    def relative(self, all_dir: Path) -> tuple[str, str]:
        """Both paths relative to data/all: ``<label>/<file>``, or ``../unlabelled/<file>``
        for a file that comes from (or goes back to) data/unlabelled."""
        return (Path(os.path.relpath(self.source, all_dir)).as_posix(),
                Path(os.path.relpath(self.target, all_dir)).as_posix())


@dataclass
class Plan:
    moves: list[Move]
    unchanged: list[str]  # rows whose file is already in its new label
    #: The interrupted batch these moves finish (a re-run of its CSV), else None.
    resumes: str | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def known_labels(paths: ModelPaths) -> list[str]:
    """The folders of data/all and the model's labels.txt, when there is one."""
    found = set()
    if paths.all_dir.is_dir():
        found = {f.name for f in images.label_folders(paths.all_dir)}
    if paths.labels_file.is_file():
        found |= set(labels.read_labels(paths.labels_file))
    return sorted(found)


def outside_data(paths: ModelPaths, *targets: Path, what: str) -> str | None:
    """Why the first target is neither inside data/all nor directly in data/unlabelled
    (symlinks resolved), or None: the only places relabel moves files between."""
    for target in targets:
        if _in_unlabelled(target, paths.unlabelled_dir) is None and \
                (problem := outside_root(paths.all_dir, target, what=what)):
            return problem
    return None


def _fail(problems: list[str]) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; nothing moved")


def _decode(csv_path: Path) -> str:
    try:
        data = csv_path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {csv_path}: {err.strerror}") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{csv_path} is not UTF-8 (byte 0x{data[err.start]:02x} at offset "
                        f"{err.start}): save it as UTF-8; nothing moved") from err


def _in_unlabelled(candidate: Path, unlabelled_dir: Path) -> Path | None:
    """``candidate`` as ``data/unlabelled/<file>`` when it resolves to a name directly
    in that folder (symlinks resolved), else None."""
    if outside_root(unlabelled_dir.parent, unlabelled_dir):
        return None  # data/unlabelled is a symlink out of data/
    try:
        inside = candidate.resolve().relative_to(unlabelled_dir.resolve())
    except ValueError:
        return None
    return unlabelled_dir / inside if len(inside.parts) == 1 else None


def _locate(name: str, all_dir: Path, label_names: list[str],
            unlabelled_dir: Path | None = None) -> Path | str:
    """The file a reviewed row names (``<label>/<file>``, ``../unlabelled/<file>``, a
    bare file name, or a path inside data/all or data/unlabelled), or a description of
    the problem."""
    given = Path(name)
    if given.is_absolute() or "/" in name or "\\" in name:
        candidate = given if given.is_absolute() else all_dir / given
        found = None if unlabelled_dir is None else _in_unlabelled(candidate, unlabelled_dir)
        if found is not None:
            return found if found.is_file() else f"{name} not found in {unlabelled_dir}"
        try:
            inside = candidate.resolve().relative_to(all_dir.resolve())
        except ValueError:
            return f"{name} is outside {all_dir}"
        if len(inside.parts) != 2:
            return f"{name} is not in a {all_dir}/<label>/ folder"
        candidate = all_dir / inside
        return candidate if candidate.is_file() else f"{name} not found in {all_dir}"
    if name in ("", ".", ".."):
        return "empty filename"
    matches = [all_dir / label / name for label in label_names
               if (all_dir / label / name).is_file()]
    if unlabelled_dir is not None and (unlabelled_dir / name).is_file():
        matches.append(unlabelled_dir / name)
    if not matches:
        return f"{name} not found in {all_dir}/<label>/"
    if len(matches) > 1:
        return (f"{name} is in several folders "
                f"({', '.join(p.parent.name for p in matches)}): write it as <label>/{name}"
                f" or ../unlabelled/{name}")
    return matches[0]


def read_reviewed(paths: ModelPaths, csv_path: Path) -> Plan:
    """Check every row of a reviewed CSV (``filename,new_label``) and plan the moves;
    UserError on the first problem, before anything moves."""
    rows, name_col, label_col = _reviewed_rows(paths, csv_path)
    planner = _Planner.of(paths)
    problems: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{csv_path.name} line {line}"
        if len(row) <= max(name_col, label_col):
            problems.append(f"{where}: {len(row)} field(s), the header has {len(rows[0])}")
        elif problem := planner.add(line, row[name_col].strip(), row[label_col].strip()):
            problems.append(f"{where}: {problem}")
    _fail(problems)
    planned = [Move(m.source, m.target, sha256_file(m.source)) for m in planner.moves]
    return Plan(planned, planner.unchanged, _resumed_batch(paths, planned))


def _reviewed_rows(paths: ModelPaths, csv_path: Path) -> tuple[list[list[str]], int, int]:
    """A reviewed CSV's rows (header first) and the columns of filename and new_label."""
    if not csv_path.is_file():
        raise UserError(f"reviewed CSV {csv_path} not found")
    if not paths.all_dir.is_dir():
        raise UserError(f"{paths.all_dir} does not exist: run ./create_dirs.sh {paths.name}")
    rows = list(csv.reader(io.StringIO(_decode(csv_path), newline="")))
    if not rows:
        raise UserError(f"{csv_path} is empty: write a header filename,new_label and one row "
                        "per image; nothing moved")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REVIEWED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{csv_path} lacks the column(s) {', '.join(missing)} (header: "
                        f"{','.join(header)}): the header must name filename,new_label; "
                        "nothing moved")
    return rows, header.index("filename"), header.index("new_label")


@dataclass
class _Planner:
    """The moves of a reviewed CSV, each row checked against data/all and the rows
    before it."""

    paths: ModelPaths
    allowed: list[str]  # the labels a row may name
    folders: list[str]  # data/all's label folders
    #: Where earlier batches moved files: a re-run of an interrupted batch's CSV
    #: names files that are already in their new folder.
    journaled: dict[str, str]
    moves: list[Move] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    seen_source: dict[Path, int] = field(default_factory=dict)  # file -> its line
    seen_target: dict[Path, int] = field(default_factory=dict)

    @classmethod
    def of(cls, paths: ModelPaths) -> _Planner:
        folders = [f.name for f in images.label_folders(paths.all_dir)]
        if not folders:
            raise UserError(f"{paths.all_dir} has no label folders: nothing to relabel; "
                            "nothing moved")
        journaled = {e["from"]: e["to"] for e in read_journal(paths.relabel_log)
                     if e["status"] == PLANNED}
        return cls(paths, known_labels(paths), folders, journaled)

    @property
    def all_dir(self) -> Path:
        return self.paths.all_dir

    def add(self, line: int, name: str, new_label: str) -> str | None:
        """Plan one row: None, or what is wrong with it."""
        if problem := labels.label_problem(new_label):
            return f"new label {new_label!r} {problem}"
        if new_label not in self.allowed:
            return f"unknown label {new_label!r} (labels: {', '.join(self.allowed)})"
        found = self._source(name, new_label)
        if isinstance(found, str):
            return found
        if found in self.seen_source:
            return f"{name} is listed twice (lines {self.seen_source[found]} and {line})"
        self.seen_source[found] = line
        if found.parent == self.all_dir / new_label:
            self.unchanged.append(name)
            return None
        target = self.all_dir / new_label / found.name
        if target.exists():
            return (f"{target} already exists: rename one of the two files (relabel never "
                    "overwrites)")
        if target in self.seen_target:
            return (f"{found.name} would land on the same name in {new_label} as line "
                    f"{self.seen_target[target]}")
        if problem := outside_data(self.paths, found, target, what="relabel path"):
            return problem
        self.seen_target[target] = line
        self.moves.append(Move(found, target, ""))
        return None

    def _source(self, name: str, new_label: str) -> Path | str:
        """The file a row names, or where an interrupted batch already moved it to
        ``new_label``; else the problem."""
        found = _locate(name, self.all_dir, self.folders, self.paths.unlabelled_dir)
        moved_to = self.journaled.get(name)
        if (isinstance(found, str) and moved_to is not None
                and Path(moved_to).parent.name == new_label
                and (self.all_dir / moved_to).is_file()):
            return self.all_dir / moved_to
        return found


def _resumed_batch(paths: ModelPaths, moves: list[Move]) -> str | None:
    """The last batch when it was interrupted and ``moves`` are among its unfinished
    moves: a re-run of its CSV finishes that batch, so one --undo reverts it all."""
    entries = read_journal(paths.relabel_log)
    batch = last_batch(entries)
    if batch is None or not moves:
        return None
    mine = [e for e in entries if e["batch"] == batch]
    if any(e["status"] != PLANNED and e["status"] != MOVED for e in mine):
        return None  # an undo of it started
    open_moves = ({(e["from"], e["to"]) for e in mine if e["status"] == PLANNED}
                  - {(e["from"], e["to"]) for e in mine if e["status"] == MOVED})
    wanted = {m.relative(paths.all_dir) for m in moves}
    return batch if wanted <= open_moves else None


# --- the journal -----------------------------------------------------------------


def read_journal(path: Path) -> list[dict[str, str]]:
    """The journal's rows; a torn last line (a crash while writing it) is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read the relabel journal {path}: {err}") from err
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows:
        return []
    if tuple(rows[0]) != JOURNAL_COLUMNS:
        raise UserError(f"{path} is not a relabel journal (header {','.join(rows[0])}): "
                        "move it away")
    entries = []
    complete = text.endswith("\n")
    for number, row in enumerate(rows[1:], start=2):
        last = number == len(rows)
        if len(row) != len(JOURNAL_COLUMNS) or row[2] not in _STATUSES:
            if last and not complete:
                break
            raise UserError(f"{path} line {number} is damaged: fix or move the journal away")
        entries.append(dict(zip(JOURNAL_COLUMNS, row, strict=True)))
    return entries


class Journal:
    """Appends rows to data/relabel_log.csv, each write flushed to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, rows: list[tuple[str, ...]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_line()
        new = not self.path.exists() or self.path.stat().st_size == 0
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if new:
            writer.writerow(JOURNAL_COLUMNS)
        writer.writerows(rows)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            atomic.append_whole(fd, buffer.getvalue().encode("utf-8"))
        except OSError:
            if new:
                self.path.unlink(missing_ok=True)  # leave no empty journal behind
            raise
        finally:
            os.close(fd)

    def _drop_torn_line(self) -> None:
        """Cut a last line left half-written by a crash, so rows stay whole."""
        try:
            handle = self.path.open("r+b")
        except FileNotFoundError:
            return
        with handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.truncate(atomic.last_line(handle, size)[0])


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_batch_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) until the block ends, so a rename and its journal
    row happen together; a signal that came meanwhile is raised again right after.

    A handler rather than a signal mask: a process-directed signal goes to any
    thread that does not block it, so masking the main thread alone is not enough.
    """
    received: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot reach this code anyway
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def _rename(source: Path, target: Path) -> None:
    """One atomic rename that never overwrites (checked right before)."""
    if target.exists():
        raise FileExistsError(f"{target} appeared meanwhile")
    target.parent.mkdir(exist_ok=True)
    os.rename(source, target)


def _fsync_dirs(folders: set[Path]) -> None:
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Interrupted(UserError):
    """A batch stopped part-way; the message says how far and what to do."""


def _run_moves(paths: ModelPaths, batch: str, moves: list[Move], before: str, after: str,
               what_next: str, journaled: bool = False) -> None:
    """Journal ``moves`` as ``before`` (unless already ``journaled``), then rename each
    and journal it as ``after``."""
    check_inside(paths.model_dir, paths.relabel_log, what="relabel journal")
    touched = {p for m in moves for p in (m.source, m.target)}
    if problem := outside_data(paths, *touched, what="relabel path"):
        raise UserError(f"{problem}; nothing was changed")
    atomic.check_writable(paths.relabel_log, *touched)
    atomic.check_appendable(paths.relabel_log)
    journal = Journal(paths.relabel_log)
    rel = [m.relative(paths.all_dir) for m in moves]
    if not journaled:
        journal.append([(_now(), batch, before, m.target.name, m.sha256, a, b)
                        for m, (a, b) in zip(moves, rel, strict=True)])
    done = 0
    try:
        for move, (a, b) in zip(moves, rel, strict=True):
            with _signals_held():
                _rename(move.source, move.target)
                done += 1
                journal.append([(_now(), batch, after, move.target.name, move.sha256, a, b)])
    except (KeyboardInterrupt, OSError) as err:
        why = "interrupted" if isinstance(err, KeyboardInterrupt) else f"stopped ({err})"
        raise Interrupted(
            f"{why} after {done} of {len(moves)} move(s) of batch {batch}: every file is in "
            f"one label folder and {paths.relabel_log} lists the batch; {what_next}") from err
    finally:
        _fsync_dirs({m.source.parent for m in moves} | {m.target.parent for m in moves})


def relabel(paths: ModelPaths, plan: Plan, batch: str | None = None) -> str:
    """Move the planned files as one journaled batch (the interrupted one it resumes,
    if any); return its id."""
    batch = batch or plan.resumes or new_batch_id()
    _run_moves(paths, batch, plan.moves, PLANNED, MOVED,
               f"run the same command again to finish it, or relabel.py {paths.name} --undo "
               "to revert it", journaled=batch == plan.resumes)
    return batch


# --- undo ------------------------------------------------------------------------


def last_batch(entries: list[dict[str, str]]) -> str | None:
    """The latest batch that has not been reverted."""
    reverted = {e["batch"] for e in entries if e["status"] == REVERTED}
    for entry in reversed(entries):
        if entry["status"] == PLANNED and entry["batch"] not in reverted:
            return entry["batch"]
    return None


def plan_undo(paths: ModelPaths) -> tuple[str, list[Move]]:
    """The last batch and the moves that put its files back; UserError (nothing
    moves) when a file is gone, changed, or its old place is taken."""
    journal = paths.relabel_log
    if not journal.is_file():
        raise UserError(f"no relabel journal at {journal}: nothing to undo")
    entries = read_journal(journal)
    batch = last_batch(entries)
    if batch is None:
        raise UserError(f"every batch in {journal} is already undone: nothing to undo")
    all_dir = paths.all_dir
    problems, moves = [], []
    for entry in entries:
        if entry["batch"] != batch or entry["status"] != PLANNED:
            continue
        old, new = all_dir / entry["from"], all_dir / entry["to"]
        if problem := outside_data(paths, old, new, what="journal path"):
            problems.append(problem)
            continue
        if old.is_file() and not new.exists() and sha256_file(old) == entry["sha256"]:
            continue  # never moved (interrupted batch) or already back
        if not new.is_file():
            problems.append(f"{new} is missing (batch {batch} moved {entry['from']} there)")
        elif old.exists():
            problems.append(f"{old} exists again: move it away to undo batch {batch}")
        elif sha256_file(new) != entry["sha256"]:
            problems.append(f"{new} changed since batch {batch} moved it (sha256 differs)")
        else:
            moves.append(Move(new, old, entry["sha256"]))
    _fail(problems)
    return batch, moves


def undo(paths: ModelPaths, batch: str, moves: list[Move]) -> None:
    """Move the files of ``batch`` back, then mark it reverted."""
    _run_moves(paths, batch, moves, UNDO_PLANNED, UNDONE,
               f"run relabel.py {paths.name} --undo again to finish the undo")
    Journal(paths.relabel_log).append([(_now(), batch, REVERTED, "", "", "", "")])


def split_test_percent(paths: ModelPaths) -> int | None:
    """The test percentage of the current split, from split.csv (None without one)."""
    try:
        with paths.split_csv.open(newline="", encoding="utf-8") as handle:
            sides = [row.get(split.CSV_COLUMNS[2]) for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError):
        return None
    if not sides:
        return None
    return max(1, round(100 * sides.count(split.TEST) / len(sides)))


def stale_advice(paths: ModelPaths) -> str:
    """What to run after data/all changed."""
    pct = split_test_percent(paths) or 20
    return "\n".join([
        "data/all changed: the split (data/training, data/test) and the model were made "
        "from the old labels and are now stale. Run:",
        f"  python split_data.py {paths.name} {pct} --force",
        f"  ./train.sh {paths.name} <epochs> <the same flags as before; see "
        f"{paths.train_record.name} 'options'>",
        f"then batch_label_images.py and calc_perf.py {paths.name} to judge the new model.",
    ])
