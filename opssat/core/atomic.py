"""Writes that never leave a half-written output: write beside the target, then
rename over it. A crash leaves either the old file or the new one."""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from opssat.core.errors import UserError


def _umask_mode(base: int) -> int:
    """``base`` less the process umask: what open() and mkdir() would have given."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def check_writable(*targets: Path | str | None) -> None:
    """Refuse outputs that cannot be written, before any long work starts.

    Each target is written beside itself and renamed into place, and an old
    folder is emptied, so its folder (the nearest one that exists, since missing
    ones are created) and an existing target folder itself must be writable.
    """
    for target in targets:
        if not target:
            continue
        target = Path(target)
        folders = [target] if target.is_dir() and not target.is_symlink() else []
        parent = target.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"cannot write {target}: {parent} is not a folder; move it away")
        for folder in [parent, *folders]:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise UserError(f"cannot write {target}: {folder} is read-only for you; make it "
                                f"writable (chmod u+w '{folder}') or use another folder")


def check_appendable(*files: Path | str | None) -> None:
    """Refuse existing files that are appended to in place (a journal, a CSV) but are
    read-only, before any work; a missing file only needs a writable folder."""
    for file in files:
        if file and Path(file).is_file() and not os.access(file, os.W_OK):
            raise UserError(f"cannot append to {file}: the file is read-only for you; make it "
                            f"writable (chmod u+w '{file}') or move it away")


#: Errors of a file operation that the user fixes outside the toolkit, and what to do.
_WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device: free some space, then run again",
    errno.EDQUOT: "disk quota exceeded: free some space, then run again",
    errno.EACCES: "permission denied: check its and its folder's permissions, or use "
                  "another folder",
    errno.EPERM: "operation not permitted: check its and its folder's permissions, or use "
                 "another folder",
    errno.EROFS: "the file system is read-only: use another folder",
    errno.ENAMETOOLONG: "the name is too long for the file system: use a shorter one",
    errno.EXDEV: "it is on another device than its target: keep both on one file system",
    errno.EISDIR: "a folder is in the way: move it away",
    errno.ENOTDIR: "a file is in the way where a folder is needed: move it away",
}


def write_failure(err: OSError) -> str | None:
    """One line for an OSError the user can fix (full disk, read-only, ...), naming the
    file; None for any other error (a bug, shown as a traceback)."""
    advice = _WRITE_FAILURES.get(err.errno)
    if advice is None:
        return None
    names = [str(n) for n in (err.filename, err.filename2) if n is not None]
    where = " -> ".join(names) if names else "a file"
    return f"{where}: {advice}"


#: How much of a file's end one read takes while looking for its last line.
TAIL_CHUNK = 4096


def last_line(raw: BinaryIO, size: int) -> tuple[int, bytes]:
    """(offset, bytes) of the text after the last newline of the open binary file ``raw``
    of ``size`` bytes, read backwards one ``TAIL_CHUNK`` at a time: checking an append's
    file costs its last line, not the whole file."""
    tail, end = b"", size
    while end > 0:
        start = max(0, end - TAIL_CHUNK)
        raw.seek(start)
        tail = raw.read(end - start) + tail
        if (cut := tail.rfind(b"\n")) >= 0:
            return start + cut + 1, tail[cut + 1:]
        end = start
    return 0, tail


def append_whole(fd: int, data: bytes) -> None:
    """Append ``data`` to the open file ``fd`` (opened for appending) and fsync it; on a
    full disk cut the file back to its old end, so no half row is ever left."""
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        os.ftruncate(fd, size)
        raise


def write_bytes(path: Path, data: bytes, outputs: OutputSet | None = None) -> None:
    """Replace ``path`` with ``data`` atomically; with ``outputs``, stage it there
    instead, to replace ``path`` at ``outputs.commit()`` with the others."""
    if outputs is not None:
        outputs.stage(path).write_bytes(data)
        return
    with staged_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str, outputs: OutputSet | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically, or stage it in ``outputs``."""
    write_bytes(path, text.encode("utf-8"), outputs)


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; return the folders it created, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    try:
        for new in reversed(missing):
            new.mkdir(exist_ok=True)
            made.append(new)
    except OSError:
        _remove_empty(made)
        raise
    return made


def _remove_empty(created: list[Path]) -> None:
    """Undo ``_make_folders`` after a failure, so a failed write leaves no new folder."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


#: ``<pid>.<random>`` (tempfile's random part), and the random part alone as
#: staging was named before the pid was added.
_STAMPED = re.compile(r"(\d+)\.[a-z0-9_]+")
_UNSTAMPED = re.compile(r"[a-z0-9_]{8}")


def remove_stale(folder: Path, prefix: str, suffix: str = ".tmp") -> list[Path]:
    """Remove ``<prefix><pid>.<random><suffix>`` staging that a run killed before its
    clean-up left in ``folder`` (its process is gone); a live run's is kept."""
    try:
        found = [p for p in folder.iterdir()
                 if p.name.startswith(prefix) and p.name.endswith(suffix)]
    except OSError:
        return []
    removed = []
    for path in found:
        middle = path.name[len(prefix):len(path.name) - len(suffix)]
        stamped = _STAMPED.fullmatch(middle)
        if stamped:
            pid = int(stamped.group(1))
            if pid == os.getpid() or _pid_alive(pid):
                continue
        elif not _UNSTAMPED.fullmatch(middle):
            continue  # not staging of this target (another name that starts alike)
        try:
            _remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _staging_prefix(path: Path) -> str:
    """Staging beside ``path`` is ``.<name>.<pid>.<random>.tmp``: the pid tells a
    later run whether its writer is still alive."""
    return f".{path.name}."


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``."""
    created = _make_folders(path.parent)
    remove_stale(path.parent, _staging_prefix(path))
    try:
        fd, name = tempfile.mkstemp(prefix=f"{_staging_prefix(path)}{os.getpid()}.",
                                    suffix=".tmp", dir=path.parent)
    except OSError:
        _remove_empty(created)
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``.

    The old folder is moved aside first and removed only after the new one is in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, _staging_prefix(path))
    tmp = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(path)}{os.getpid()}.", suffix=".tmp",
                                dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp makes it owner-only
        replace_path(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_path(new: Path, target: Path) -> None:
    """Move the file or folder ``new`` to ``target``, replacing what was there."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


class OutputSet:
    """Several outputs that replace their targets together, or not at all.

    ``stage(target)`` gives a path beside ``target`` to write to; ``commit()``
    moves every staged output into place; ``discard()`` removes them, leaving
    the previous outputs untouched.
    """

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}

    def stage(self, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.staging")
        _remove(staged)  # left by a killed run
        remove_stale(target.parent, _staging_prefix(target))
        self._staged[target] = staged
        return staged

    def staged(self) -> dict[Path, Path]:
        """Target -> staged path, for what has been staged so far."""
        return dict(self._staged)

    def commit(self) -> list[Path]:
        for target, staged in self._staged.items():
            replace_path(staged, target)
        committed = list(self._staged)
        self._staged.clear()
        return committed

    def discard(self) -> None:
        for staged in self._staged.values():
            _remove(staged)
        self._staged.clear()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
