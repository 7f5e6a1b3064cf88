#!/usr/bin/env python3
"""Flight rehearsal: what will SmartCam keep, delete and downlink with these packages?

rehearse.py MODEL [MODEL ...] --smartcam_dir DIR [--images FOLDER] [--config CONFIG.ini]
[--arch k8|armhf]

Runs your clone's own smartcam.py (unchanged, in its DEBUG mode) over the thumbnails of
--images (default: the first model's data/test; label subfolders give each image a true
label), with the packages of package_smartcam.py plugged into its config (the first MODEL
is the entry point; MODEL/PACKAGE picks a package by name). --config takes your own
config.ini: its routing, thresholds and clustering are kept, only paths are pointed at the
packages and at the work folder. Writes repo/<model>/rehearsal/: rehearsal.csv (a row per
image), summary.json, and SmartCam's work folder (its toGround/, logs and downlink tar).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from opssat.core import cli, errors, flags
from opssat.judge.shared_options import SmartCamRuntime
from opssat.onboard import flight


def build_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="model name (repo/<model>/, its package smartcam/<model>/) or "
                        "MODEL/PACKAGE; the first is SmartCam's entry_point_model")
    parser.add_argument("--images", type=Path, default=None,
                        help="thumbnails to replay (default: the first model's data/test)")
    parser.add_argument("--config", type=Path, default=None,
                        help="your SmartCam config.ini (default: the clone's config.dev.ini)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds SmartCam may run (default: 60 + 10 per image for k8, "
                        "60 per image for armhf, about 6 s per image under qemu-user)")
    flags.add_flags(parser, [SmartCamRuntime])
    return parser


def main() -> int:
    args = build_parser().parse_args()
    from opssat.judge import rehearsal_report  # after --help: these import scikit-learn
    from opssat.uplink import rehearsal

    result = rehearsal.rehearse(args.models, flight.smartcam_dir(args.smartcam_dir),
                                args.images, args.config, args.smartcam_arch, args.timeout)
    for line in result.checks:
        print(f"check: {line}")
    print("\n".join(rehearsal_report.render_lines(result.report)))
    print(f"rehearsal: {result.paths.rehearsal_csv} (SmartCam's folder: "
          f"{result.paths.rehearsal_dir / 'work'})")
    unreached = rehearsal.unreached_line(result)
    if unreached:
        errors.warn(unreached)
    failure = rehearsal.failure(result)
    if failure:
        raise rehearsal.RehearsalError(failure)
    return 0


if __name__ == "__main__":
    cli.run(main)
