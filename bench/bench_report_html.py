#!/usr/bin/env python3
"""Benchmark: report.html for a large test set. Prints the time to write the page
and its image files (first run, then a re-run that reuses them), the page's size,
and how long headless Chromium takes to open it (load event, lazy images).

Writes N generated 614x583 JPEGs (copies of a few distinct noisy gradients; the
work per file does not depend on repeats) and ground + on-board CSVs with random
confidences into a temporary repo/<model>/, so it runs offline.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from opssat.core.paths import ModelPaths
from opssat.data import images
from opssat.judge import report, report_page

PROJECT = Path(__file__).resolve().parent.parent

LABELS = ["bad", "earth", "edge"]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMING = """<script>window.addEventListener('load', function () {
  var t = performance.getEntriesByType('navigation')[0];
  var loaded = Array.prototype.filter.call(document.images, function (i) {
    return i.complete && i.naturalWidth > 0; }).length;
  var out = document.createElement('pre'); out.id = 'timing';
  out.textContent = JSON.stringify({load_ms: t.loadEventStart, dom_ms: t.domInteractive,
                                    images: document.images.length, loaded: loaded});
  document.body.appendChild(out);
});</script>"""


def make_data(paths: ModelPaths, count: int, distinct: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = Path(tempfile.mkdtemp(dir=paths.root))
    sources = []
    for n in range(distinct):
        ramp = np.linspace(0, 255, 614)[None, :, None] * rng.uniform(0.3, 1.0, 3)
        pixels = ramp + rng.normal(0, 6, (583, 614, 3))
        sources.append(pool / f"{n}.jpeg")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(sources[-1], quality=90)
    rows: dict[str, list[str]] = {"ground": [], "onboard": []}
    for n in range(count):
        label = LABELS[n % 3]
        name = f"img_msec_{1600000000000 + 1000 * n}_2_thumbnail.jpeg"
        target = paths.test_dir / label / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[n % len(sources)], target)
        for mode in rows:
            p = rng.dirichlet([0.6, 0.6, 0.6])
            predicted = LABELS[int(p.argmax())] if p.max() >= 0.7 else "n/a"
            rows[mode].append(f"{label}/{name},3.0,{predicted},{label},"
                              + ",".join(f"{x:.6f}" for x in p))
    header = "filename,time_ms,predicted_label,expected_label," + ",".join(LABELS)
    for mode, lines in rows.items():
        csv_path = paths.confidences_csv(mode)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text("\n".join([header, *lines]) + "\n")
    shutil.rmtree(pool)


def write_page(paths: ModelPaths) -> float:
    start = time.perf_counter()
    csvs = [(mode, paths.confidences_csv(mode)) for mode in images.PREPROCESS_MODES]
    report_page.write_html(paths, report.build(paths.name, csvs, 0.7, 0.95))
    return time.perf_counter() - start


def open_in_chromium(page: Path, profile: Path) -> dict | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    timed = page.with_name("bench_timing.html")
    timed.write_text(page.read_text().replace("</body>", TIMING + "</body>"))
    run = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          timed.as_uri()], capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="timing">(.*?)</pre>', run.stdout, re.S)
    return json.loads(found.group(1).replace("&quot;", '"')) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="test images (default: 2000)")
    parser.add_argument("--distinct", type=int, default=30, help="distinct thumbnails")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = ModelPaths("bench", Path(tmp))
        make_data(paths, args.images, args.distinct, seed=1)
        first = write_page(paths)
        again = write_page(paths)
        page = paths.report_html
        files = list((page.parent / "report_files").iterdir())
        print(f"images: {args.images} (ground + on-board CSVs)")
        print(f"write report.html + files, first run: {first:.1f} s "
              f"({1000 * first / args.images:.1f} ms per image)")
        print(f"re-run (files reused):                {again:.1f} s")
        print(f"report.html: {page.stat().st_size / 1024:.0f} KiB; report_files/: {len(files)} "
              f"files, {sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
        timing = open_in_chromium(page, Path(tmp) / "profile")
        if timing is None:
            print("chromium: not found, page opening not measured")
        else:
            print(f"chromium: DOM ready {timing['dom_ms']:.0f} ms, load event "
                  f"{timing['load_ms']:.0f} ms; {timing['loaded']} of {timing['images']} "
                  "<img> loaded at load (the rest load lazily when shown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
