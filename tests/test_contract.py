"""The SmartCam contract check (opssat/judge/contract.py): what a .tflite must be for
SmartCam to run it, and one clear reason for each violation."""

from __future__ import annotations

import hashlib

import pytest
from helpers import OPSSAT_LABELS as LABELS
from helpers import write_labels_file

from opssat.judge import contract


def test_good_model_passes_every_check(contract_models, tmp_path):
    report = contract.check_contract(contract_models("good"), write_labels_file(tmp_path, LABELS))
    assert report.ok, report.format()
    assert [c.name for c in report.checks] == ["file", "labels", "ops", "tfl2.5", "input",
                                               "output", "softmax"]
    assert report.size_bytes == contract_models("good").stat().st_size
    assert report.sha256 == hashlib.sha256(contract_models("good").read_bytes()).hexdigest()
    assert report.labels == LABELS
    assert "SOFTMAX" in report.ops and not report.problems


@pytest.mark.parametrize(
    ("kind", "labels", "failed", "reason"),
    [
        ("uint8", LABELS, {"input", "output"}, "uint8"),
        ("size32", LABELS, {"input"}, "1x32x32x3, but the config feeds 1x224x224x3"),
        ("good", [*LABELS, "cloud"], {"output"}, "3 values per image but 4 labels"),
        ("good", ["bad", "earth", "bad"], {"labels"}, "more than once"),
        ("good", ["bad", "", "edge"], {"labels"}, "blank line"),
        ("good", ["bad", "earth:x", "edge"], {"labels"}, "cannot contain"),
        ("flex", LABELS, {"ops"}, "FlexCumprod"),
        ("custom", LABELS, {"ops"}, "custom ops Erfinv"),
        ("no_softmax", LABELS, {"softmax"}, "end the model with a softmax"),
        ("sigmoid", LABELS, {"softmax"}, "end the model with a softmax"),
        ("signed", LABELS, {"softmax"}, "end the model with a softmax"),
    ],
)
def test_each_violation_is_refused_with_its_reason(contract_models, tmp_path, kind, labels, failed,
                                                   reason):
    report = contract.check_contract(contract_models(kind), write_labels_file(tmp_path, labels))
    assert not report.ok
    assert {c.name for c in report.checks if c.passed is False} == failed, report.format()
    assert any(reason in problem for problem in report.problems), report.problems


def test_a_non_tflite_file_is_refused_not_a_traceback(tmp_path):
    text = tmp_path / "model.tflite"
    text.write_text("not a model at all\n")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)
    labels = write_labels_file(tmp_path, LABELS)
    for path, reason in [(text, "not a TFLite model"), (truncated, "LiteRT cannot load it"),
                         (tmp_path / "missing.tflite", "not found")]:
        report = contract.check_contract(path, labels)
        assert not report.ok
        assert report.problems[0].startswith("file: ") and reason in report.problems[0]
        assert {c.name for c in report.checks if c.passed is None} == {
            "ops", "tfl2.5", "input", "output", "softmax"}


def test_model_ops_reads_builtin_and_flex_codes(contract_models):
    assert "FlexCumprod" in contract.model_ops(contract_models("flex").read_bytes())
    ops = contract.model_ops(contract_models("good").read_bytes())
    assert {"MEAN", "FULLY_CONNECTED", "SOFTMAX"} <= set(ops)
