#!/usr/bin/env python3
"""Judge a model from the CSV(s) written by batch_label_images.py.

Prints the per-label table and total accuracy as the original did, then
precision/recall/F1, macro-F1, balanced accuracy, Cohen's kappa (1 - kappa is the
ESA OPS-SAT competition score), the confusion matrices and the threshold
trade-off; writes data/classification/report.md, PNG plots and report.html (a
page that opens offline: the figures, a clickable confusion matrix and the
misclassified images beside the model's input). The main figures
use the top-1 label of every image (threshold ignored); the "at threshold" line
counts the images that pass SmartCam's threshold (it deletes the others on board; what it
downlinks also depends on labels_keep: rehearse.py runs SmartCam's own app, and its last
rehearsal is a section of the report). When confidences_onboard.csv exists too, both
preprocessing modes are reported side by side with their top-1 agreement; so is
confidences_flight.csv (batch_label_images.py --runtime smartcam: SmartCam's own
binaries), against LiteRT with the same on-board input, with the images whose top-1
differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from opssat.core import atomic, cli, errors, flags
from opssat.core.paths import check_inside, model_paths
from opssat.data import images
from opssat.judge.confidences import check_threshold
from opssat.judge.shared_options import Threshold
from opssat.onboard import flight, smartcam


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model name: the folder repo/<model>/")
    parser.add_argument("--target_accuracy", type=float, default=smartcam.DEFAULT_TARGET_ACCURACY,
                        help="find the lowest threshold whose kept images reach this accuracy "
                        "(default: %(default)s)")
    parser.add_argument("--csv", type=Path, default=None,
                        help="read this CSV only (default: confidences.csv, and "
                        "confidences_onboard.csv and confidences_flight.csv when they exist)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON")
    flags.add_flags(parser, [Threshold])
    return parser


def parse_args() -> argparse.Namespace:
    return build_parser().parse_args()


def main() -> int:
    args = parse_args()
    from opssat.judge import (  # scikit-learn: after --help
        rehearsal_report,
        report,
        report_page,
        report_plots,
    )

    check_threshold(args.target_accuracy, "--target_accuracy")
    check_threshold(args.threshold)
    paths = model_paths(args.model).require_model_dir()
    if args.csv is not None:
        if not args.csv.is_file():
            raise errors.UserError(f"CSV {args.csv} not found: pass the confidences CSV that "
                                   "batch_label_images.py wrote")
        csvs = [("ground" if args.csv == paths.confidences_csv() else args.csv.stem, args.csv)]
    else:
        csvs = [(mode, paths.confidences_csv(mode))
                for mode in (*images.PREPROCESS_MODES, flight.MODE)
                if paths.confidences_csv(mode).is_file()]
        if not csvs:
            raise errors.UserError(f"{paths.confidences_csv()} not found: run "
                                   f"batch_label_images.py {args.model} first")
    outputs = [paths.report_md, paths.plot_png("threshold_curve"),
               *report_page.html_outputs(paths)]
    check_inside(paths.model_dir, *outputs, what="report output")
    atomic.check_writable(*outputs)
    rep = report.build(args.model, csvs, args.threshold, args.target_accuracy,
                       rehearsal_report.load(paths))
    # Every output is staged, then all replace the old ones together: a full disk
    # leaves the previous report whole.
    staged = atomic.OutputSet()
    try:
        rep.plots = report_plots.write_plots(paths, rep.modes, staged)
        report_md = report.write_report(paths, rep, staged)
        report_html = report_page.write_html(paths, rep, staged)
        staged.commit()
    finally:
        staged.discard()
    if args.json:
        print(json.dumps(report.to_json(rep, report=report_md, report_html=report_html),
                         indent=2))
        return 0
    print(report.render_text(rep))
    print(f"report: {report_md}")
    print(f"page:   {report_html} (open it in a browser; works offline)")
    print(f"plots:  {', '.join(str(p) for p in rep.plots)}")
    return 0


if __name__ == "__main__":
    cli.run(main)
