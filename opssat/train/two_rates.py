"""Fine-tuning with two learning rates: the head at its own, the backbone at a lower one.

After a head-only stage, TF Hub's tool and Keras' guide go on at one low rate for the
whole model, so the head, trained for only part of the epochs, all but stops learning:
fine-tuning then ends less trained (and less confident) than the frozen backbone with
the same epochs. Here the head keeps its rate while the pretrained backbone moves
slowly (discriminative learning rates, Howard and Ruder 2018). The wrapper only trains:
the classifier it wraps is what gets exported, unchanged.
"""

from __future__ import annotations

from opssat.core.tf_setup import tf, tf_keras


class TwoRateTraining(tf_keras.Model):
    """Trains ``classifier`` in place: ``backbone_variables`` with ``backbone_optimizer``,
    every other trainable variable with the optimizer given to ``compile``."""

    def __init__(self, classifier: tf_keras.Model, backbone_variables: list,
                 backbone_optimizer: tf_keras.optimizers.Optimizer) -> None:
        super().__init__(name="two_rate_training")
        self.classifier = classifier
        self.backbone_optimizer = backbone_optimizer
        self._backbone_refs = {v.ref() for v in backbone_variables}

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            predicted = self(x, training=True)
            loss = self.compute_loss(x, y, predicted, sample_weight)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        backbone, head = [], []
        for pair in zip(gradients, variables, strict=True):
            (backbone if pair[1].ref() in self._backbone_refs else head).append(pair)
        self.backbone_optimizer.apply_gradients(backbone)
        self.optimizer.apply_gradients(head)
        return self.compute_metrics(x, y, predicted, sample_weight)
