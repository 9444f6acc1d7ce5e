"""A run's directory: where it is, what its files are called, how to find it again.

``<checkpoint.dir>/<name>-<hash>``, the hash being that of the recipe as the run uses it (overrides
included, smoke shrink applied, paths absolute: :func:`unmix_ext.runner.run.as_run`), so the same
command, and the run's own ``config.yaml``, always find the same directory::

    config.yaml            the recipe as it ran (``python -m unmix_ext.run RUN_DIR/config.yaml`` continues the run)
    checkpoints/           epoch=<e>-step=<s>.ckpt (newest kept), last.ckpt (the final state)
    logs/pretrain/, logs/linear/   CSV logs (and wandb/ when enabled)
    results.json           written only after the run succeeded
    linear.json            what ``python -m unmix_ext.linear`` measured on one of its checkpoints

Every module that reads or writes one of these goes through :class:`RunDir`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unmix_ext.runner.config import Config, ConfigError, config_hash


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

    @classmethod
    def holding(cls, checkpoint: Path) -> RunDir:
        """:meth:`find`, raising ConfigError where there is none."""
        found = cls.find(checkpoint)
        if found is not None:
            return found
        raise ConfigError(f"checkpoint: no config.yaml next to {checkpoint} or above it; "
                          "was it written by python -m unmix_ext.run?")

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
    def logs(self) -> Path:
        return self.path / "logs"

    def newest_checkpoint(self) -> Path | None:
        """The most recently written complete ``*.ckpt`` of the run, or None."""
        return newest_checkpoint_in(self.checkpoints)

    def metrics_log(self, stage: str) -> Path | None:
        """The CSV log (``metrics.csv``) of the newest ``stage`` (``pretrain``, ``linear``) attempt, or None."""
        logs = sorted((self.logs / stage).glob("version_*/metrics.csv"),
                      key=lambda path: int(path.parent.name.split("_")[1]))
        return logs[-1] if logs else None


def newest_checkpoint_in(folder: Path) -> Path | None:
    """The most recently written ``*.ckpt`` file in ``folder``, or None."""
    found = [path for path in folder.glob("*.ckpt") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def saved_results(cfg: Config) -> dict[str, Any] | None:
    """The ``results.json`` a finished run of ``cfg`` left in ``RunDir.of(cfg)``; None if there is none or it
    cannot be read (the runner removes it when a run starts and writes it, atomically, after the last epoch)."""
    try:
        return json.loads(RunDir.of(cfg).results.read_text())
    except (OSError, ValueError):
        return None
