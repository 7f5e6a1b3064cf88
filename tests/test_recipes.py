"""Named recipes (opssat/train/recipes.py): each parses as trainer flags, ``--recipe`` expands
in place so later flags win, and an unknown name is one line."""

from __future__ import annotations

import pytest

from opssat.core.errors import UserError
from opssat.train import options, recipes
from opssat.train.make_image_classifier import options_from_args


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_every_recipe_is_valid_trainer_flags(name, tmp_path):
    parsed = options.parse_flags([*recipes.get(name).flags, "--image_dir", str(tmp_path)])
    assert parsed.recipe.backbone == "efficientnet_lite0"


def test_recipe_expands_in_place_and_later_flags_win(tmp_path):
    argv = ["--image_dir", str(tmp_path), "--recipe", "fine_tune_strong", "--train_epochs", "3"]
    parsed = options_from_args(argv)
    assert parsed.schedule.train_epochs == 3
    assert parsed.schedule.fine_tune_after_epochs == 15
    before = options_from_args(["--image_dir", str(tmp_path), "--train_epochs", "3",
                                "--recipe=fine_tune_strong"])
    assert before.schedule.train_epochs == 20


def test_recommended_is_an_alias_with_a_top_up():
    recommended = recipes.get("recommended")
    assert recommended is recipes.RECIPES[recipes.RECOMMENDED]
    assert recommended.top_up_flags() == ["--top_up", "bad=20"]
    assert recipes.get("frozen").top_up_flags() == []
    # Its temperature, fitted out of fold, is folded into the model it trains.
    parsed = options.parse_flags([*recommended.flags, "--image_dir", "d"])
    assert float(parsed.recipe.temperature) == pytest.approx(0.400)


def test_frozen_recipes_stay_frozen_under_train_sh(tmp_path):
    # train.sh puts --do_fine_tuning before the user's flags.
    argv = ["--image_dir", str(tmp_path), "--do_fine_tuning", "--recipe", "frozen"]
    assert options_from_args(argv).schedule.do_fine_tuning is False


@pytest.mark.parametrize("argv", [["--recipe", "nope"], ["--recipe"]])
def test_an_unknown_or_missing_recipe_is_one_line(argv):
    with pytest.raises(UserError, match="recipe"):
        recipes.expand(argv)
