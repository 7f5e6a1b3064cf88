"""The toolkit's picture of SmartCam's pipeline, held to what SmartCam's smartcam.py does
(issue 24, items 1-7): below the threshold an image is deleted, not 'unclassified'; the
threshold figures do not claim to be what is downlinked; the snippet's threshold is the
value the figures were computed at; routing names and downlink_thumbnails are checked; the
docs do not assume one thumbnail size."""

from __future__ import annotations

import configparser
import shutil
from pathlib import Path

import pytest
from helpers import OPSSAT_LABELS as LABELS
from helpers import PROJECT, one_error_line, run_script, write_labels_file
from test_calc_perf import csv_text

from opssat.core.errors import UserError
from opssat.core.paths import ModelPaths, model_paths
from opssat.judge import metrics
from opssat.uplink import package, smartcam_config


def _config(tmp_path: Path, text: str) -> configparser.ConfigParser:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return smartcam_config.read_config(path)


BASE = """[conf]
entry_point_model = default
downlink_thumbnails = yes
downlink_log_if_no_images = yes
raw_compression_type = fapec
downlink_compressed_split = 10M
downlink_compressed_raws = no
collect_metadata = yes
tle_path = /etc/tle
quota_toGround = 100000
max_error_count = 10
[camera]
cam_exposure = 2
cam_gains = [13,7,8]
[gen]
gen_type = poll
gen_interval_default = 0.5
gen_interval_throttle = 0
gen_number = 3
gen_geojson = aois/continents.json
[img]
raw_keep = no
png_keep = yes
[jpeg]
jpeg_scaling = 0.3
jpeg_quality = 90
[clustering]
cluster = no
cluster_for_labels = ["earth"]
cluster_k = 4
cluster_collect_threshold = 10
cluster_img_types = ["jpeg"]
[model_default]
default.tflite_model = m.tflite
default.labels = l.txt
default.labels_keep = ["earth:{target}", "edge"]
default.input_height = 224
default.input_width = 224
default.input_mean = 0
default.input_std = 255
default.confidence_threshold = 0.7
[model_demo]
demo.tflite_model = m.tflite
demo.labels = l.txt
demo.labels_keep = ["earth"]
demo.input_height = 224
demo.input_width = 224
demo.input_mean = 0
demo.input_std = 255
demo.confidence_threshold = 0.7
"""


# item 3 -----------------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0.755, 0.999, 0.7, 0.5125])
def test_the_snippet_sets_the_threshold_the_figures_were_computed_at(threshold, tmp_path):
    snippet = package.config_snippet("demo", LABELS, threshold)
    assert f"demo.confidence_threshold = {threshold}\n" in snippet
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / package.CONFIG_SNIPPET_FILE).write_text(snippet)
    assert package.package_threshold(folder) == threshold


# items 1 and 2 ----------------------------------------------------------------------

def test_threshold_figures_say_smartcam_deletes_and_do_not_claim_the_downlink():
    row = metrics.ThresholdRow(threshold=0.7, kept_share=0.8, kept_accuracy=0.975, kept=40)
    text = package.describe_row(row)
    assert "passes the threshold" in text and "deletes the rest" in text
    assert not text.startswith("keeps")


@pytest.mark.slow
def test_package_readme_says_deleted_on_board(repo_root, contract_models):
    paths = model_paths("demo")
    paths.model_dir.mkdir()
    shutil.copy(contract_models("good"), paths.tflite_model)
    write_labels_file(paths.model_dir, LABELS)
    built = package.build_package(paths, "demo", paths.tflite_model, paths.labels_file, 0.755)
    readme = (built.folder / package.README_FILE).read_text()
    assert "unclassified" not in readme
    assert "deletes the image on board" in readme and "labels_keep" in readme
    assert "confidence_threshold = 0.755" in readme


def test_calc_perf_report_says_below_threshold_is_deleted(repo_root):
    paths = ModelPaths("m", repo_root)
    paths.classification_dir.mkdir(parents=True)
    paths.confidences_csv().write_text(csv_text())
    proc = run_script("calc_perf.py", "m", repo=repo_root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for page in (paths.report_md, paths.report_html):
        text = page.read_text()
        assert "deletes the others on board" in text and "SmartCam keeps on board" not in text
    assert "rehearse.py" in paths.report_md.read_text()


# items 4 and 6 ----------------------------------------------------------------------

def test_a_routing_typo_names_the_section(tmp_path):
    parser = _config(tmp_path, BASE.format(target="Demo"))
    problems = smartcam_config.routing_problems(parser, "default")
    assert len(problems) == 1
    assert "[model_Demo]" in problems[0] and "case-sensitive" in problems[0]
    assert smartcam_config.routing_problems(_config(tmp_path, BASE.format(target="demo")),
                                            "default") == []
    assert smartcam_config.chain(_config(tmp_path, BASE.format(target="demo")),
                                 "default") == ["default", "demo"]


def test_a_config_without_the_keys_smartcam_reads_at_start_is_a_problem(tmp_path):
    parser = _config(tmp_path, BASE.format(target="demo").replace("max_error_count = 10\n", ""))
    with pytest.raises(UserError, match=r"lacks \[conf\] max_error_count: SmartCam stops"):
        smartcam_config.check_config(parser)
    smartcam_config.check_config(_config(tmp_path, BASE.format(target="demo")))


def test_thumbnails_off_is_a_problem(tmp_path):
    parser = _config(tmp_path, BASE.format(target="demo").replace(
        "downlink_thumbnails = yes", "downlink_thumbnails = no"))
    with pytest.raises(UserError, match="classifies nothing"):
        smartcam_config.check_config(parser)


@pytest.mark.slow
@pytest.mark.parametrize(("change", "message"), [
    (("earth:{target}", "earth:Demo"), "[model_Demo]"),
    (("downlink_thumbnails = yes", "downlink_thumbnails = no"), "classifies nothing"),
])
def test_package_smartcam_checks_the_users_config(repo_root, contract_models, tmp_path,
                                                   change, message):
    paths = model_paths("demo")
    paths.model_dir.mkdir()
    shutil.copy(contract_models("good"), paths.tflite_model)
    write_labels_file(paths.model_dir, LABELS)
    config = tmp_path / "config.ini"
    config.write_text(BASE.replace(*change).format(target="demo").replace(
        "[model_demo]", "[model_other]").replace("demo.", "other."))
    proc = run_script("package_smartcam.py", "demo", "--config", config, repo=repo_root)
    assert message in one_error_line(proc)
    assert not paths.smartcam_root.exists()
    good = BASE.format(target="demo")
    config.write_text(good)
    proc = run_script("package_smartcam.py", "demo", "--config", config, repo=repo_root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (paths.smartcam_dir("demo") / package.MODEL_FILE).is_file()


# item 7 -----------------------------------------------------------------------------

def test_onboard_docs_do_not_assume_one_thumbnail_size():
    text = (PROJECT / "docs" / "onboard.md").read_text()
    assert "loads the 614x583 thumbnail" not in text
    assert "410x389" in text and "any size" in text
