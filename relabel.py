#!/usr/bin/env python3
"""Fix labels: move images between repo/<model>/data/all/<label>/ folders, or from
data/unlabelled/ into them.

REVIEWED.csv has the columns filename,new_label (filename as <label>/<file>, as
in data/review/label_issues.csv, ../unlabelled/<file> as in unlabelled_queue.csv,
or a bare file name); the pages' "download reviewed.csv" writes it. Every row is checked
before any file moves; an unknown label, a missing file, a duplicate row, a
path outside data/all or a name already taken at the destination stops the
whole batch. Each batch is recorded in data/relabel_log.csv (time, batch, file,
sha256, from, to); --undo puts the last batch back byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opssat.core import cli
from opssat.core.paths import model_paths
from opssat.data import relabel


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("reviewed_csv", nargs="?", type=Path,
                        help="CSV with the columns filename,new_label")
    parser.add_argument("--undo", action="store_true",
                        help="move the files of the last batch back where they were")
    parser.add_argument("--dry_run", action="store_true",
                        help="show what would move, change nothing")
    return parser


def parse_args() -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args()
    if args.undo == (args.reviewed_csv is not None):
        parser.error("give either REVIEWED.csv or --undo")
    return args


def show(moves: list[relabel.Move], all_dir: Path) -> None:
    for move in moves:
        source, target = move.relative(all_dir)
        print(f"  {source} -> {target}")


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir()
    if args.undo:
        batch, moves = relabel.plan_undo(paths)
        print(f"batch {batch}: {len(moves)} file(s) to move back")
        show(moves, paths.all_dir)
        if args.dry_run:
            print("dry run: nothing moved")
            return 0
        relabel.undo(paths, batch, moves)
        print(f"batch {batch} undone; journal: {paths.relabel_log}")
        if not moves:
            return 0
    else:
        plan = relabel.read_reviewed(paths, args.reviewed_csv)
        if plan.unchanged:
            print(f"{len(plan.unchanged)} file(s) already in their new label, left alone")
        if not plan.moves:
            print("nothing to move")
            return 0
        print(f"{len(plan.moves)} file(s) to move:")
        show(plan.moves, paths.all_dir)
        if args.dry_run:
            print("dry run: nothing moved")
            return 0
        batch = relabel.relabel(paths, plan)
        finished = " (finishing that interrupted batch)" if batch == plan.resumes else ""
        print(f"moved {len(plan.moves)} file(s) as batch {batch}{finished}; journal: "
              f"{paths.relabel_log} (undo: python relabel.py {args.model} --undo)")
    print(relabel.stale_advice(paths))
    return 0


if __name__ == "__main__":
    cli.run(main)
