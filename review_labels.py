#!/usr/bin/env python3
"""List the images whose label looks wrong: cleanlab on out-of-fold probabilities.

Reads crossval/oof_confidences_onboard.csv (the cross-validation's out-of-fold
probabilities) when it exists, else the test set's confidences CSV (on-board
first, then ground), and writes data/review/label_issues.csv (filename, given
label, suggested label, score) and data/review/review.html (each suspect's
thumbnail beside the model's input, where each can be decided by click or key and
the decisions downloaded as reviewed.csv). Nothing under data/all changes: fix labels
with relabel.py.
"""

from __future__ import annotations

import argparse

from opssat.core import atomic, cli, errors
from opssat.core.paths import check_inside, model_paths
from opssat.judge import review

#: Suspects printed on the terminal (the CSV and the page have all).
SHOWN = 20


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    paths = model_paths(args.model).require_model_dir()
    source = review.find_source(paths)
    check_inside(paths.model_dir, *review.outputs(paths), what="review output")
    atomic.check_writable(*review.outputs(paths))
    print(f"probabilities: {source.csv_path} ({source.kind}, {source.preprocess} preprocessing)")
    result = review.review(paths, source)
    for note in result.notes:
        errors.warn(f"cleanlab: {note}")
    issues, page = review.write_review(paths, result)
    print(f"{len(result.suspects)} suspected label error(s) among "
          f"{len(result.confidences.filenames)} images")
    for s in result.suspects[:SHOWN]:
        print(f"  {s.score:.4f}  {s.filename}: {s.given} -> {s.suggested}?")
    if len(result.suspects) > SHOWN:
        print(f"  ... {len(result.suspects) - SHOWN} more in {issues}")
    print(f"list: {issues}")
    print(f"page: {page}")
    if result.suspects:
        print(f"to fix: decide on the page (click or keys), download reviewed.csv, then "
              f"python relabel.py {args.model} reviewed.csv --dry_run")
    return 0


if __name__ == "__main__":
    cli.run(main)
