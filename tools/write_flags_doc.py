#!/usr/bin/env python3
"""Write docs/flags.md (the trainer's flags, from opssat/train/options.py) and
docs/scripts.md (every script's flags, from each script's ``build_parser`` and the
shared option groups); tests/test_docs.py fails when either is stale. Neither needs
TensorFlow."""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from opssat.core import flags  # noqa: E402
from opssat.data.preprocess import PreprocessOptions  # noqa: E402
from opssat.judge import shared_options  # noqa: E402
from opssat.train import recipes  # noqa: E402
from opssat.train.options import flags_document  # noqa: E402

DOCS = PROJECT / "docs"
#: The scripts, in the order of the workflow.
SCRIPTS = ("make_sample_data.py", "split_data.py", "batch_label_images.py", "label_image.py",
           "calc_perf.py", "review_labels.py", "relabel.py", "package_smartcam.py",
           "crossval.py", "rehearse.py", "suggest_labels.py")
#: The groups several scripts share, tabled once below the scripts.
SHARED = (shared_options.ModelFiles, shared_options.Threshold, shared_options.Threads,
          shared_options.SmartCamRuntime, shared_options.Bursts, shared_options.TopUp)
#: Shared groups the trainer takes too: tabled once, in flags.md.
IN_FLAGS_MD = (PreprocessOptions, recipes.RecipeName)


def anchor(title: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def load_script(name: str) -> ModuleType:
    """A top-level script as a module (its ``main`` does not run)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), PROJECT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _own_rows(parser: argparse.ArgumentParser, shared_titles: set[str]) -> list[str]:
    """A table row per argument of ``parser`` outside the shared groups."""
    rows = []
    for group in parser._action_groups:
        if group.title in shared_titles:
            continue
        for action in group._group_actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
            default = action.default
            empty = default is None or default is False or default in ([], "", argparse.SUPPRESS)
            shown = "" if empty else f"`{default}`"
            values = ", ".join(f"`{c}`" for c in action.choices or ()) or _kind(action)
            text = (action.help or "").replace("%(default)s", str(default)).replace("%%", "%")
            rows.append(f"| {name} | {shown} | {values} | {text.replace('|', chr(92) + '|')} |")
    return rows


def _kind(action: argparse.Action) -> str:
    """What an argument takes: its metavar, its type's name, nothing for a switch."""
    if action.nargs == 0:
        return ""
    if action.metavar:
        return str(action.metavar)
    return getattr(action.type, "__name__", "text") if action.type else "text"


def _shared_links(parser: argparse.ArgumentParser) -> list[str]:
    """Links to the tables of the shared groups ``parser`` takes."""
    titles = {group.title for group in parser._action_groups}
    links = [f"[{flags.section_title(g)}](#{anchor(flags.section_title(g))})"
             for g in SHARED if flags.section_title(g) in titles]
    links += [f"[{flags.section_title(g)}](flags.md#{anchor(flags.section_title(g))})"
              for g in IN_FLAGS_MD if flags.section_title(g) in titles]
    return links


def script_section(name: str) -> list[str]:
    """One script's heading, its own arguments and links to the shared groups it takes."""
    parser = load_script(name).build_parser()
    summary = " ".join((parser.description or "").strip().split("\n\n")[0].split())
    lines = [f"## {name}", "", summary, ""]
    rows = _own_rows(parser, {flags.section_title(g) for g in (*SHARED, *IN_FLAGS_MD)})
    if rows:
        lines += ["| argument | default | values | what it does |", "|---|---|---|---|",
                  *rows, ""]
    links = _shared_links(parser)
    if links:
        lines += ["Shared flags: " + ", ".join(links) + ".", ""]
    return lines


def scripts_document() -> str:
    """docs/scripts.md: every script's arguments, then the shared groups' tables."""
    lines = [
        "# Script flags",
        "",
        "<!-- Generated from each script's build_parser and opssat/judge/shared_options.py "
        "by tools/write_flags_doc.py: do not edit. -->",
        "",
        "Every flag is declared once: a script's own arguments in the script, the flags "
        "several scripts share in an option group (below), whose help is the same "
        "wherever it appears. `train.sh` and the trainer's flags are in [flags.md](flags.md), "
        "with the preprocessing and recipe groups that the labelling scripts and "
        "`crossval.py` share with it. `--help` of every script prints the same.",
        "",
    ]
    for name in SCRIPTS:
        lines += script_section(name)
    lines += ["## Shared groups", ""]
    return "\n".join(lines) + "\n" + flags.markdown_table(SHARED)


DOCUMENTS = {"flags.md": flags_document, "scripts.md": scripts_document}

if __name__ == "__main__":
    for file_name, make in DOCUMENTS.items():
        (DOCS / file_name).write_text(make(), encoding="utf-8")
        print(f"wrote {DOCS / file_name}")
