"""Checkpoint files: written atomically, read only after a check.

Writes: a reader (or a resumed run) sees the old file or the new one, never
half of one. The bytes go to a hidden ``.<name>.partial-<pid>`` file in the same folder,
which is flushed to disk and then renamed over the target (a rename within one
file system is atomic). A process killed mid-write leaves only that hidden
partial file, which no glob for ``*.ckpt`` or ``*.json`` matches.

Reads: a checkpoint is data, never code. :func:`read_checkpoint` checks the
archive, then unpickles it with torch's restricted loader (``weights_only=True``:
tensors, containers and numbers, no other class or function), so a file whose
pickle would import or call anything else is refused without running it. A
truncated, damaged, foreign or hostile file is one :class:`CheckpointError` line
naming the file, for the runner's resume, ``unmix_ext.runner.linear`` and
``unmix_ext.export`` alike.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from unmix_ext.runner.guard import CheckpointError


def partial_path(path: Path) -> Path:
    """The hidden file :func:`atomic_write` fills before renaming it to ``path``."""
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Calls ``write(file)`` on a partial file, then renames it to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def os_error_behind(err: BaseException | None) -> OSError | None:
    """The OSError behind a failed write: ``err`` itself, or the one it was raised from or while handling
    (torch's zip writer reports a full disk as a RuntimeError raised while handling the OSError); else None."""
    while err is not None:
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def write_failure(err: OSError, folder: str | Path) -> str:
    """``No space left on device; 12.3 MB free``: why a write into ``folder`` failed, and the room left there."""
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError:
        free = "free space unknown"
    return f"{err.strerror or err}; {free}"


def short_message(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (torch's span several), cut to ``limit`` characters."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unreadable_reason(path: Path) -> str | None:
    """Why ``path`` is not a complete ``torch.save`` archive, or None when it is one."""
    if not path.is_file():
        return "no such file"
    if not zipfile.is_zipfile(path):
        return "not a PyTorch checkpoint archive, or truncated"
    try:  # torch.save writes a zip archive with a CRC per entry
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            pickled = any(name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"damaged archive: {short_message(err)}"
    if damaged is not None:
        return f"damaged archive: entry {damaged} fails its checksum"
    if not pickled:
        return "a zip file, but not one torch.save wrote (no data.pkl)"
    return None


#: the pickle instruction torch's restricted loader stopped at, in its message (it names no global then)
_REFUSED_OPERAND = re.compile(r"Unsupported operand (\d+)")
_OPCODE_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}


def _refused_content(path: Path, err: pickle.UnpicklingError) -> str:
    """What in ``path`` the restricted loader refused: the first global it may not import, else the instruction."""
    try:
        unsafe = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except pickle.UnpicklingError:  # torch's scan stops at the instructions its loader does not know
        unsafe = []
    if unsafe:
        return f"it refers to {unsafe[0]}"
    operand = _REFUSED_OPERAND.search(str(err))
    if operand is None:
        return "it holds objects other than tensors, containers and numbers"
    return f"it uses the pickle instruction {_OPCODE_NAMES.get(int(operand.group(1)), operand.group(1))}"


def read_checkpoint(path: str | Path, advice: str) -> dict[str, Any]:
    """The Lightning checkpoint at ``path`` (on the CPU), read as data only after checking the archive is complete.

    Only tensors, containers and numbers are unpickled (``torch.load(..., weights_only=True)``); a pickle
    that refers to any other class or function is refused before anything in it runs.

    Raises:
        CheckpointError: ``checkpoint: <path> cannot be read (<why>); <advice>``,
            ``... cannot be read safely (it refers to <module>.<name>, which a checkpoint of ours never
            holds); <advice>``, or ``... is not a Lightning checkpoint ...`` when it holds no ``state_dict``.
    """
    shown = Path(path).resolve()
    reason = _unreadable_reason(Path(path))
    if reason is None:
        try:
            with warnings.catch_warnings():
                # torch warns of a pickle protocol it may not read; such a file is refused below, in one line
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's message would suggest weights_only=False: never that
            raise CheckpointError(f"checkpoint: {shown} cannot be read safely ({_refused_content(Path(path), err)}, "
                                  f"which a checkpoint of ours never holds); {advice}") from None
        except Exception as err:  # whatever else unpickling raises, the user needs the file name, not torch's stack
            reason = f"torch.load failed: {type(err).__name__}: {short_message(err)}"
    if reason is not None:
        raise CheckpointError(f"checkpoint: {shown} cannot be read ({reason}); {advice}")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint: {shown} is not a Lightning checkpoint (no 'state_dict' entry; a plain "
                              f"state_dict or an export?); {advice}")
    return checkpoint
