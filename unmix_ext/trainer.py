"""The Lightning Trainer a recipe asks for: devices, loggers, checkpoints and resuming.

- Devices: GPUs when there are any, else CPU processes; ``devices`` beyond
  what the machine has is a one-line :class:`ConfigError`. More than one
  process in all (``devices`` x ``num_nodes``) uses Lightning's DDP strategy
  (``strategy: auto``); under SLURM Lightning reads the job's environment.
- Logs: a CSVLogger always (``<run dir>/logs/<stage>/version_<n>/metrics.csv``),
  and a WandbLogger when ``wandb.enabled``, offline (no network) unless
  ``wandb.offline: false``.
- Checkpoints: every ``checkpoint.frequency`` epochs, ``epoch=<e>-step=<s>.ckpt``
  in ``<run dir>/checkpoints/`` (the newest one kept; ``last.ckpt`` links to
  it), written to a hidden partial file and renamed (:mod:`unmix_ext.files`),
  so a run killed mid-write never leaves a truncated file that looks complete.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from unmix_ext.config import Config, ConfigError
from unmix_ext.files import atomic_write

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
#: Lightning's default logging interval, in optimizer steps
LOG_EVERY_N_STEPS = 50


@dataclass(frozen=True)
class DevicePlan:
    """Where a recipe runs: Lightning's ``accelerator``, ``strategy``, and processes in all (``world_size``)."""

    accelerator: str
    strategy: str
    world_size: int


def device_plan(cfg: Config) -> DevicePlan:
    """The accelerator and strategy for ``cfg.devices``; raises ConfigError if the machine has fewer devices."""
    gpus = torch.cuda.device_count()
    accelerator, available, kind = ("gpu", gpus, "GPU(s)") if gpus else ("cpu", os.cpu_count() or 1, "CPU core(s)")
    devices = cfg.devices
    if isinstance(devices, list):
        if not gpus:
            raise ConfigError(f"devices: {devices} lists GPU indices, but this machine has no GPU; give a count")
        beyond = [i for i in devices if i >= gpus]
        if beyond:
            raise ConfigError(f"devices: index {beyond[0]} requested, but this machine has {gpus} GPU(s)")
        count = len(devices)
    elif devices == "auto":
        count = gpus or 1
    else:
        if devices > available:
            raise ConfigError(f"devices: {devices} requested, but this machine has {available} {kind}")
        count = devices
    world_size = count * cfg.num_nodes
    strategy = "ddp" if cfg.strategy == "auto" and world_size > 1 else cfg.strategy
    return DevicePlan(accelerator, strategy, world_size)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, renaming a complete file into place.

    (Lightning's own transaction writes to the system temp folder and moves
    the file, which is a copy, not a rename, when checkpoints live on another
    file system, and leaves the temp file behind when killed.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options: not supported by AtomicCheckpointIO")
        atomic_write(path, lambda file: torch.save(checkpoint, file))


class RunProgress(Callback):
    """Reports where training starts and measures training throughput.

    Attributes:
        start_epoch, start_step: epoch and global step training started from
            (those of the checkpoint a resumed run loaded).
        images: training images seen by all processes in this process's run.
        seconds: wall time of the training batches (loading included, validation not).
        saved_step: global step of the last checkpoint written, or None.
    """

    def __init__(self) -> None:
        self.start_epoch: int | None = None
        self.start_step: int | None = None
        self.saved_step: int | None = None
        self.images = 0
        self.seconds = 0.0
        self._mark = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start_epoch, self.start_step = trainer.current_epoch, trainer.global_step
        if trainer.is_global_zero:
            print(f"unmix_ext: training starts at epoch {self.start_epoch}, global step {self.start_step}", flush=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        self.images += len(batch[0]) * trainer.world_size

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.saved_step = checkpoint["global_step"]

    @property
    def images_per_s(self) -> float | None:
        """Training images per second over all processes, or None if no step ran."""
        return self.images / self.seconds if self.seconds > 0 else None


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written complete ``*.ckpt`` of a run, or None."""
    found = [path for path in (run_dir / CHECKPOINT_DIR).glob("*.ckpt") if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime_ns, default=None)


def _loggers(cfg: Config, run_dir: Path, stage: str) -> list:
    loggers: list = [CSVLogger(run_dir / LOG_DIR, name=stage)]
    if cfg.wandb.enabled:
        if cfg.wandb.offline:
            os.environ["WANDB_MODE"] = "offline"  # nothing in this process may reach for the network
        loggers.append(
            WandbLogger(
                project=cfg.wandb.project, name=f"{cfg.name}-{stage}", save_dir=str(run_dir),
                offline=cfg.wandb.offline, group=run_dir.name,
            )
        )
    return loggers


def _common(cfg: Config, plan: DevicePlan, run_dir: Path, stage: str, batches: int) -> dict[str, Any]:
    """Trainer arguments every stage shares; ``batches``: length of the unsharded training loader."""
    steps_per_epoch = max(1, batches // plan.world_size)
    return {
        "accelerator": plan.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": plan.strategy,
        "precision": cfg.precision,
        "benchmark": plan.accelerator == "gpu",  # fixed crop sizes: let cuDNN pick its fastest kernels
        "logger": _loggers(cfg, run_dir, stage),
        "log_every_n_steps": max(1, min(LOG_EVERY_N_STEPS, steps_per_epoch)),
        "enable_model_summary": False,
    }


def pretrain_trainer(cfg: Config, plan: DevicePlan, run_dir: Path, batches: int) -> tuple[pl.Trainer, RunProgress]:
    """The pretraining Trainer and its :class:`RunProgress` callback (``batches``: the training loader's length)."""
    progress = RunProgress()
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="step"), progress]
    if cfg.checkpoint.enabled:
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / CHECKPOINT_DIR, filename="{epoch}-{step}", every_n_epochs=cfg.checkpoint.frequency,
                save_top_k=1, save_last="link", save_on_train_epoch_end=True,
            )
        )
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, callbacks=callbacks,
        enable_checkpointing=cfg.checkpoint.enabled, plugins=[AtomicCheckpointIO()],
        **_common(cfg, plan, run_dir, "pretrain", batches),
    )
    return trainer, progress


def linear_trainer(cfg: Config, plan: DevicePlan, run_dir: Path, batches: int) -> pl.Trainer:
    """The Trainer of the offline linear protocol (no checkpoints, no sanity check; ``batches`` as above)."""
    return pl.Trainer(
        max_epochs=cfg.eval.linear.max_epochs, callbacks=[LearningRateMonitor(logging_interval="epoch")],
        enable_checkpointing=False, num_sanity_val_steps=0,
        **_common(cfg, plan, run_dir, "linear", batches),
    )
