"""The docs stay true to the code: the generated flag tables (docs/flags.md,
docs/scripts.md) are current, and every
relative link of README.md and docs/ points at a file that exists."""

from __future__ import annotations

import importlib.util
import re

import pytest
from helpers import PROJECT

SPEC = importlib.util.spec_from_file_location("write_flags_doc",
                                              PROJECT / "tools" / "write_flags_doc.py")
write_flags_doc = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(write_flags_doc)

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", sorted(write_flags_doc.DOCUMENTS))
def test_generated_flag_tables_are_current(name):
    written = (PROJECT / "docs" / name).read_text(encoding="utf-8")
    assert written == write_flags_doc.DOCUMENTS[name](), (
        f"docs/{name} is stale: run .venv/bin/python tools/write_flags_doc.py")


def test_relative_links_point_at_files():
    pages = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(PROJECT)}: {target}")
    assert not broken, broken


def test_the_newcomers_map_names_every_module_in_its_stage():
    """docs/development.md's stage table lists each module of opssat/<stage>/ in its row."""
    rows = {match[1]: match[2] for match in re.finditer(
        r"^\| `opssat/(\w+)` \|.*\| (.*) \|$",
        (PROJECT / "docs" / "development.md").read_text(encoding="utf-8"), re.M)}
    package = PROJECT / "opssat"
    for stage in (p.parent for p in package.glob("*/__init__.py")):
        listed = set(re.findall(r"`(\w+)`", rows.get(stage.name, "")))
        modules = {p.stem for p in stage.glob("*.py") if p.stem != "__init__"}
        assert modules == listed, f"opssat/{stage.name}: map lacks {sorted(modules - listed)}, " \
            f"names gone {sorted(listed - modules)}"
