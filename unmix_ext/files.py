"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

The bytes go to a hidden ``.<name>.partial-<pid>`` file in the same folder,
which is flushed to disk and then renamed over the target (a rename within one
file system is atomic). A process killed mid-write leaves only that hidden
partial file, which no glob for ``*.ckpt`` or ``*.json`` matches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


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
