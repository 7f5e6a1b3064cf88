"""create_dirs.sh: the four data folders and nothing else, safe to re-run, and
the same model-name rule as opssat.core.paths (it runs without the virtualenv)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import PROJECT

from opssat.core.errors import UserError
from opssat.core.paths import check_model_name

SCRIPT = PROJECT / "create_dirs.sh"
FOLDERS = ["all", "classification", "test", "training", "unlabelled"]
#: Every character Python's ``\s`` matches, so the bash rule can be held to it.
PY_SPACES = [c for c in map(chr, range(0x3001)) if re.fullmatch(r"\s", c)]
NAMES = [
    "opssat_v1", "demo", "x-", "_a", "A9", "a.b", "été", "model2.", "a\u200bb", "x;rm",
    "modèle", "モデル", "a$b", "a'b", "ok\n", "", "-x", ".hidden", "..", "a/b", "/abs", "a..b",
    "a b", " lead", "trail ",
] + [f"a{c}b" for c in PY_SPACES]


def _run(args: list[str], repo: Path | None, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    # A bare environment: no virtualenv, no Python on purpose beyond the system's.
    env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
    if repo is not None:
        env["OPSSAT_REPO"] = str(repo)
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, timeout=30)


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_makes_the_five_folders_and_nothing_else(repo_root: Path) -> None:
    done = _run(["opssat_v1"], repo_root)
    assert done.returncode == 0, done.stderr
    expected = ["opssat_v1", "opssat_v1/data"] + [f"opssat_v1/data/{f}" for f in FOLDERS]
    assert _tree(repo_root) == expected
    assert b"data/all/<label>/" in done.stdout


def test_rerun_keeps_everything(repo_root: Path) -> None:
    assert _run(["m"], repo_root).returncode == 0
    image = repo_root / "m" / "data" / "all" / "earth" / "a.jpeg"
    image.parent.mkdir()
    image.write_bytes(b"kept")
    extra = repo_root / "m" / "labels.txt"
    extra.write_text("bad\n")
    before = _tree(repo_root)
    assert _run(["m"], repo_root).returncode == 0
    assert _tree(repo_root) == before
    assert image.read_bytes() == b"kept" and extra.read_text() == "bad\n"


def test_default_repo_is_beside_the_script(tmp_path: Path) -> None:
    copy = tmp_path / "create_dirs.sh"
    shutil.copy(SCRIPT, copy)
    done = _run(["m"], None, copy)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "repo" / "m" / "data" / "training").is_dir()


@pytest.mark.parametrize("args", [[], ["a", "b"]])
def test_usage(repo_root: Path, args: list[str]) -> None:
    done = _run(args, repo_root)
    assert done.returncode == 2
    assert done.stderr.decode().startswith("error: usage")
    assert _tree(repo_root) == []


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "..", "a/b", "a..b", "a b", "a\tb", "a\nb"])
def test_rejects_bad_names(repo_root: Path, name: str) -> None:
    done = _run([name], repo_root)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid model name")
    assert _tree(repo_root) == []


def test_same_rule_as_check_model_name(repo_root: Path) -> None:
    disagreements = []
    for name in NAMES:
        try:
            check_model_name(name)
            python_ok = True
        except UserError:
            python_ok = False
        done = _run([name], repo_root)
        if (done.returncode == 0) != python_ok or done.returncode not in (0, 2):
            disagreements.append((name, python_ok, done.returncode))
    assert disagreements == []
    accepted = {p.name for p in repo_root.iterdir()}
    assert accepted == {"opssat_v1", "demo", "x-", "_a", "A9"}


@pytest.mark.parametrize("name", ["x;rm", "modèle", "モデル"])
def test_message_states_the_rule_it_applies(repo_root: Path, name: str) -> None:
    done = _run([name], repo_root)
    assert done.returncode == 2 and _tree(repo_root) == []
    line = done.stderr.decode()
    assert f"'{name}'" in line and "ASCII letters, digits, '_' or '-'" in line


def test_printed_hint_is_quoted(repo_root: Path) -> None:
    done = _run(["my-model_2"], repo_root)
    assert done.returncode == 0
    assert b"./split_data.py 'my-model_2' 20" in done.stdout


def test_path_in_the_way_is_reported(repo_root: Path) -> None:
    (repo_root / "m" / "data").mkdir(parents=True)
    (repo_root / "m" / "data" / "test").write_text("a file, not a folder")
    done = _run(["m"], repo_root)
    assert done.returncode != 0
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "not a folder" in lines[0]
    assert (repo_root / "m" / "data" / "test").read_text() == "a file, not a folder"
