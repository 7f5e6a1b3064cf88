"""Every script's flags: the shared ones declared once (same help wherever they appear),
and --help that imports no TensorFlow nor scikit-learn (so it answers at once; the
times are bench/bench_help.py's)."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import pytest
from helpers import PROJECT

from opssat.core import flags
from opssat.judge import shared_options

SPEC = importlib.util.spec_from_file_location("write_flags_doc",
                                              PROJECT / "tools" / "write_flags_doc.py")
write_flags_doc = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(write_flags_doc)

SCRIPTS = write_flags_doc.SCRIPTS
SHARED = (*write_flags_doc.SHARED, *write_flags_doc.IN_FLAGS_MD)
#: A flag of the same name that is a different option: the threshold package_smartcam.py
#: configures (its default is suggested from the evaluation), not the one it classifies with.
OWN_ON_PURPOSE = {("package_smartcam.py", "--threshold")}

#: Builds every parser, the trainer's included, and says which heavy modules came in.
PROBE = """
import sys
sys.path.insert(0, {tools!r})
import write_flags_doc
from opssat.train import make_image_classifier
for name in write_flags_doc.SCRIPTS:
    write_flags_doc.load_script(name).build_parser().format_help()
make_image_classifier.build_parser().format_help()
write_flags_doc.scripts_document()
print(sorted(m for m in ("tensorflow", "tf_keras", "keras", "sklearn") if m in sys.modules))
"""


def test_every_parser_builds_without_tensorflow():
    done = subprocess.run([sys.executable, "-c", PROBE.format(tools=str(PROJECT / "tools"))],
                          cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_top_level_script_is_documented():
    scripts = {path.name for path in PROJECT.glob("*.py")}
    assert scripts == set(SCRIPTS)


def _shared_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {spelling: action for action in parser._actions for spelling in action.option_strings}


@pytest.mark.parametrize("script", SCRIPTS)
def test_shared_flags_come_from_their_one_declaration(script):
    parser = write_flags_doc.load_script(script).build_parser()
    actions = _shared_actions(parser)
    for group in SHARED:
        for flag in flags.flags_of(group):
            action = actions.get(f"--{flag.name}")
            if action is None or (script, f"--{flag.name}") in OWN_ON_PURPOSE:
                continue
            assert action.help.startswith(flag.help.replace("%", "%%")), (script, flag.name)
            assert set(flag.spellings) <= set(action.option_strings), (script, flag.name)


def test_help_texts_of_a_shared_flag_are_one():
    # The drift this replaces: --threshold said three different things in four scripts.
    shared = {f"--{f.name}" for g in SHARED for f in flags.flags_of(g)}
    assert {"--threshold", "--model_file", "--smartcam_dir", "--preprocess"} <= shared
    helps: dict[str, set[str]] = {}
    for script in SCRIPTS:
        for spelling, action in _shared_actions(
                write_flags_doc.load_script(script).build_parser()).items():
            if spelling in shared and (script, spelling) not in OWN_ON_PURPOSE:
                helps.setdefault(spelling, set()).add(action.help)
    assert {name: texts for name, texts in helps.items() if len(texts) > 1} == {}
    assert len(helps["--threshold"]) == 1 and len(helps["--smartcam_dir"]) == 1


def test_label_image_keeps_its_short_flags():
    parser = write_flags_doc.load_script("label_image.py").build_parser()
    args = parser.parse_args(["-i", "x.jpg", "-m", "m.tflite", "-l", "l.txt", "-t", "0.5"])
    assert (args.model_file, args.label_file, args.threshold) == ("m.tflite", "l.txt", 0.5)


def test_group_seconds_keeps_its_dashed_spelling():
    parser = write_flags_doc.load_script("split_data.py").build_parser()
    assert parser.parse_args(["m", "20", "--group-seconds", "5"]).group_seconds == "5"
    assert shared_options.Bursts().group_seconds == "60"


@pytest.mark.slow  # one Python start per script; each must not import TensorFlow
@pytest.mark.parametrize("script", [*SCRIPTS, "-m opssat.train.make_image_classifier"])
def test_help_answers_without_tensorflow_or_sklearn(script):
    start = (f"runpy.run_module('{script.split()[-1]}', run_name='__main__')"
             if script.startswith("-m") else f"runpy.run_path('{script}', run_name='__main__')")
    run = (f"import runpy, sys; sys.argv = ['{script}', '--help']\n"
           f"try:\n    {start}\n"
           "except SystemExit as end:\n"
           "    assert end.code in (0, None), end.code\n"
           "print('tensorflow' in sys.modules or 'sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", run], cwd=PROJECT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and done.stdout.strip().endswith("False"), done.stdout[-200:]


def test_train_sh_help_is_the_trainers():
    done = subprocess.run([str(PROJECT / "train.sh"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: ./train.sh" in done.stdout
    for flag in ("--preprocess", "--train_preprocess", "--all_data", "--recipe", "--model"):
        assert flag in done.stdout


def test_crossval_keeps_its_old_flags_and_passes_the_rest_to_the_trainer():
    parser = write_flags_doc.load_script("crossval.py").build_parser()
    args, rest = parser.parse_known_args(
        ["m", "--nostress", "--folds", "3", "--group-seconds", "5", "--top_up", "bad=2",
         "--preprocess", "onboard", "--train_epochs", "2", "--modes", "onboard"])
    assert (args.stress, args.folds, args.group_seconds, args.top_up, args.modes) == \
        (False, 3, "5", ["bad=2"], "onboard")
    assert rest == ["--preprocess", "onboard", "--train_epochs", "2"]
    assert parser.parse_known_args(["m"])[0].stress is True
