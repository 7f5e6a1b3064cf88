"""Augmentation for orbit imagery, applied to the model input as the chosen
preprocessing makes it (float32 in [0, 1], ground or on-board), and kept there.

A thumbnail has no "up": flips and quarter turns give eight equally likely views
of the same scene. Most ``bad`` frames are exposure failures, so brightness,
contrast and exposure changes go far enough to saturate toward white and black.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from opssat.core.errors import UserError

Augment = Callable[[np.ndarray], np.ndarray]

#: (flag, lowest, highest) of each range.
LIMITS = {
    "brightness_delta": (0.0, 1.0),
    "contrast_range": (0.0, 1.0),
    "exposure_stops": (0.0, 4.0),
}


@dataclass(frozen=True)
class OrbitAugmentation:
    """One random draw per image of each change below (0 turns a change off).

    Attributes:
      flips: random horizontal and vertical flips and quarter turns
      brightness_delta: an offset drawn from [-delta, delta] is added
      contrast_range: the distance to the image mean is scaled by a factor drawn from
        [1 - range, 1 + range]
      exposure_stops: the image is multiplied by 2**s, s drawn from [-stops, stops]; a
        gain above 1 saturates bright parts to white
    """

    flips: bool = True
    brightness_delta: float = 0.1
    contrast_range: float = 0.3
    exposure_stops: float = 1.0

    def check(self) -> None:
        """One clear line for a range outside its limits."""
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise UserError(f"--{name} must be in [{low:g}, {high:g}], not {value}")

    @property
    def identity(self) -> str:
        return "|".join(f"{k}={v}" for k, v in asdict(self).items())

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A changed copy of a (size, size, 3) image in [0, 1], float32 in [0, 1]."""
        out = np.asarray(image, dtype=np.float32)
        if self.flips:
            out = np.rot90(out, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                out = out[:, ::-1]
        if self.exposure_stops:
            out = out * np.float32(2.0 ** rng.uniform(-self.exposure_stops,
                                                      self.exposure_stops))
        if self.contrast_range:
            factor = rng.uniform(1 - self.contrast_range, 1 + self.contrast_range)
            mean = out.mean()
            out = (out - mean) * np.float32(factor) + mean
        if self.brightness_delta:
            out = out + np.float32(rng.uniform(-self.brightness_delta, self.brightness_delta))
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def chain(steps: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]],
          seed: int) -> Augment | None:
    """One augment function applying ``steps`` in order, each call with fresh randomness.

    The result is float32 clipped to [0, 1] whatever the steps do. None without steps.
    """
    if not steps:
        return None
    seeds = np.random.SeedSequence(seed)

    def augment(image: np.ndarray) -> np.ndarray:
        # A child generator per call: tf.data calls this from several threads at once.
        rng = np.random.default_rng(seeds.spawn(1)[0])
        out = image
        for step in steps:
            out = step(out, rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    return augment


def keras_transforms(ranges: dict) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """The original make_image_classifier's augmentation (``--do_data_augmentation``):
    Keras' ImageDataGenerator random rotations, shifts, shear, zoom and flips."""
    from opssat.core.tf_setup import tf_keras

    generator = tf_keras.preprocessing.image.ImageDataGenerator(**ranges)

    def transform(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return generator.random_transform(image, seed=int(rng.integers(2**31)))

    return transform
