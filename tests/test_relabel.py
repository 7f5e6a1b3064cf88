"""relabel.py: all-or-nothing moves between data/all/<label>/ folders, the journal,
--undo byte for byte (sha256 of every file before / after / after undo), every bad
input, and interruptions (Ctrl-C, a full disk) part-way through a batch."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import run_script
from page_fixture import make_model

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths
from opssat.data import relabel


def tree(all_dir: Path) -> dict[str, str]:
    """<label>/<file> -> sha256 of every file under data/all."""
    return {p.relative_to(all_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(all_dir.rglob("*")) if p.is_file()}


def run(root: Path, *args: str | Path) -> subprocess.CompletedProcess:
    return run_script("relabel.py", *args, repo=root, timeout=120)


@pytest.fixture
def model(repo_root: Path) -> ModelPaths:
    paths = make_model(repo_root, per_label=3)
    # A split as split_data.py writes it: 1 test image in 5.
    paths.split_csv.write_text("path,label,side,group\n" + "".join(
        f"data/all/bad/{i}.png,bad,{'test' if i == 0 else 'training'},{i}\n" for i in range(5)))
    return paths


def names(paths: ModelPaths, label: str) -> list[str]:
    return sorted(os.listdir(paths.all_dir / label))


def reviewed(tmp_path: Path, text: str | bytes, name: str = "reviewed.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_relabel_then_undo_byte_for_byte(model: ModelPaths, tmp_path: Path) -> None:
    bad, earth = names(model, "bad"), names(model, "earth")
    before = tree(model.all_dir)
    csv_path = reviewed(tmp_path, f"filename,new_label\nbad/{bad[0]},edge\n{earth[1]},bad\n"
                        f"earth/{earth[2]},earth\n")
    done = run(model.root, "m", csv_path)
    assert done.returncode == 0, done.stderr
    after = tree(model.all_dir)
    moved = {f"bad/{bad[0]}": f"edge/{bad[0]}", f"earth/{earth[1]}": f"bad/{earth[1]}"}
    assert after == {moved.get(k, k): v for k, v in before.items()}
    assert "1 file(s) already in their new label" in done.stdout
    assert "python split_data.py m 20 --force" in done.stdout
    assert "./train.sh m" in done.stdout and "stale" in done.stdout
    rows = relabel.read_journal(model.relabel_log)
    assert {(r["status"], r["from"], r["to"], r["sha256"]) for r in rows} == {
        (status, a, b, before[a]) for a, b in moved.items() for status in ("planned", "moved")}
    assert len({r["batch"] for r in rows}) == 1
    assert model.relabel_log.read_text().splitlines()[0] == "time,batch,status,file,sha256,from,to"

    undone = run(model.root, "m", "--undo")
    assert undone.returncode == 0, undone.stderr
    assert tree(model.all_dir) == before
    assert "stale" in undone.stdout
    again = run(model.root, "m", "--undo")
    assert again.returncode == 2 and "already undone" in again.stderr
    assert tree(model.all_dir) == before


def test_dry_run_moves_nothing(model: ModelPaths, tmp_path: Path) -> None:
    bad = names(model, "bad")
    before = tree(model.all_dir)
    csv_path = reviewed(tmp_path, f"filename,new_label\nbad/{bad[0]},edge\n")
    dry = run(model.root, "m", csv_path, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert f"bad/{bad[0]} -> edge/{bad[0]}" in dry.stdout and "dry run" in dry.stdout
    assert tree(model.all_dir) == before and not model.relabel_log.exists()
    assert run(model.root, "m", csv_path).returncode == 0
    moved = tree(model.all_dir)
    dry_undo = run(model.root, "m", "--undo", "--dry_run")
    assert dry_undo.returncode == 0 and f"edge/{bad[0]} -> bad/{bad[0]}" in dry_undo.stdout
    assert tree(model.all_dir) == moved


BAD_INPUTS = {
    "missing_column": (b"filename,label\nbad/x.png,edge\n", "lacks the column(s) new_label"),
    "unknown_label": ("filename,new_label\nbad/{bad0},sky\n", "unknown label 'sky'"),
    "duplicate_row": ("filename,new_label\nbad/{bad0},edge\n{bad1},earth\nbad/{bad0},edge\n",
                      "listed twice (lines 2 and 4)"),
    "outside_relative": ("filename,new_label\n../test/bad/{bad0},edge\n", "is outside"),
    "outside_absolute": ("filename,new_label\n{test}/bad/{bad0},edge\n", "is outside"),
    "not_a_label_folder": ("filename,new_label\nbad/sub/{bad0},edge\n", "not in a"),
    "non_utf8": (b"filename,new_label\nbad/caf\xe9.png,edge\n", "not UTF-8"),
    "missing_file": ("filename,new_label\nbad/nope.png,edge\n", "nope.png not found"),
    "destination_exists": ("filename,new_label\nbad/{bad0},edge\n", "already exists"),
    "same_destination": ("filename,new_label\nbad/{bad0},edge\nearth/{bad0},edge\n",
                         "same name"),
    "empty": (b"", "is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_nothing_moves(model: ModelPaths, tmp_path: Path,
                                                 case: str) -> None:
    bad = names(model, "bad")
    if case == "destination_exists":
        (model.all_dir / "edge" / bad[0]).write_bytes(b"another image")
    if case == "same_destination":
        (model.all_dir / "earth" / bad[0]).write_bytes(b"same name, other label")
    text, message = BAD_INPUTS[case]
    if isinstance(text, str):
        text = text.format(bad0=bad[0], bad1=bad[1], test=model.test_dir)
    csv_path = reviewed(tmp_path, text)
    before = tree(model.all_dir)
    proc = run(model.root, "m", csv_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert tree(model.all_dir) == before
    assert not model.relabel_log.exists()


def test_all_or_nothing_with_a_good_row_first(model: ModelPaths, tmp_path: Path) -> None:
    bad = names(model, "bad")
    before = tree(model.all_dir)
    csv_path = reviewed(tmp_path, f"filename,new_label\nbad/{bad[0]},edge\nbad/{bad[1]},sky\n")
    with pytest.raises(UserError, match="line 3: unknown label 'sky'.*nothing moved"):
        relabel.read_reviewed(model, csv_path)
    assert tree(model.all_dir) == before


@pytest.mark.parametrize("args", [("--undo",), ()])
def test_undo_without_journal_or_arguments_is_one_line(model: ModelPaths, args) -> None:
    proc = run(model.root, "m", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    if args:
        assert "no relabel journal" in lines[0]


def test_no_label_folders_is_one_line(repo_root: Path, tmp_path: Path) -> None:
    (repo_root / "empty" / "data" / "all").mkdir(parents=True)
    proc = run(repo_root, "empty", reviewed(tmp_path, "filename,new_label\nx.jpg,earth\n"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {repo_root / 'empty' / 'data' / 'all'} has no label folders: nothing to "
        "relabel; nothing moved"]


# --- interruptions ------------------------------------------------------------------


def three_moves(model: ModelPaths, tmp_path: Path) -> Path:
    bad = names(model, "bad")
    return reviewed(tmp_path, "filename,new_label\n" + "".join(f"bad/{n},edge\n" for n in bad))


def where_each_file_is(model: ModelPaths, before: dict[str, str]) -> None:
    """Every file of ``before`` is in exactly one label folder, unchanged."""
    now = tree(model.all_dir)
    assert sorted(now.values()) == sorted(before.values())
    assert len({Path(k).name for k in now}) == len(now)


def fail_on_call(monkeypatch: pytest.MonkeyPatch, target, name: str, call: int, error):
    """Make ``target.name`` raise ``error`` on its ``call``-th call."""
    original = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def test_ctrl_c_between_moves(model: ModelPaths, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(model.all_dir)
    csv_path = three_moves(model, tmp_path)
    fail_on_call(monkeypatch, relabel, "_rename", 2, KeyboardInterrupt())
    with pytest.raises(relabel.Interrupted, match="after 1 of 3 move"):
        relabel.relabel(model, relabel.read_reviewed(model, csv_path))
    monkeypatch.undo()
    where_each_file_is(model, before)
    rows = relabel.read_journal(model.relabel_log)
    assert [r["status"] for r in rows] == ["planned"] * 3 + ["moved"]
    assert (model.all_dir / rows[3]["to"]).is_file()
    assert not (model.all_dir / rows[3]["from"]).exists()
    # The same CSV again finishes the same batch; one undo restores everything.
    plan = relabel.read_reviewed(model, csv_path)
    assert len(plan.moves) == 2 and len(plan.unchanged) == 1
    assert plan.resumes == rows[0]["batch"]
    assert relabel.relabel(model, plan) == rows[0]["batch"]
    assert len(names(model, "bad")) == 0
    relabel.undo(model, *relabel.plan_undo(model))
    assert tree(model.all_dir) == before
    with pytest.raises(UserError, match="already undone"):
        relabel.plan_undo(model)


def test_ctrl_c_during_a_move_waits_for_its_journal_row(model: ModelPaths, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(model.all_dir)
    original = relabel._rename

    def rename_then_signal(source: Path, target: Path) -> None:
        original(source, target)
        os.kill(os.getpid(), signal.SIGINT)  # held until the journal row is written

    monkeypatch.setattr(relabel, "_rename", rename_then_signal)
    with pytest.raises(relabel.Interrupted, match="after 1 of 3"):
        relabel.relabel(model, relabel.read_reviewed(model, three_moves(model, tmp_path)))
    monkeypatch.undo()
    where_each_file_is(model, before)
    statuses = [r["status"] for r in relabel.read_journal(model.relabel_log)]
    assert statuses == ["planned"] * 3 + ["moved"]
    relabel.undo(model, *relabel.plan_undo(model))
    assert tree(model.all_dir) == before


def test_disk_full_after_a_move(model: ModelPaths, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal cannot record the first move: the planned rows and the files
    themselves still say where everything is, and undo restores it."""
    before = tree(model.all_dir)
    full = OSError(errno.ENOSPC, "No space left on device")
    fail_on_call(monkeypatch, relabel.Journal, "append", 2, full)
    with pytest.raises(relabel.Interrupted, match="No space left"):
        relabel.relabel(model, relabel.read_reviewed(model, three_moves(model, tmp_path)))
    monkeypatch.undo()
    where_each_file_is(model, before)
    assert len(names(model, "bad")) == 2
    assert [r["status"] for r in relabel.read_journal(model.relabel_log)] == ["planned"] * 3
    batch, moves = relabel.plan_undo(model)
    assert len(moves) == 1
    relabel.undo(model, batch, moves)
    assert tree(model.all_dir) == before


