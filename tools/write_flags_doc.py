#!/usr/bin/env python3
"""Write docs/flags.md, the trainer's flag table, from the option declarations in
opssat/train/options.py (tests/test_docs.py fails when the file is stale)."""

from pathlib import Path

from opssat.train.options import flags_document

DOC = Path(__file__).resolve().parent.parent / "docs" / "flags.md"

if __name__ == "__main__":
    DOC.write_text(flags_document(), encoding="utf-8")
    print(f"wrote {DOC}")
