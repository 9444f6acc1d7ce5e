"""Checkpoint files: written atomically, read only after a check.

Writes: a reader (or a resumed run) sees the old file or the new one, never
half of one. The bytes go to a hidden ``.<name>.partial-<pid>`` file in the same folder,
which is flushed to disk and then renamed over the target (a rename within one
file system is atomic). A process killed mid-write leaves only that hidden
partial file, which no glob for ``*.ckpt`` or ``*.json`` matches.

Reads: a checkpoint is data, never code. :func:`read_checkpoint` checks the
archive, then unpickles it with torch's restricted loader (``weights_only=True``:
tensors, containers and numbers), which refuses any other class or function
before calling it. solo-learn's own checkpoints name a few more: the
learning-rate scheduler it keeps in them (and through ``functools.partial(static_lr,
...)``, the scheduler's optimizer), a path among the saved arguments.
:data:`SOLO_LEARN_REFERENCES` lists exactly those names; each is read as an inert
:class:`StandIn` that records what the pickle gave it and never imports or
runs the real class or function. Any other reference is refused, naming it. A
truncated, damaged, foreign or hostile file is one :class:`CheckpointError` line
naming the file, for the runner's resume, ``unmix_ext.runner.linear``,
``unmix_ext.export`` and the solo-learn evaluation commands alike.
"""
from __future__ import annotations

import os
import pickle
import pickletools
import re
import shutil
import warnings
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, BinaryIO, Callable

import torch

from unmix_ext.runner.guard import CheckpointError


class StandIn:
    """What a checkpoint's pickle builds in place of an allow-listed class or function: inert data.

    Attributes:
        reference: the name the pickle referred to (``solo.methods.base.static_lr``).
        args: the arguments the pickle called or constructed it with; state: what it set on it.
    """

    reference = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.reference}>"


def _empty_dict(*_: Any) -> dict:
    # a defaultdict(dict) is read as the plain dict its items then fill
    return {}


def _posix_path_text(*parts: Any) -> str:
    # a pathlib path among saved arguments (solo-learn 1.0.2's --data_dir) is read as its text
    return str(PurePosixPath(*map(str, parts)))


def _windows_path_text(*parts: Any) -> str:
    return str(PureWindowsPath(*map(str, parts)))


#: every name a genuine solo-learn or unmix-ext checkpoint refers to beyond tensors, containers and numbers,
#: and why it is there; each is read as data (:class:`StandIn`, a plain dict, a path's text), never imported
SOLO_LEARN_REFERENCES: dict[str, str] = {
    "functools.partial": "solo-learn's static_lr: functools.partial(static_lr, get_lr=scheduler.get_lr, ...) "
                         "in the scheduler's state (SimSiam, NNSiam: the predictor's fixed lr)",
    "solo.methods.base.static_lr": "the function that partial wraps",
    "builtins.getattr": "how pickle writes the bound method scheduler.get_lr inside that partial",
    "solo.utils.lr_scheduler.LinearWarmupCosineAnnealingLR": "solo-learn 1.0.3+'s scheduler, reached through get_lr",
    "pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR": "solo-learn 1.0.2's scheduler, likewise",
    "torch.optim.lr_scheduler.CosineAnnealingLR": "solo-learn's cosine scheduler, likewise",
    "torch.optim.lr_scheduler.MultiStepLR": "solo-learn's step scheduler, likewise",
    "torch.optim.sgd.SGD": "the optimizer a scheduler holds, reached the same way",
    "torch.optim.adam.Adam": "likewise",
    "torch.optim.adamw.AdamW": "likewise",
    "solo.utils.lars.LARS": "solo-learn 1.0.3+'s LARS optimizer, likewise",
    "collections.defaultdict": "an optimizer's per-parameter state, a defaultdict(dict)",
    "builtins.dict": "that defaultdict's factory",
    "pathlib.PosixPath": "a path among solo-learn 1.0.2's saved arguments (hyper_parameters)",
    "pathlib.WindowsPath": "likewise, written on Windows",
}
_READERS = {"collections.defaultdict": _empty_dict, "pathlib.PosixPath": _posix_path_text,
            "pathlib.WindowsPath": _windows_path_text}


#: ``(reader, name)`` for each of :data:`SOLO_LEARN_REFERENCES`, as ``torch.serialization.safe_globals`` takes them
_STAND_INS = [(_READERS.get(name) or type("StandIn", (StandIn,), {"reference": name}), name)
              for name in SOLO_LEARN_REFERENCES]


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
    """What in ``path`` the restricted loader refused: the first reference off the allow-list, else the instruction."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except pickle.UnpicklingError:  # torch's scan stops at the instructions its loader does not know
        unsafe = []
    offending = [name for name in unsafe if name not in SOLO_LEARN_REFERENCES]
    if offending:
        return f"it refers to {offending[0]}"
    operand = _REFUSED_OPERAND.search(str(err))
    if operand is None:
        return f"it holds objects other than tensors, containers and numbers ({short_message(err, limit=120)})"
    return f"it uses the pickle instruction {_OPCODE_NAMES.get(int(operand.group(1)), operand.group(1))}"


def read_checkpoint(path: str | Path, advice: str) -> dict[str, Any]:
    """The Lightning checkpoint at ``path`` (on the CPU), read as data only after checking the archive is complete.

    Only tensors, containers and numbers are unpickled (``torch.load(..., weights_only=True)``), and the
    names of :data:`SOLO_LEARN_REFERENCES` as inert stand-ins; a pickle that refers to any other class or
    function is refused before anything in it runs.

    Raises:
        CheckpointError: ``checkpoint: <path> cannot be read (<why>); <advice>``,
            ``... cannot be read safely: it refers to <module>.<name>, which no solo-learn or unmix-ext
            checkpoint holds ...``, or ``... is not a Lightning checkpoint ...`` when it holds no ``state_dict``.
    """
    shown = Path(path).resolve()
    reason = _unreadable_reason(Path(path))
    if reason is None:
        try:
            with warnings.catch_warnings():
                # torch warns of a pickle protocol it may not read; such a file is refused below, in one line
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                with torch.serialization.safe_globals(_STAND_INS):
                    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:  # torch's message would suggest weights_only=False: never that
            raise CheckpointError(
                f"checkpoint: {shown} cannot be read safely: {_refused_content(Path(path), err)}, which no "
                f"solo-learn or unmix-ext checkpoint holds, and loading it could run code; nothing of it was "
                f"loaded; {advice}"
            ) from None
        except Exception as err:  # whatever else unpickling raises, the user needs the file name, not torch's stack
            reason = f"torch.load failed: {type(err).__name__}: {short_message(err)}"
    if reason is not None:
        raise CheckpointError(f"checkpoint: {shown} cannot be read ({reason}); {advice}")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint: {shown} is not a Lightning checkpoint (no 'state_dict' entry; a plain "
                              f"state_dict or an export?); {advice}")
    return checkpoint
