"""The Lightning Trainer a recipe asks for: devices, loggers, checkpoints and resuming.

- Devices: GPUs when there are any, else CPU processes; ``devices`` beyond
  what the machine has is a one-line :class:`ConfigError`. More than one
  process in all (``devices`` x ``num_nodes``) uses Lightning's DDP strategy
  (``strategy: auto``); under SLURM Lightning reads the job's environment.
- Logs: a CSVLogger always (``<run dir>/logs/<stage>/version_<n>/metrics.csv``),
  and a WandbLogger when ``wandb.enabled``, offline (no network) unless
  ``wandb.offline: false``.
- Checkpoints: every ``checkpoint.frequency`` epochs, ``epoch=<e>-step=<s>.ckpt``
  in ``<run dir>/checkpoints/`` (the newest one kept, all with ``checkpoint.keep_prev``; ``last.ckpt`` links to
  it), written to a hidden partial file and renamed (:mod:`unmix_ext.runner.files`),
  so a run killed mid-write never leaves a truncated file that looks complete;
  a failed write (a full disk) is a one-line :class:`CheckpointError`.
- Resuming is exact: besides Lightning's own state (weights, momentum encoder
  and queues, optimizer, scheduler, loops), a checkpoint holds every process's
  random generators (:class:`ResumeState`), so the resumed run draws the same
  shuffle, augmentations and loader seeds as an uninterrupted one; Un-Mix's
  draws are seeded by the global step. :func:`check_resumable` refuses, in one
  line, a checkpoint that cannot be read or belongs to another method.
- Non-finite losses stop the run or are skipped (:class:`unmix_ext.runner.guard.NanGuard`).
- ``scheduler.interval: step`` moves solo-learn 1.0.2's per-epoch schedules after every
  optimizer step (:class:`StepwiseSchedule`).
"""
from __future__ import annotations

import math
import os
import platform
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from unmix_ext.runner.config import GPU_ACCELERATORS, Config, ConfigError, resolved_method
from unmix_ext.runner.files import atomic_write, os_error_behind, read_checkpoint, write_failure
from unmix_ext.runner.guard import CheckpointError, NanGuard, Preemption
from unmix_ext.runner.rundir import RunDir, newest_checkpoint_in

#: Lightning's default logging interval, in optimizer steps
LOG_EVERY_N_STEPS = 50


@dataclass(frozen=True)
class DevicePlan:
    """Where a recipe runs: Lightning's ``accelerator``, ``strategy``, and processes in all (``world_size``)."""

    accelerator: str
    strategy: str
    world_size: int


def device_plan(cfg: Config) -> DevicePlan:
    """The accelerator and strategy for ``cfg.accelerator`` and ``cfg.devices`` (``auto``: GPUs when there are
    any); raises ConfigError if the machine lacks them."""
    gpus = torch.cuda.device_count()
    if cfg.accelerator in GPU_ACCELERATORS and not gpus:
        raise ConfigError(f"accelerator: {cfg.accelerator} requested, but this machine has no GPU; run with "
                          "scale=smoke or accelerator=cpu")
    if cfg.accelerator == "cpu":
        gpus = 0
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


def cpu_has_bf16_instructions() -> bool:
    """Whether this CPU computes in bf16 in hardware: AVX512-BF16 on x86, oneDNN's own check elsewhere (ARM).

    Without them torch emulates bf16. Measured with the demo's network (a ResNet-10-like timm model, a
    training step on 256 images of 28 px, 2 cores): on an AMD EPYC with AVX512-BF16, 0.34 s in bf16 and
    0.67 s in fp32; on an AMD EPYC with AVX2 only, 10.8 s in bf16 and 0.53 s in fp32.
    """
    if platform.machine().lower() in ("x86_64", "amd64"):
        return torch.cpu._is_avx512_bf16_supported()
    return torch.ops.mkldnn._is_mkldnn_bf16_supported()


