"""--average_last_epochs: the exported weights are the mean of the last epochs' weights."""

from __future__ import annotations

import numpy as np
import pytest

from opssat.core.errors import UserError
from opssat.train.options import TrainOptions


@pytest.mark.slow
def test_the_model_ends_with_the_mean_of_the_last_epochs_weights() -> None:
    from opssat.core.tf_setup import tf_keras
    from opssat.train.averaging import LastEpochsAverage

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    model.compile(tf_keras.optimizers.SGD(0.1), "mse")
    seen: list[list[np.ndarray]] = []
    keep = tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(model.get_weights()))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = x[:, :2] * 3
    # The averaging callback goes last, so ``seen`` holds each epoch's own weights.
    model.fit(x, y, epochs=5, batch_size=4, verbose=0, callbacks=[keep, LastEpochsAverage(2)])
    for index, final in enumerate(model.get_weights()):
        assert np.allclose(final, np.mean([w[index] for w in seen[2:]], axis=0), atol=1e-6)
        assert not np.allclose(final, seen[-1][index])


def test_averaging_and_early_stopping_exclude_each_other() -> None:
    options = TrainOptions.from_flags(average_last_epochs=3, early_stopping_patience=2)
    with pytest.raises(UserError, match="exclude each other"):
        options.check_settings()
    with pytest.raises(UserError, match="average_last_epochs"):
        TrainOptions.from_flags(average_last_epochs=-1).check_settings()
    TrainOptions.from_flags(average_last_epochs=3).check_settings()
