"""A run's directory: where it is, what its files are called, how to find it again.

``<checkpoint.dir>/<name>-<hash>``, the hash being that of the recipe as the run uses it (overrides
included, smoke shrink applied, paths absolute: :func:`unmix_ext.runner.run.as_run`), so the same
command, and the run's own ``config.yaml``, always find the same directory::

    config.yaml            the recipe as it ran (``python -m unmix_ext.run RUN_DIR/config.yaml`` continues the run)
    checkpoints/           epoch=<e>-step=<s>.ckpt (newest kept), last.ckpt (the final state)
    logs/pretrain/, logs/linear/   CSV logs (and wandb/ when enabled)
    results.json           written only after the run succeeded
    linear.json            what ``python -m unmix_ext.linear`` measured on one of its checkpoints
    run.lock, run.lock.json   held by the live run (:class:`RunLock`) and who that is

Every module that reads or writes one of these goes through :class:`RunDir`.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from unmix_ext.cli import CommandError
from unmix_ext.runner.config import Config, ConfigError, config_hash
from unmix_ext.runner.files import atomic_write_text


@dataclass(frozen=True)
class RunDir:
    """The directory of one run (``path``, absolute) and the paths inside it."""

    path: Path

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        """``<checkpoint.dir>/<name>-<config hash>``: the same recipe and overrides give the same directory."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.name)
        return cls((Path(cfg.checkpoint.dir) / f"{name}-{config_hash(cfg)}").resolve())

    @classmethod
    def find(cls, checkpoint: Path) -> RunDir | None:
        """The run directory of ``checkpoint``: its nearest parent with a saved recipe, or None (solo-learn's)."""
        for folder in Path(checkpoint).resolve().parents:
            if (cls(folder).config).is_file():
                return cls(folder)
        return None

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def linear_results(self) -> Path:
        return self.path / "linear.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def lock(self) -> Path:
        return self.path / "run.lock"

    @property
    def lock_holder(self) -> Path:
        return self.path / "run.lock.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def newest_checkpoint(self) -> Path | None:
        """The most recently written complete ``*.ckpt`` of the run, or None."""
        return newest_checkpoint_in(self.checkpoints)

    def final_checkpoint(self) -> Path | None:
        """The checkpoint holding the run's latest weights: ``last.ckpt``, else the newest one, else None."""
        return self.last_checkpoint if self.last_checkpoint.is_file() else self.newest_checkpoint()

    def metrics_log(self, stage: str) -> Path | None:
        """The CSV log (``metrics.csv``) of the newest ``stage`` (``pretrain``, ``linear``) attempt, or None."""
        logs = sorted((self.logs / stage).glob("version_*/metrics.csv"),
                      key=lambda path: int(path.parent.name.split("_")[1]))
        return logs[-1] if logs else None


def newest_checkpoint_in(folder: Path) -> Path | None:
    """The most recently written ``*.ckpt`` file in ``folder``, or None; ``last.ckpt`` while it is only a link
    to another checkpoint is that checkpoint (Lightning's ``save_last="link"``), named by the file's own name."""
    found = [path for path in folder.glob("*.ckpt") if path.is_file() and not path.is_symlink()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, which one of our commands wrote; None if there is no such file or it is not
    a JSON object (unreadable, truncated, not UTF-8, another JSON value, nested too deep for Python's parser)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


_NUMBER = (int, float)
#: what the readers of a ``results.json`` (reproduce, the demo's reuse) take from it, and its types
RESULTS_FIELDS: dict[str, tuple[type, ...]] = {
    "metrics": (dict,), "recipe_hash": (str,), "method": (str,), "run_dir": (str,),
    "checkpoint": (str, type(None)), "pretrain_seconds": _NUMBER, "pretrain_images_per_s": (*_NUMBER, type(None)),
}


def saved_results(cfg: Config) -> dict[str, Any] | None:
    """The ``results.json`` a finished run of ``cfg`` left in ``RunDir.of(cfg)``; None if there is none or it
    cannot be read, or lacks a field of :data:`RESULTS_FIELDS` or has one of another type, or a metric that is
    not a number: such a file was not written by a finished run (the runner removes it when a run starts and
    writes it, atomically, after the last epoch)."""
    results = read_json_object(RunDir.of(cfg).results)
    if results is None or not all(isinstance(results.get(key, ...), types) for key, types in RESULTS_FIELDS.items()):
        return None
    metrics = results["metrics"].values()
    return results if all(isinstance(value, _NUMBER) and not isinstance(value, bool) for value in metrics) else None


class RunDirBusyError(CommandError):
    """Another live process holds the run directory (one line, exit status 2)."""


def _holder_text(holder: Any) -> str:
    """``PID 123 on host since 2026-12-06 02:45:01 UTC`` from a ``run.lock.json``'s content, else a vaguer phrase."""
    if isinstance(holder, dict) and all(isinstance(holder.get(key), str | int) for key in ("pid", "host", "since")):
        return f"PID {holder['pid']} on {holder['host']} since {holder['since']}"
    return "a process that left no readable run.lock.json"


class RunLock:
    """One live run per run directory: ``run.lock``, held with :mod:`filelock` while a run trains and records.

    The operating system releases the lock when its holder dies, however it dies (``kill -9`` included); the
    holder's PID, host and start time are in ``run.lock.json``, removed when the lock is released, so a
    ``run.lock.json`` found on taking a free lock is that of a run that died holding it: it is taken over
    with a notice. Use as a context manager; under DDP only rank 0 takes it.

    Raises:
        RunDirBusyError: on entering, if a live process holds the lock (its PID, host and since when named).
    """

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self._lock = FileLock(str(run_dir.lock))

    def __enter__(self) -> RunLock:
        self.run_dir.path.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = _holder_text(read_json_object(self.run_dir.lock_holder))
            raise RunDirBusyError(
                f"run directory: {self.run_dir.path} is in use by another run ({holder}); "
                "wait for it to end or stop it (a rerun of the same command then resumes its checkpoint)"
            ) from None
        if self.run_dir.lock_holder.exists():
            holder = _holder_text(read_json_object(self.run_dir.lock_holder))
            print(f"unmix_ext: run directory: {self.run_dir.path} was held by {holder}, "
                  "which is no longer running; this run takes it over", flush=True)
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        try:
            atomic_write_text(self.run_dir.lock_holder,
                              json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
        except OSError as err:  # a full disk
            self._lock.release()
            raise ConfigError(f"checkpoint.dir: cannot write {self.run_dir.lock_holder} ({err.strerror or err}); "
                              "free space there or choose another checkpoint.dir") from None
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.run_dir.lock_holder.unlink(missing_ok=True)
        self._lock.release()
