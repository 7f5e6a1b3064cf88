"""Named training recipes, each declared once: its trainer flags, the synthetic top-up its
training data gets, and what it is for. ``train.sh --recipe NAME``, ``crossval.py --recipe
NAME``, the demo and ``bench/bench_recipes.py`` all read them from here, so a recipe that
cross-validation chose is the one that gets trained and documented.

A recipe's flags are trainer flags without ``--seed``; flags given after ``--recipe`` win.
A measured recipe carries ``--temperature T``: the mean over seeds 42, 7 and 123 of the T
that ``bench/bench_recipes.py`` (``crossval.py``) fitted on its out-of-fold probabilities
(docs/results.md), so the model it trains gives calibrated probabilities although it
keeps no validation split; cross-validation trains its folds with ``--temperature off``.
Its top-up (``label``, count) is applied by crossval to each training fold, and by the demo
with ``make_sample_data.py --top_up`` before training.
"""

from __future__ import annotations

from dataclasses import dataclass

from opssat.core.errors import UserError
from opssat.core.flags import option


@dataclass(frozen=True)
class Recipe:
    name: str
    flags: tuple[str, ...]
    summary: str
    top_up: tuple[tuple[str, int], ...] = ()

    def top_up_flags(self) -> list[str]:
        """The top-up as ``make_sample_data.py`` / ``crossval.py`` flags."""
        return [flag for label, count in self.top_up for flag in ("--top_up", f"{label}={count}")]


_BASE = ("--backbone", "efficientnet_lite0", "--validation_split", "0")
_FROZEN = (*_BASE, "--nodo_fine_tuning", "--train_epochs", "15", "--preprocess", "onboard")
_AUGMENT = ("--orbit_augmentation", "--augmented_views", "4")
_FINE_TUNE = (*_BASE, "--preprocess", "onboard", "--do_fine_tuning", "--optimizer", "adam",
              "--learning_rate", "0.001", "--train_epochs", "18", "--fine_tune_after_epochs",
              "15", "--fine_tuning_learning_rate", "1e-5",
              "--fine_tuning_head_learning_rate", "1e-5")
_STRONG = (*_BASE, "--preprocess", "onboard", "--do_fine_tuning", "--optimizer", "adam",
           "--learning_rate", "0.001", "--train_epochs", "20", "--fine_tune_after_epochs", "15",
           "--fine_tuning_learning_rate", "1e-4", "--fine_tuning_head_learning_rate", "1e-4")
#: The trainer's defaults but for the backbone, on-board input and 10 epochs.
_AT_DEFAULTS = ("--backbone", "efficientnet_lite0", "--preprocess", "onboard",
                "--train_epochs", "10")
_FINE_TUNE_AT_DEFAULTS = (*_AT_DEFAULTS, "--do_fine_tuning")
_BAD_TOP_UP = (("bad", 20),)
#: The bad top-up plus 20 real earth/edge frames made brighter below the bad line (issue 26).
_BRIGHT_TOP_UP = (("bad", 20), ("bright", 20))
#: The same, the bright frames made from the very frames the bad top-up over-exposes.
_PAIRED_TOP_UP = (("bad", 20), ("bright_paired", 20))
#: Orbit augmentation cut to random flips and quarter turns, which keep any frame's label.
_FLIPS = ("--orbit_augmentation", "--brightness_delta", "0", "--contrast_range", "0",
          "--exposure_stops", "0")
#: The paired candidates' training: exposure shares, the head going on at 1e-3 while the
#: backbone fine-tunes at 1e-4.
_EXPOSURE_TWO_RATES = (*_STRONG, "--exposure_features", "--fine_tuning_head_learning_rate",
                       "1e-3")
#: Three members (seeds --seed to --seed+2) averaged into one model's weights.
_SOUP3 = ("--ensemble_seeds", "3", "--ensemble", "soup")


