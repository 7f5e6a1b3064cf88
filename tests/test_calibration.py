"""Calibration: ECE, Brier and NLL; temperature scaling fitted by NLL and folded into the
last dense layer of an exported model (no new operator, the TFLite 2.5 check passes)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_classifier

from opssat.judge import metrics


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n: int = 4000, true_t: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z), the model says softmax(z * true_t): too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, 3))
    truth = _softmax(logits)
    targets = np.array([rng.choice(3, p=p) for p in truth])
    return _softmax(logits * true_t), truth, targets


def test_calibration_figures_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    targets = np.array([0, 1, 0, 1])
    found = metrics.calibration(probs, targets)
    # Bin (0.8, 0.9]: confidence 0.9, accuracy 0.5; (0.5, 0.6]: 0.6 vs 1; (0.6, 0.7]: 0.7 vs 1.
    assert found.ece == pytest.approx(0.5 * 0.4 + 0.25 * 0.4 + 0.25 * 0.3)
    assert found.brier == pytest.approx((0.02 + 1.62 + 0.32 + 0.18) / 4)
    assert found.nll == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.6, 0.7])))
    assert [b[2] for b in found.bins] == [1, 1, 2]


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    overconfident, truth, targets = _overconfident()
    assert metrics.calibration(truth, targets).ece < 0.03
    assert metrics.calibration(overconfident, targets).ece > 0.1


def test_fitted_temperature_undoes_overconfidence_and_lowers_ece() -> None:
    overconfident, _, targets = _overconfident()
    t = metrics.fit_temperature(overconfident, targets)
    assert t == pytest.approx(2.5, rel=0.1)
    scaled = metrics.scale_temperature(overconfident, t)
    assert np.array_equal(scaled.argmax(axis=1), overconfident.argmax(axis=1))
    assert metrics.calibration(scaled, targets).ece < 0.03
    assert metrics.calibration(scaled, targets).nll < metrics.calibration(overconfident,
                                                                          targets).nll


def test_cross_fitted_temperature_never_uses_a_folds_own_images() -> None:
    overconfident, _, targets = _overconfident(n=600)
    groups = np.arange(600) % 3
    poisoned = overconfident.copy()
    poisoned[groups == 0] = np.eye(3)[(targets[groups == 0] + 1) % 3] * 0.98 + 0.01
    scaled, temperatures = metrics.cross_fitted(poisoned, targets, groups)
    # Fold 0's T comes from folds 1 and 2 alone: the same as fitting on them directly.
    assert temperatures[0] == pytest.approx(
        metrics.fit_temperature(overconfident[groups != 0], targets[groups != 0]), rel=1e-3)
    assert temperatures[1] != pytest.approx(temperatures[0], rel=0.05)
    assert np.allclose(scaled.sum(axis=1), 1)


def test_no_error_means_nothing_to_fit() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    assert metrics.fit_temperature(probs, [0, 1]) == 1.0


def test_ensemble_members_are_scaled_then_averaged() -> None:
    a = np.array([[0.9, 0.1]])
    b = np.array([[0.4, 0.6]])
    got = metrics.scale_temperature([a, b], 2.0)
    want = (_softmax(np.log(a) / 2) + _softmax(np.log(b) / 2)) / 2
    assert np.allclose(got, want)


@pytest.mark.slow
def test_temperature_folded_into_the_dense_layer_exports_the_scaled_probabilities() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from opssat.onboard import tflite25
    from opssat.train import export

    model = tiny_classifier(["red", "green", "blue"], 16)
    images = np.random.default_rng(2).uniform(0, 1, (6, 16, 16, 3)).astype(np.float32)
    before = model.predict(images, verbose=0)
    plain = export.tflite_bytes(model)
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / 1.7, bias / 1.7])
    folded = export.tflite_bytes(model)
    assert tflite25.problems(folded) == []
    ops = [tflite25.operators(data) for data in (plain, folded)]
    assert ops[0] == ops[1]
    interpreter = Interpreter(model_content=folded)
    interpreter.allocate_tensors()
    got = []
    for image in images:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    assert np.allclose(got, metrics.scale_temperature(before, 1.7), atol=1e-5)
    assert not np.allclose(got, before, atol=1e-3)