def emulated_bf16_notice(cfg: Config, plan: DevicePlan) -> str | None:
    """One line warning that ``cfg.precision`` asks for bf16 on a CPU that can only emulate it, else None."""
    if plan.accelerator != "cpu" or not str(cfg.precision).startswith("bf16") or cpu_has_bf16_instructions():
        return None
    return (f"unmix_ext: precision {cfg.precision}: this CPU has no bf16 instructions, so torch emulates them and a "
            "step can take 20 times as long as with precision=32-true")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, renaming a complete file into place.

    (Lightning's own transaction writes to the system temp folder and moves
    the file, which is a copy, not a rename, when checkpoints live on another
    file system, and leaves the temp file behind when killed.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Writes ``checkpoint`` to ``path``; raises CheckpointError (one line) if the file system refuses."""
        if storage_options is not None:
            raise TypeError("storage_options: not supported by AtomicCheckpointIO")
        try:
            atomic_write(path, lambda file: torch.save(checkpoint, file))
        except (OSError, RuntimeError) as err:
            cause = os_error_behind(err)
            if cause is None:  # not the file system's refusal
                raise
            kept = newest_checkpoint_in(Path(path).parent)
            state = f"the last complete checkpoint {kept} is kept" if kept else "no complete checkpoint was written yet"
            raise CheckpointError(
                f"checkpoint.dir: writing {path} failed ({write_failure(cause, Path(path).parent)}); {state}; free "
                "space there or choose another checkpoint.dir, then rerun"
            ) from None


def _random_state() -> dict[str, Any]:
    """This process's random generators, in types a checkpoint loads without pickled classes."""
    name, keys, *position = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, keys.tolist(), *position],
        "python": random.getstate(),
    }


