"""The docs stay true to the code: the generated flag table is current, and every
relative link of README.md and docs/ points at a file that exists."""

from __future__ import annotations

import re

from helpers import PROJECT

from opssat.train.options import flags_document

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_flag_table_is_current():
    written = (PROJECT / "docs" / "flags.md").read_text(encoding="utf-8")
    assert written == flags_document(), (
        "docs/flags.md is stale: run .venv/bin/python tools/write_flags_doc.py")


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
