"""Preprocessing, declared once: the option group every command line takes
(``--preprocess``, ``--onboard_channels``; the trainer's old ``--train_preprocess`` is an
alias) and the ``Preprocessing`` value built from it, which ``images.load_pixels`` turns
into pixels. The trainer, cross-validation and the labelling scripts all read the same
declaration, and every confidences CSV and train_record.json keeps the value
(``to_dict``), so a report shows the input the model really saw.

To add a setting: a field in ``PreprocessOptions`` and the same name at the end of
``Preprocessing`` (here), its use in ``images.load_pixels``, and the regenerated
docs/flags.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from opssat.core import flags
from opssat.core.errors import UserError
from opssat.core.flags import option
from opssat.onboard import chain, jpeg, smartcam

#: ``ground``: colour Pillow resize (what ground tools did); ``onboard``: what SmartCam does.
PREPROCESS_MODES = ("ground", "onboard")
#: Channel counts the on-board resizer can be configured with (1: grayscale).
ONBOARD_CHANNEL_CHOICES = (1, 3)


@dataclass
class PreprocessOptions:
    """preprocessing: how a file becomes the model's input"""

    preprocess: str = option(
        "ground", "ground: colour bilinear resize, as ground tools did; onboard: as SmartCam "
        "prepares images (its resizer, JPEG at quality 90, its decoder)",
        choices=PREPROCESS_MODES, aliases=("--train_preprocess",))
    onboard_channels: int = option(
        smartcam.ONBOARD_CHANNELS, "channels SmartCam's resizer keeps for --preprocess onboard "
        "(1: grayscale, as SmartCam's default configuration)", choices=ONBOARD_CHANNEL_CHOICES)

    def check(self) -> None:
        """Refuse a value outside its declared choices or limits, naming the flag."""
        check_preprocessing(self.preprocess, self.onboard_channels)
        flags.check_values(self)

    def preprocessing(self, **overrides: Any) -> Preprocessing:
        """The one place a ``Preprocessing`` is made from options (checked first);
        ``overrides`` sets what the model decides (``size``, ``mean``, ``std``)."""
        self.check()
        values = {field.name: getattr(self, field.name)
                  for field in dataclasses.fields(PreprocessOptions)}
        values["mode"] = values.pop("preprocess")
        return Preprocessing(**{**values, **overrides})

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PreprocessOptions:
        return flags.from_values(cls, vars(args))


def check_preprocessing(mode: str, onboard_channels: int, flag: str = "--preprocess") -> None:
    """Refuse an unknown mode or channel count, naming the command-line ``flag``."""
    if mode not in PREPROCESS_MODES:
        raise UserError(f"unknown {flag} {mode!r}: use one of {', '.join(PREPROCESS_MODES)}")
    if onboard_channels not in ONBOARD_CHANNEL_CHOICES:
        raise UserError(f"--onboard_channels must be 1 or 3, not {onboard_channels}")


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes model input, as one value: the resize ``mode`` (one of
    PREPROCESS_MODES) with its on-board channel count, the (height, width) ``size``,
    and the input scaling (pixel - ``mean``) / ``std``. Checked when made."""

    mode: str = "ground"
    onboard_channels: int = smartcam.ONBOARD_CHANNELS
    size: tuple[int, int] = smartcam.INPUT_SIZE
    mean: float = smartcam.INPUT_MEAN
    std: float = smartcam.INPUT_STD

    def __post_init__(self) -> None:
        check_preprocessing(self.mode, self.onboard_channels)
        size = tuple(int(n) for n in self.size)
        if len(size) != 2 or min(size) < 1:
            raise UserError(f"image size {self.size} must be two positive numbers")
        object.__setattr__(self, "size", size)
        if not math.isfinite(self.mean):
            raise UserError(f"--input_mean must be a finite number, not {self.mean}")
        if not math.isfinite(self.std) or self.std == 0:
            raise UserError(f"--input_std must be a finite number other than 0, not {self.std}")

    def at_size(self, size: tuple[int, int] | int) -> Preprocessing:
        """The same preprocessing at another (height, width), or a square ``size``."""
        return replace(self, size=(size, size) if isinstance(size, int) else size)

    @property
    def name(self) -> str:
        """How pages caption it: the mode, with the channel count when it is not 1."""
        if self.mode == "ground" or self.onboard_channels == 1:
            return self.mode
        return f"{self.mode}, {self.onboard_channels} channels"

    @property
    def identity(self) -> str:
        """A short key that changes whenever the model input would: the settings and
        the code that turns a file into pixels (every field, so a new setting counts
        without a change here). Caches of model inputs key on it."""
        settings = "|".join(f"{value:g}" if isinstance(value, float) else
                            "x".join(map(str, value)) if isinstance(value, tuple) else str(value)
                            for value in dataclasses.astuple(self))
        return f"{settings}|code {_preprocessing_code()}"

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON keeps them (CSV sidecars, train_record.json)."""
        return {**dataclasses.asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        """The value ``to_dict`` wrote (unknown keys ignored); UserError when it is not one."""
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except (TypeError, ValueError) as err:
            raise UserError(f"not a preprocessing record: {values!r} ({err})") from err


@lru_cache(maxsize=1)
def _preprocessing_code() -> str:
    """A hash of this module, opssat.data.images, opssat.onboard.chain and
    opssat.onboard.jpeg, so that a change to how images are decoded or prepared remakes
    cached inputs instead of reusing stale ones."""
    digest = hashlib.sha1()
    here = Path(__file__)
    for module_file in (here, here.with_name("images.py"), chain.__file__, jpeg.__file__):
        digest.update(Path(module_file).read_bytes())
    return digest.hexdigest()[:12]


#: SmartCam's input size and scaling, ground (colour, bilinear) resize.
GROUND = Preprocessing()


def preprocessing_from_args(args: argparse.Namespace, **overrides: Any) -> Preprocessing:
    """The Preprocessing of the group's flags (``flags.add_flags(parser, [PreprocessOptions])``),
    and of ``--input_mean`` and ``--input_std`` where a script has them."""
    for name in ("mean", "std"):
        if getattr(args, f"input_{name}", None) is not None:
            overrides.setdefault(name, getattr(args, f"input_{name}"))
    return PreprocessOptions.from_args(args).preprocessing(**overrides)