def _set_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *position = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *position))
    random.setstate(state["python"])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class ResumeState(Callback):
    """What a checkpoint holds beyond Lightning's own state: the method's name and the random generators.

    ``state_dict()`` (called by every process when a checkpoint is written) gathers each
    process's generators (torch, CUDA, numpy, Python) by rank; ``load_state_dict()`` gives
    each process its own back, before Lightning draws the next epoch's shuffle and loader
    seeds. (A resumed run under more processes seeds the extra ones as a fresh run would.)

    Args:
        method: registry name of the method being trained, e.g. "simclr_unmix".
    """

    def __init__(self, method: str) -> None:
        self.method = method

    def state_dict(self) -> dict[str, Any]:
        states = [_random_state()]
        if _distributed():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states[0])
            states = gathered
        return {"method": self.method, "random": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rank = torch.distributed.get_rank() if _distributed() else 0
        states = state_dict.get("random", [])
        if rank < len(states):
            _set_random_state(states[rank])


def check_resumable(path: Path, model: pl.LightningModule, method: str) -> None:
    """Raises CheckpointError (one line) unless ``path`` can be read and fits ``model``, trained as ``method``."""
    shown = Path(path).resolve()
    hint = f"move {shown} away (a rerun then resumes from an older checkpoint, if any) or set auto_resume.enabled=false"
    checkpoint = read_checkpoint(path, hint)
    written_by = checkpoint.get("callbacks", {}).get(ResumeState.__qualname__, {}).get("method")
    if written_by is not None and written_by != method:
        raise CheckpointError(f"checkpoint: {shown} was written by method {written_by}, this recipe trains {method}; "
                              f"{hint}")
    # what Lightning does before it loads the weights: a method may shape buffers by the checkpoint
    # (SwAV's queue, whose length is per process)
    model.on_load_checkpoint(checkpoint)
    expected, found = model.state_dict(), checkpoint["state_dict"]
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    reshaped = sorted(key for key in expected.keys() & found.keys()
                      if getattr(expected[key], "shape", None) != getattr(found[key], "shape", None))
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise CheckpointError(
            f"checkpoint: {shown} does not fit {method}: {len(missing)} weight(s) missing, {len(unexpected)} "
            f"unexpected, {len(reshaped)} of another shape (first: {first}); it was written for another method, "
            f"backbone or head; {hint}"
        )


class StepwiseSchedule(Callback):
    """Steps solo-learn 1.0.2's learning-rate schedule after every optimizer step instead of every epoch.

    solo-learn 1.0.2 builds its schedulers in epochs (``warmup_epochs``, ``max_epochs``,
    ``lr_decay_steps``) for Lightning's default ``interval: "epoch"``. At the start of training
    this rewrites those lengths in optimizer steps, ``epochs * steps_per_epoch``, with the total
    Lightning's ``estimated_stepping_batches`` (so ``max_steps`` ends the curve too), and sets the
    interval to ``"step"``: the lr follows the same curve, sampled every step, as solo-learn 1.0.6+
    does with ``scheduler.interval: step``. The lengths are set from the method's own epoch
    counts, not scaled, so a resumed run (whose scheduler state was saved in steps) gets the same.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        steps_per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        total = trainer.estimated_stepping_batches
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if hasattr(scheduler, "warmup_epochs"):  # the pl_bolts shim's LinearWarmupCosineAnnealingLR
                scheduler.warmup_epochs = pl_module.warmup_epochs * steps_per_epoch
                scheduler.max_epochs = total
            elif isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                scheduler.T_max = total
            elif isinstance(scheduler, torch.optim.lr_scheduler.MultiStepLR):
                scheduler.milestones = Counter(epoch * steps_per_epoch for epoch in pl_module.lr_decay_steps)
            else:  # a method's own scheduler: its lengths are not known here
                raise ConfigError(f"scheduler.interval: step cannot rescale {type(scheduler).__name__}, which "
                                  f"{type(pl_module).__name__} builds itself; set scheduler.interval=epoch")
            config.interval = "step"


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


def _loggers(cfg: Config, run_dir: RunDir, stage: str) -> list:
    loggers: list = [CSVLogger(run_dir.logs, name=stage)]
    if cfg.wandb.enabled:
        if cfg.wandb.offline:
            os.environ["WANDB_MODE"] = "offline"  # nothing in this process may reach for the network
        loggers.append(
            WandbLogger(
                project=cfg.wandb.project, entity=cfg.wandb.entity, name=f"{cfg.name}-{stage}", save_dir=str(run_dir.path),
                offline=cfg.wandb.offline, group=run_dir.path.name,
            )
        )
    return loggers


def _common(cfg: Config, plan: DevicePlan, run_dir: RunDir, stage: str, batches: int) -> dict[str, Any]:
    """Trainer arguments every stage shares; ``batches``: length of the unsharded training loader."""
    steps_per_epoch = max(1, batches // plan.world_size)
    return {
        "accelerator": plan.accelerator,
        "devices": cfg.devices,
        "num_nodes": cfg.num_nodes,
        "strategy": plan.strategy,
        "precision": cfg.precision,
        "sync_batchnorm": cfg.sync_batchnorm,
        "deterministic": cfg.deterministic,
        # fixed crop sizes: let cuDNN pick its fastest kernels, unless the run must repeat exactly
        "benchmark": plan.accelerator == "gpu" and not cfg.deterministic,
        "logger": _loggers(cfg, run_dir, stage),
        # where Lightning's SLURM requeue (SIGUSR1) writes its hpc_ckpt_<n>.ckpt: this run's directory, through
        # AtomicCheckpointIO, not the working directory that other runs share
        "default_root_dir": str(run_dir.path),
        "log_every_n_steps": max(1, min(LOG_EVERY_N_STEPS, steps_per_epoch)),
        "enable_model_summary": False,
    }


def pretrain_trainer(cfg: Config, plan: DevicePlan, run_dir: RunDir, batches: int) -> tuple[pl.Trainer, RunProgress]:
    """The pretraining Trainer and its :class:`RunProgress` callback (``batches``: the training loader's length)."""
    progress = RunProgress()
    callbacks: list[Callback] = [
        LearningRateMonitor(logging_interval="step"), progress,
        NanGuard(cfg.nan_guard.max_skipped_steps), ResumeState(resolved_method(cfg)), Preemption(),
    ]
    if cfg.scheduler.interval == "step" and cfg.scheduler.name != "none":
        callbacks.append(StepwiseSchedule())
    if cfg.checkpoint.enabled:
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir.checkpoints, filename="{epoch}-{step}", every_n_epochs=cfg.checkpoint.frequency,
                save_top_k=-1 if cfg.checkpoint.keep_prev else 1, save_last="link", save_on_train_epoch_end=True,
                # a resumed run writes last.ckpt again, not a last-v1.ckpt beside a stale last.ckpt (its restored
                # state may not name last.ckpt yet); a step's file rewritten after a crash holds the same state
                enable_version_counter=False,
            )
        )
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs, max_steps=cfg.max_steps, accumulate_grad_batches=cfg.accumulate_grad_batches,
        callbacks=callbacks,
        enable_checkpointing=cfg.checkpoint.enabled, plugins=[AtomicCheckpointIO()],
        **_common(cfg, plan, run_dir, "pretrain", batches),
    )
    return trainer, progress


def linear_trainer(cfg: Config, plan: DevicePlan, run_dir: RunDir, batches: int) -> pl.Trainer:
    """The Trainer of the offline linear protocol (no checkpoints, no sanity check; ``batches`` as above)."""
    return pl.Trainer(
        max_epochs=cfg.eval.linear.max_epochs, callbacks=[LearningRateMonitor(logging_interval="epoch")],
        enable_checkpointing=False, num_sanity_val_steps=0,
        **_common(cfg, plan, run_dir, "linear", batches),
    )
