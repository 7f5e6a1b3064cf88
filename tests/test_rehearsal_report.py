"""calc_perf's section on the last flight rehearsal (opssat/judge/rehearsal_report.py): read
from rehearsal.csv and summary.json as rehearse.py wrote them, absent when there is none."""

from __future__ import annotations

import csv
import json

from helpers import run_script
from test_calc_perf import csv_text

from opssat.core.paths import ModelPaths
from opssat.judge import rehearsal_report as rr

SUMMARY = {"arch": "k8", "smartcam": "/clone", "images": 3, "rows": 3, "chain": ["m"],
           "kept_per_label": {"earth": 1}, "toground_per_label": {"earth": 1},
           "deleted_per_reason": {rr.BELOW_THRESHOLD: 1, rr.NOT_KEPT: 1},
           "downlink": {"files": ["x.tar.gz"], "bytes": 1234, "chunks": 1}, "stopped": ""}
ROWS = [("a", "earth", "kept", "earth", ""), ("b", "earth", "deleted", "edge", rr.NOT_KEPT),
        ("c", "bad", "deleted", "bad", rr.BELOW_THRESHOLD)]


def _write_rehearsal(paths: ModelPaths) -> None:
    paths.rehearsal_dir.mkdir(parents=True)
    with open(paths.rehearsal_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=rr.COLUMNS)
        writer.writeheader()
        for name, true, outcome, final, reason in ROWS:
            writer.writerow(dict.fromkeys(rr.COLUMNS, "") | {
                "file": name, "true_label": true, "outcome": outcome, "final_label": final,
                "reason": reason})
    paths.rehearsal_summary.write_text(json.dumps(SUMMARY))


def test_outcome_table_counts_true_label_by_outcome(repo_root):
    paths = ModelPaths("m", repo_root)
    _write_rehearsal(paths)
    header, rows = rr.outcome_table(rr.load(paths).rows)
    assert header == ["true label", f"deleted: {rr.BELOW_THRESHOLD}", f"deleted: {rr.NOT_KEPT}",
                      "kept as earth", "images"]
    assert rows == [["bad", "1", "0", "0", "1"], ["earth", "0", "1", "1", "2"]]


def test_calc_perf_reports_the_rehearsal_only_when_there_is_one(repo_root):
    paths = ModelPaths("m", repo_root)
    paths.classification_dir.mkdir(parents=True)
    paths.confidences_csv().write_text(csv_text())
    before = run_script("calc_perf.py", "m", repo=repo_root, timeout=120)
    assert before.returncode == 0 and "flight rehearsal" not in before.stdout
    assert "Flight rehearsal" not in paths.report_md.read_text()
    _write_rehearsal(paths)
    after = run_script("calc_perf.py", "m", repo=repo_root, timeout=120)
    assert after.returncode == 0, after.stderr[-2000:]
    assert "kept per label (metadata CSV): earth 1" in after.stdout
    assert "downlink: 1,234 bytes in 1 chunk(s)" in after.stdout
    assert "## Flight rehearsal" in paths.report_md.read_text()
    page = paths.report_html.read_text()
    assert 'id="rehearsal"' in page and "kept as earth" in page
    figures = run_script("calc_perf.py", "m", "--json", repo=repo_root, timeout=120)
    assert json.loads(figures.stdout)["rehearsal"]["kept_per_label"] == {"earth": 1}
