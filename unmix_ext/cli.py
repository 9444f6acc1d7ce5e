"""What the commands share: ``COMMAND TARGET [key=value ...]``, and a recipe, data or run failure
ends the command with one line on stderr (``error: <key>: ...``, exit status 2), not a traceback."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from unmix_ext.config import ConfigError
from unmix_ext.data import DataError
from unmix_ext.guard import RunError

#: exit status of a command stopped by a recipe or data mistake, or a failed run
USAGE_ERROR = 2


def one_line(err: Exception) -> str:
    """The message of ``err``; a DataLoader process's copy (its traceback inlined) is cut back to the original."""
    message = str(err)
    original = f"{type(err).__name__}: "
    if message.startswith("Caught ") and original in message:
        message = message.rsplit(original, 1)[1]
    return message


def report_errors(command: Callable[..., Any], *args: Any) -> int:
    """Runs ``command(*args)``; a ConfigError, DataError or RunError prints ``error: <message>`` and gives 2."""
    try:
        command(*args)
    except (ConfigError, DataError, RunError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def run_command(
    argv: Sequence[str] | None, prog: str, doc: str, target: str, target_help: str,
    action: Callable[[str, list[str]], Any],
) -> int:
    """Parses ``TARGET [key=value ...]`` from ``argv``; runs ``action(target, overrides)`` via :func:`report_errors`."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument(target, help=target_help)
    parser.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. scale=smoke optimizer.lr=0.1")
    args = parser.parse_args(argv)
    return report_errors(action, getattr(args, target), args.overrides)
