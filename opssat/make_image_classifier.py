"""``python -m opssat.make_image_classifier``, the trainer's command line before the package had
stages; it lives in ``opssat.train.make_image_classifier``."""

from opssat.train.make_image_classifier import run

if __name__ == "__main__":
    run()
