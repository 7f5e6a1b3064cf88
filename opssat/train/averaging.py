"""Weight averaging: over the last epochs of training (``--average_last_epochs``), and
over the members of ``--ensemble_seeds N --ensemble soup``.

On a hundred images, the weights of the last epoch depend on the seed's last
few batches: the same recipe lands a few images apart from seed to seed. The
mean of the weights after each of the last epochs sits nearer the middle of the
region those epochs wander in (stochastic weight averaging, Izmailov et al.
2018). The backbone's batch norm stays in inference mode with its ImageNet
statistics, so the averaged weights need no statistics recomputed.

Members trained with different seeds from the same ImageNet weights, the backbone
moving little, lie in one basin too; the mean of their weights ("model soup",
Wortsman et al. 2022) is one model of one member's size and time on board.
"""

from __future__ import annotations

import numpy as np

from opssat.core.tf_setup import tf_keras


class LastEpochsAverage(tf_keras.callbacks.Callback):
    """Sum the model's weights after each epoch from ``first_epoch`` (0-based) on, and
    set their mean when training ends."""

    def __init__(self, first_epoch: int) -> None:
        super().__init__()
        self.first_epoch = first_epoch
        self.total: list[np.ndarray] | None = None
        self.count = 0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch < self.first_epoch:
            return
        weights = self.model.get_weights()
        if self.total is None:
            self.total = [w.astype(np.float64) for w in weights]
        else:
            for total, w in zip(self.total, weights, strict=True):
                total += w
        self.count += 1

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self.count or self.total is None:
            return
        current = self.model.get_weights()
        self.model.set_weights([(total / self.count).astype(w.dtype)
                                for total, w in zip(self.total, current, strict=True)])
        print(f"weights: the mean of the last {self.count} epochs' (--average_last_epochs)")


def mean_weights(models: list[tf_keras.Model]) -> list[np.ndarray]:
    """The element-wise mean of the weights of models of one architecture."""
    per_model = [model.get_weights() for model in models]
    return [np.mean([weights[k].astype(np.float64) for weights in per_model], axis=0)
            .astype(per_model[0][k].dtype) for k in range(len(per_model[0]))]
