#!/usr/bin/env python3
"""Split repo/<model>/data/all/<label>/ into data/training/ and data/test/ (copies).

Stratified per label, seeded, and grouped by acquisition time so that
thumbnails taken seconds apart stay on one side. Writes repo/<model>/split.csv.
"""

from __future__ import annotations

import argparse

from opssat.core import cli, errors, flags
from opssat.core.paths import model_paths
from opssat.data import split
from opssat.judge.shared_options import Bursts


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("test_pct", help="percentage of each label's images for testing, e.g. 20")
    parser.add_argument("--seed", default=str(split.DEFAULT_SEED),
                        help="random seed: the same seed gives the same split "
                             "(default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing split (clears only data/training and data/test)")
    parser.add_argument("--quarantine", action="store_true",
                        help="move unreadable files to data/quarantine/<label>/ (never deletes)")
    flags.add_flags(parser, [Bursts])
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model)
    test_pct = split.parse_test_pct(args.test_pct)
    seed = split.parse_seed(args.seed)
    group_seconds = split.parse_group_seconds(args.group_seconds)
    result = split.split_model(paths, test_pct, seed, group_seconds, args.force, args.quarantine)

    for _, _, why in result.scan.unreadable:
        errors.warn(f"skipped unreadable file {why}")
    for path in result.scan.ignored:
        errors.warn(f"ignored {path}: not in a label folder (move it to data/all/<label>/)")
    for note in result.plan.notes:
        errors.warn(note)
    print(split.format_table(result.plan))
    print(f"copied to {paths.training_dir} and {paths.test_dir}; list in {result.csv_path}")
    if result.scan.unreadable:
        print(f"skipped {len(result.scan.unreadable)} unreadable file(s):")
        moved = dict(result.quarantined)
        for path, _, _ in result.scan.unreadable:
            print(f"  {path}" + (f" (moved to {moved[path]})" if path in moved else ""))
        if not moved:
            print("  (--quarantine moves them to data/quarantine/<label>/; nothing is deleted)")
    return 0


if __name__ == "__main__":
    cli.run(main)