def _declare(*recipes: Recipe) -> dict[str, Recipe]:
    return {recipe.name: recipe for recipe in recipes}


RECIPES: dict[str, Recipe] = _declare(
    Recipe("frozen", _FROZEN, "frozen Lite0, 15 epochs, on-board training input"),
    Recipe("frozen_ground", (*_BASE, "--nodo_fine_tuning", "--train_epochs", "15",
                             "--preprocess", "ground"),
           "the same, trained on ground (colour) input"),
    Recipe("frozen_top_up", (*_FROZEN, "--temperature", "0.405"),
           "frozen + 20 bad over-exposed from real frames; T fitted out of fold", _BAD_TOP_UP),
    Recipe("frozen_top_up_average", (*_FROZEN, "--average_last_epochs", "3"),
           "frozen_top_up, exporting the mean weights of its last 3 epochs", _BAD_TOP_UP),
    Recipe("frozen_augment", (*_FROZEN, *_AUGMENT),
           "frozen + orbit augmentation, 4 cached views"),
    Recipe("fine_tune_augment", (*_FINE_TUNE, *_AUGMENT),
           "15 head epochs (adam 1e-3), 3 fine-tuning epochs (adam 1e-5), augmented"),
    Recipe("fine_tune", _FINE_TUNE, "the same fine-tuning, no augmentation"),
    Recipe("fine_tune_strong", _STRONG,
           "15 head epochs, then 5 fine-tuning epochs at 1e-4 (adam), no augmentation"),
    Recipe("fine_tune_strong_top_up", (*_STRONG, "--temperature", "0.400"),
           "fine_tune_strong + 20 bad over-exposed from real frames; T fitted out of fold",
           _BAD_TOP_UP),
    Recipe("fine_tune_strong_top_up_average", (*_STRONG, "--average_last_epochs", "3"),
           "fine_tune_strong_top_up, exporting the mean weights of its last 3 epochs",
           _BAD_TOP_UP),
    Recipe("frozen_top_up_bright", _FROZEN, "frozen_top_up + 20 bright-but-valid earth/edge "
           "frames (brightened real ones, labels kept)", _BRIGHT_TOP_UP),
    Recipe("frozen_top_up_drawn", _FROZEN, "frozen + 20 bad drawn from scratch (the earlier "
           "synthetic top-up)", (("bad_drawn", 20),)),
    Recipe("frozen_top_up_10", _FROZEN, "frozen + 10 bad over-exposed from real frames",
           (("bad", 10),)),
    Recipe("frozen_top_up_no_smoothing", (*_FROZEN, "--label_smoothing", "0"),
           "frozen_top_up without label smoothing", _BAD_TOP_UP),
    Recipe("frozen_top_up_ensemble3", (*_FROZEN, "--ensemble_seeds", "3", "--temperature", "0.399"),
           "frozen_top_up, three members averaged in one graph (one shared backbone)",
           _BAD_TOP_UP),
    Recipe("fine_tune_strong_top_up_bright", _STRONG,
           "fine_tune_strong_top_up + 20 bright-but-valid earth/edge frames", _BRIGHT_TOP_UP),
    Recipe("fine_tune_strong_top_up_bright10", _STRONG,
           "fine_tune_strong_top_up + 10 bright-but-valid earth/edge frames",
           (("bad", 20), ("bright", 10))),
    Recipe("fine_tune_strong_top_up_drawn", _STRONG,
           "fine_tune_strong + 20 bad drawn from scratch (the earlier synthetic top-up)",
           (("bad_drawn", 20),)),
    Recipe("fine_tune_strong_top_up_exposure", (*_STRONG, "--exposure_features"),
           "fine_tune_strong_top_up + the shares of clipped, bright and dark pixels beside "
           "the backbone's features", _BAD_TOP_UP),
    Recipe("fine_tune_strong_top_up_bright_exposure",
           (*_STRONG, "--exposure_features", "--temperature", "0.402"),
           "fine_tune_strong_top_up_bright + the exposure shares (offered before the paired "
           "top-up); T fitted out of fold", _BRIGHT_TOP_UP),
    Recipe("fine_tune_strong_top_up_bright30_exposure", (*_STRONG, "--exposure_features"),
           "fine_tune_strong_top_up + 30 bright-but-valid frames + the exposure shares",
           (("bad", 20), ("bright", 30))),
    Recipe("fine_tune_longer_top_up_bright_exposure",
           (*_STRONG, "--exposure_features", "--train_epochs", "23"),
           "fine_tune_strong_top_up_bright_exposure with 8 fine-tuning epochs instead of 5",
           _BRIGHT_TOP_UP),
    Recipe("fine_tune_short_top_up_bright_exposure",
           (*_STRONG, "--exposure_features", "--train_epochs", "18"),
           "fine_tune_strong_top_up_bright_exposure with 3 fine-tuning epochs instead of 5",
           _BRIGHT_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired", _STRONG,
           "fine_tune_strong_top_up + 20 bright-valid frames made from the very frames the "
           "bad top-up over-exposes", _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure", (*_STRONG, "--exposure_features"),
           "fine_tune_strong_top_up_bright_exposure, the bright frames made from the very "
           "frames the bad top-up over-exposes", _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_two_rates",
           (*_EXPOSURE_TWO_RATES, "--temperature", "0.442"),
           "fine_tune_strong_top_up_paired_exposure, the head going on at 1e-3 with its "
           "optimizer while the backbone fine-tunes at 1e-4 (offered before its soup); T "
           "fitted out of fold",
           _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_unweighted",
           (*_STRONG, "--exposure_features", "--class_weights", "none"),
           "fine_tune_strong_top_up_paired_exposure with every image weighing 1 (the extra "
           "earth/edge frames no longer raise the weight of bad)", _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_two_rates_unweighted",
           (*_EXPOSURE_TWO_RATES, "--class_weights", "none"),
           "fine_tune_strong_top_up_paired_exposure_two_rates with every image weighing 1",
           _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_soup3", (*_STRONG, *_SOUP3),
           "fine_tune_strong_top_up, one model with the mean weights of three seeds' members",
           _BAD_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_two_rates_soup3",
           (*_EXPOSURE_TWO_RATES, *_SOUP3, "--temperature", "0.392"),
           "fine_tune_strong_top_up_paired_exposure_two_rates, one model with the mean "
           "weights of three seeds' members: offered for cloud-heavy scenes (better on both "
           "stress families, 0.021 below on the plain folds); T fitted out of fold",
           _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_flips", (*_STRONG, *_FLIPS),
           "fine_tune_strong_top_up, every training image flipped and turned at random in "
           "every epoch", _BAD_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_two_rates_flips",
           (*_EXPOSURE_TWO_RATES, *_FLIPS),
           "fine_tune_strong_top_up_paired_exposure_two_rates with random flips and turns",
           _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired_exposure_two_rates_flips_soup3",
           (*_EXPOSURE_TWO_RATES, *_FLIPS, *_SOUP3),
           "fine_tune_strong_top_up_paired_exposure_two_rates_flips, one model with the mean "
           "weights of three seeds' members", _PAIRED_TOP_UP),
    Recipe("fine_tune_strong_top_up_paired10_exposure", (*_STRONG, "--exposure_features"),
           "fine_tune_strong_top_up_paired_exposure with 10 paired bright frames instead of 20",
           (("bad", 20), ("bright_paired", 10))),
    Recipe("fine_tune_strong_top_up_bright10_exposure", (*_STRONG, "--exposure_features"),
           "fine_tune_strong_top_up_bright10 + the exposure shares",
           (("bad", 20), ("bright", 10))),
    Recipe("fine_tune_strong_top_up_mixed", _STRONG,
           "fine_tune_strong + 20 bad over-exposed from real frames and 20 drawn from scratch",
           (("bad", 20), ("bad_drawn", 20))),
    Recipe("fine_tune_strong_top_up_two_rates", (*_STRONG, "--fine_tuning_head_learning_rate",
                                                 "1e-3"),
           "fine_tune_strong_top_up, the head staying at 1e-3 while the backbone fine-tunes",
           _BAD_TOP_UP),
    Recipe("frozen_at_defaults", (*_AT_DEFAULTS, "--nodo_fine_tuning"),
           "the trainer's defaults (SGD 0.005, 20 % validation), frozen"),
    Recipe("fine_tune_at_defaults", _FINE_TUNE_AT_DEFAULTS,
           "--do_fine_tuning with every other flag at its default"),
    Recipe("frozen_at_defaults_exposure", (*_AT_DEFAULTS, "--nodo_fine_tuning",
                                           "--exposure_features"),
           "frozen_at_defaults + the exposure shares"),
    Recipe("fine_tune_at_defaults_exposure", (*_FINE_TUNE_AT_DEFAULTS, "--exposure_features"),
           "fine_tune_at_defaults + the exposure shares"),
    Recipe("fine_tune_at_defaults_rate10",
           (*_FINE_TUNE_AT_DEFAULTS, "--fine_tuning_learning_rate", "5e-4"),
           "fine_tune_at_defaults with the backbone at --learning_rate / 10"),
    Recipe("fine_tune_at_defaults_rate10000",
           (*_FINE_TUNE_AT_DEFAULTS, "--fine_tuning_learning_rate", "5e-7"),
           "fine_tune_at_defaults with the backbone at --learning_rate / 10000 (nearly frozen)"),
    Recipe("fine_tune_at_defaults_average",
           (*_FINE_TUNE_AT_DEFAULTS, "--average_last_epochs", "5"),
           "fine_tune_at_defaults, exporting the mean weights of its 5 fine-tuning epochs"),
    Recipe("fine_tune_at_defaults_average3",
           (*_FINE_TUNE_AT_DEFAULTS, "--average_last_epochs", "3"),
           "fine_tune_at_defaults, exporting the mean weights of its last 3 epochs"),
    Recipe("fine_tune_one_stage", (*_FINE_TUNE_AT_DEFAULTS, "--fine_tune_after_epochs", "0"),
           "TF Hub's one-stage schedule: unfrozen from epoch 1 at SGD 0.005"),
)
#: The recipe cross-validation chose over seeds (docs/results.md): the demo's and the README's.
RECOMMENDED = "fine_tune_strong_top_up"
#: ``--recipe recommended`` names whichever recipe is recommended now.
ALIASES = {"recommended": RECOMMENDED}


def get(name: str) -> Recipe:
    """The recipe called ``name`` (or an alias), or one line naming the choices."""
    recipe = RECIPES.get(ALIASES.get(name, name))
    if recipe is None:
        raise UserError(f"unknown recipe '{name}': use one of {', '.join([*ALIASES, *RECIPES])}")
    return recipe


def expand(argv: list[str]) -> list[str]:
    """``argv`` with each ``--recipe NAME`` (or ``--recipe=NAME``) replaced in place by the
    recipe's flags, so flags after it override the recipe and flags before it are overridden."""
    expanded: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--recipe":
            name = next(items, None)
            if name is None:
                raise UserError("--recipe needs a name: " + ", ".join([*ALIASES, *RECIPES]))
            expanded += get(name).flags
        elif arg.startswith("--recipe="):
            expanded += get(arg.removeprefix("--recipe=")).flags
        else:
            expanded.append(arg)
    return expanded


@dataclass
class RecipeName:
    """recipe by name: a named recipe's flags"""

    recipe: str | None = option(
        None, "a named recipe: its trainer flags, in place (flags after it win), and, in "
        "crossval.py, its synthetic top-up (unless --top_up is given): "
        + ", ".join([*ALIASES, *RECIPES]), metavar="NAME")
