"""Writes that never leave a half-written output: write beside the target, then
rename over it. A crash leaves either the old file or the new one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opssat.errors import UserError


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


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with staged_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp makes it owner-only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def staged_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``.

    The old folder is moved aside first and removed only after the new one is in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
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
        _remove(staged)
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
