"""The one error type every layer raises for a mistake a user can fix: a recipe key, a data file,
a checkpoint, a failed run. Its message is one line, ``<key or thing>: <what is wrong and what is
allowed>``; a command prints it as ``error: <message>`` and exits with :attr:`CommandError.exit_status`
instead of showing a traceback (:mod:`unmix_ext.cli`). Each layer subclasses it where it raises:
``ConfigError`` (recipes), ``DataError`` (datasets), ``RunError`` (training), ``ExportError``...
"""
from __future__ import annotations

#: exit status of a command stopped by a recipe, data or checkpoint mistake, or a failed run
USAGE_ERROR = 2


class CommandError(ValueError):
    """A failure a command reports in one line (``error: <message>``) and ends with :attr:`exit_status`."""

    exit_status = USAGE_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
