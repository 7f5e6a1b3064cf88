"""Options declared once, as dataclass fields that carry their own help, choices
and limits. From that one declaration come the command-line flags (absl-style
booleans as TF Hub's tools take them: ``--flag``, ``--flag=false``, ``--noflag``),
the range and choice checks, and the flag table of the docs.

    @dataclass
    class Schedule:
        \"\"\"schedule\"\"\"   # the first docstring line titles the --help section
        epochs: int = option(5, "epochs in all", limits=Limits(low=1))
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import typing
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opssat.core.errors import UserError

_NOTHING = dataclasses.MISSING


@dataclass(frozen=True)
class Limits:
    """The closed (or, with ``*_open``, open) range a number must lie in; NaN never does."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not isinstance(value, int | float) or math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.high is None:
            if self.low == 0 and self.low_open:
                return "a positive number"
            return f"above {self.low:g}" if self.low_open else f"at least {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")


def option(default: Any = _NOTHING, help: str = "", *,
           choices: Sequence = (), limits: Limits | None = None, tfhub: bool = False,
           metavar: str | None = None, aliases: Sequence[str] = ()) -> Any:
    """A dataclass field that is also a flag; ``tfhub`` marks the flags of TF Hub's
    make_image_classifier; ``aliases`` are other spellings the command line also takes
    (old names, ``-t``). A list default is copied for each instance."""
    if not help:
        raise ValueError("every option needs its help text")
    metadata = {"help": help, "choices": tuple(choices), "limits": limits, "tfhub": tfhub,
                "metavar": metavar, "aliases": tuple(aliases)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Flag:
    """One option as the command line sees it."""

    name: str
    kind: type  # bool, int, float, str or Path
    many: bool  # a list: the flag may be repeated
    default: Any
    help: str
    choices: tuple
    limits: Limits | None
    tfhub: bool
    metavar: str | None
    aliases: tuple[str, ...] = ()

    @property
    def spellings(self) -> list[str]:
        """``--name`` and its aliases, as the command line takes them."""
        return [f"--{self.name}", *self.aliases]

    @property
    def shown_default(self) -> str | None:
        """The default as --help and the docs show it (None: no default worth showing)."""
        if self.kind is bool:
            return str(self.default).lower()
        if self.default is None or self.default == []:
            return None
        return str(self.default)


def section_title(group: type) -> str:
    """A group's --help section title: the first line of its docstring."""
    return (inspect.getdoc(group) or group.__name__).splitlines()[0]


def flags_of(group: type) -> list[Flag]:
    """The flags of one option dataclass, in declaration order."""
    hints = typing.get_type_hints(group)
    found = []
    for spec in dataclasses.fields(group):
        kind, many = _flag_type(hints[spec.name])
        default = (spec.default_factory() if spec.default_factory is not _NOTHING
                   else spec.default)
        meta = spec.metadata
        found.append(Flag(spec.name, kind, many, default, meta["help"], meta["choices"],
                          meta["limits"], meta["tfhub"], meta["metavar"],
                          meta.get("aliases", ())))
    return found


def _flag_type(hint: Any) -> tuple[type, bool]:
    """(element type, is a list) of ``int``, ``int | None``, ``list[str]`` and so on."""
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:
        (hint,) = args
    if hint not in (bool, int, float, str, Path):
        raise TypeError(f"no flag for type {hint!r}")
    return hint, False


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "t", "y"):
        return True
    if lowered in ("false", "0", "no", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_flags(parser: argparse.ArgumentParser, groups: Iterable[type],
              skip: Collection[str] = ()) -> None:
    """One --help section per option group, one flag per field (``--no<flag>`` too for
    booleans, as absl's), but those named in ``skip`` (a tool that has no use for
    them: they keep their defaults)."""
    for group in groups:
        section = parser.add_argument_group(section_title(group))
        for flag in flags_of(group):
            if flag.name not in skip:
                _add_flag(section, flag)


def names_of(groups: Iterable[type]) -> dict[str, str]:
    """Every spelling of the groups' flags, without dashes (aliases included) -> the
    option's name: for callers that pass options by name, old names too."""
    return {spelling.lstrip("-"): flag.name for group in groups for flag in flags_of(group)
            for spelling in flag.spellings}


def _add_flag(section: argparse._ArgumentGroup, flag: Flag) -> None:
    text = flag.help.replace("%", "%%") + _note(flag)
    if flag.kind is bool:
        section.add_argument(*flag.spellings, dest=flag.name, nargs="?", const=True,
                             default=flag.default, type=parse_bool, metavar="BOOL", help=text)
        section.add_argument(f"--no{flag.name}", dest=flag.name, action="store_false",
                             help=argparse.SUPPRESS)
        return
    extra: dict[str, Any] = {"choices": flag.choices} if flag.choices else {}
    if flag.many:
        extra["action"] = "append"
    if flag.metavar:
        extra["metavar"] = flag.metavar
    section.add_argument(*flag.spellings, dest=flag.name, type=flag.kind,
                         default=flag.default, help=text, **extra)


def _note(flag: Flag) -> str:
    """`` (in [0, 1]; default: 0.2)``: the limits and default --help adds to the help."""
    notes = [str(flag.limits)] if flag.limits else []
    if flag.shown_default is not None:
        notes.append(f"default: {flag.shown_default}")
    return f" ({'; '.join(notes)})" if notes else ""


def from_values(group: type, values: dict[str, Any]) -> Any:
    """An instance of ``group`` from the parsed flags (other names are ignored)."""
    return group(**{spec.name: values[spec.name] for spec in dataclasses.fields(group)
                    if spec.name in values})


def check_values(options: Any) -> None:
    """Refuse a value outside its declared choices or limits, naming the flag."""
    for flag in flags_of(type(options)):
        value = getattr(options, flag.name)
        values = value if flag.many else [value]
        for item in values:
            if item is None:
                continue
            if flag.choices and item not in flag.choices:
                raise UserError(f"unknown --{flag.name} {item!r}: use one of "
                                f"{', '.join(map(str, flag.choices))}")
            if flag.limits and item not in flag.limits:
                raise UserError(f"--{flag.name} must be {flag.limits}, not {item}")


def markdown_table(groups: Iterable[type]) -> str:
    """Every flag as a Markdown table, one per group."""
    out = []
    for group in groups:
        out += [f"### {section_title(group)}", "", "| flag | default | values | what it does |",
                "|---|---|---|---|"]
        for flag in flags_of(group):
            name = ", ".join(f"`{s}`" for s in flag.spellings) + (
                " (TF Hub's)" if flag.tfhub else "")
            values = ", ".join(f"`{c}`" for c in flag.choices) or (
                str(flag.limits) if flag.limits else flag.kind.__name__)
            if flag.many:
                values += ", repeatable"
            default = "" if flag.shown_default is None else f"`{flag.shown_default}`"
            text = flag.help.replace("|", "\\|")
            out.append(f"| {name} | {default} | {values} | {text} |")
        out.append("")
    return "\n".join(out)
