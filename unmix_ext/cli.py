"""The command lines of unmix_ext: one grammar for every ``python -m unmix_ext.<command>``::

    python -m unmix_ext.<command> TARGET [--option VALUE ...] [key=value ...]

``TARGET`` is what the command acts on (a recipe, a checkpoint, a table); ``--options`` are the
command's own; ``key=value`` are dotted recipe settings (``optimizer.lr=0.1``) for the commands
that read recipes, which also take :data:`SETTING_OPTIONS` (``--scale smoke`` is ``scale=smoke``,
appended after the ``key=value`` ones). ``python -m unmix_ext.main_pretrain`` is the one exception:
it takes solo-learn 1.0.2's flags, as its bash scripts pass them.

Each ``unmix_ext/<command>.py`` declares its :class:`Command`. This module imports nothing heavy:
the implementation (torch, Lightning, solo-learn) is imported only once the arguments parse, so
``--help`` answers at once. A mistake in a recipe, the data or a checkpoint, and a failed run, end
the command with one line on stderr, ``error: <key>: ...``, and exit status 2
(:class:`unmix_ext.errors.CommandError`, raised by the layer that finds the mistake), not a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from unmix_ext.errors import CommandError


def one_line(err: Exception) -> str:
    """The message of ``err``; a DataLoader process's copy (its traceback inlined) is cut back to the original."""
    message = str(err)
    original = f"{type(err).__name__}: "
    if message.startswith("Caught ") and original in message:
        message = message.rsplit(original, 1)[1]
    return message


def report_errors(command: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Runs ``command``; a :class:`CommandError` prints ``error: <message>`` and gives its exit status, else 0."""
    try:
        command(*args, **kwargs)
    except CommandError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return err.exit_status
    return 0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class Argument:
    """One ``argparse`` argument: its names and the keywords of ``add_argument``."""

    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def argument(*names: str, **options: Any) -> Argument:
    return Argument(names, options)


#: recipe keys that every recipe-reading command also takes as options: option -> (recipe key, argparse keywords)
SETTING_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--scale": ("scale", {"metavar": "{full,smoke}", "help": "scale=...: smoke shrinks the run to CPU minutes"}),
    "--devices": ("devices", {"type": positive_int, "metavar": "N", "help": "devices=...: devices per node"}),
    "--num-nodes": ("num_nodes", {"type": positive_int, "metavar": "N", "help": "num_nodes=...: nodes"}),
}


@dataclass(frozen=True)
class Command:
    """A ``python -m unmix_ext.<name>`` command: its arguments and the function that runs it.

    Attributes:
        name: the module under ``unmix_ext`` (``"run"`` is ``python -m unmix_ext.run``).
        doc: its docstring; the first paragraph is the ``--help`` description.
        implementation: ``"module:function"``, imported once the arguments parse and called with
            them as keywords (argparse's ``dest`` names).
        arguments: the command's own arguments.
        settings: whether it reads recipes: it then takes ``key=value`` overrides and
            :data:`SETTING_OPTIONS`, handed over together as the list ``overrides``.
        passthrough: the whole command line goes to ``implementation(argv)`` unparsed (solo-learn's flags).
    """

    name: str
    doc: str
    implementation: str
    arguments: tuple[Argument, ...] = ()
    settings: bool = False
    passthrough: bool = False

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=f"python -m unmix_ext.{self.name}",
                                         description=self.doc.split("\n\n")[0])
        for arg in self.arguments:
            parser.add_argument(*arg.names, **arg.options)
        if self.settings:
            for option, (key, options) in SETTING_OPTIONS.items():
                parser.add_argument(option, dest=f"setting_{key}", default=None, **options)
            parser.add_argument("overrides", nargs="*", metavar="key=value",
                                help="dotted recipe settings, e.g. optimizer.lr=0.1 data.num_workers=8")
        return parser

    def keywords(self, argv: Sequence[str]) -> dict[str, Any]:
        """The implementation's keyword arguments for ``argv`` (argparse exits with status 2 on a bad one)."""
        namespace = vars(self.parser().parse_intermixed_args(argv))
        if self.settings:
            given = {key: namespace.pop(f"setting_{key}") for key, _ in SETTING_OPTIONS.values()}
            namespace["overrides"] = [*namespace["overrides"],
                                      *(f"{key}={value}" for key, value in given.items() if value is not None)]
        return namespace

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parses ``argv`` (default ``sys.argv[1:]``), runs the implementation; the exit status."""
        argv = list(sys.argv[1:] if argv is None else argv)
        keywords = {"argv": argv} if self.passthrough else self.keywords(argv)
        module, function = self.implementation.split(":")
        return report_errors(getattr(importlib.import_module(module), function), **keywords)