def test_disk_full_before_any_move(model: ModelPaths, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(model.all_dir)
    fail_on_call(monkeypatch, relabel.Journal, "append", 1,
                 OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError):
        relabel.relabel(model, relabel.read_reviewed(model, three_moves(model, tmp_path)))
    assert tree(model.all_dir) == before


def test_torn_journal_line_is_ignored(model: ModelPaths, tmp_path: Path) -> None:
    before = tree(model.all_dir)
    relabel.relabel(model, relabel.read_reviewed(model, three_moves(model, tmp_path)))
    with model.relabel_log.open("a") as handle:
        handle.write("2026-01-01T00:00:00+0000,x,pla")  # a crash mid-write
    assert len(relabel.read_journal(model.relabel_log)) == 6
    relabel.undo(model, *relabel.plan_undo(model))
    assert tree(model.all_dir) == before
    assert relabel.read_journal(model.relabel_log)[-1]["status"] == "reverted"


def test_undo_refuses_a_changed_file(model: ModelPaths, tmp_path: Path) -> None:
    relabel.relabel(model, relabel.read_reviewed(model, three_moves(model, tmp_path)))
    moved = model.all_dir / "edge" / relabel.read_journal(model.relabel_log)[0]["file"]
    moved.write_bytes(b"edited after the move")
    middle = tree(model.all_dir)
    with pytest.raises(UserError, match="changed since batch"):
        relabel.plan_undo(model)
    assert tree(model.all_dir) == middle
