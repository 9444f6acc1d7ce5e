"""What stops a run while it trains, and how: one line, never a traceback.

- :class:`RunError`: a failure of the run itself rather than of the recipe or
  the data: a non-finite loss, a checkpoint that cannot be read or belongs to
  another method, a disk that is full. The commands print it as one line,
  ``error: <thing>: ...``, like a recipe mistake (:mod:`unmix_ext.cli`).
- :class:`NanGuard`: a Lightning callback that checks each step's loss before
  its backward pass. A NaN or infinite loss stops the run with a
  :class:`LossNotFiniteError` naming the global step, the Un-Mix loss parts
  (``base``, ``mix``) and the last good checkpoint, which is left as it was.
  With ``max_skipped_steps=N`` the first N such steps are skipped instead: their
  gradients are dropped before the optimizer sees them, so the weights and the
  optimizer's state do not move (the learning-rate schedule does).

- :class:`Preemption`: a Lightning callback that turns SIGTERM (what a scheduler
  sends before it kills a job) and SIGUSR1 (Lightning's SLURM requeue signal)
  into a stop at the end of the current batch: one :class:`PreemptedError`
  line naming the signal and the last complete checkpoint, which a rerun
  resumes exactly, and exit status 128 + the signal's number, so a scheduler
  sees a failure and requeues. Lightning's own handlers still run after ours
  (its SIGTERM flag, its SLURM requeue). A signal to the whole process group
  also ends the loader processes (torch's handler in them): the main process's
  report of their death is the same line.

Example::

    trainer = pl.Trainer(callbacks=[NanGuard(max_skipped_steps=2), Preemption()], ...)
    with stop_on_signals(trainer):
        trainer.fit(model, loader)
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
from typing import Any, Iterator, Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn

from unmix_ext.errors import CommandError

#: what the Un-Mix variants log for the two parts of their loss (unmix_ext.methods.base)
LOSS_PARTS = {"base": "unmix/base_loss", "mix": "unmix/mix_loss"}


class RunError(CommandError):
    """A run cannot go on; the message is one line naming the thing and what to do."""


class LossNotFiniteError(RunError):
    """A training step's loss is NaN or infinite."""


class CheckpointError(RunError):
    """A checkpoint cannot be written, read, or resumed from."""


class PreemptedError(RunError):
    """A signal (SIGTERM, SIGUSR1) stopped the run; the command exits with 128 + the signal's number, as a shell
    reports a process killed by it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signum


def _number(value: Any) -> str:
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def describe_loss(loss: torch.Tensor, logged: Mapping[str, Any]) -> str:
    """``loss nan (base 4.12, mix nan)``: the loss and the parts the step logged (none for other methods)."""
    parts = [f"{name} {_number(logged[key])}" for name, key in LOSS_PARTS.items() if key in logged]
    return f"loss {_number(loss.detach())}" + (f" ({', '.join(parts)})" if parts else "")


def last_good_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint this run wrote, else the one it resumed from, else None."""
    callback = trainer.checkpoint_callback
    written = getattr(callback, "best_model_path", "") if callback is not None else ""
    return written or trainer.ckpt_path or None


class NanGuard(Callback):
    """Stops, or skips, the training steps whose loss is not finite.

    Args:
        max_skipped_steps: bad steps skipped (with a warning) before one stops the run; 0 stops at the first.

    Attributes:
        skipped: global steps skipped so far; saved in checkpoints, so a resumed run counts on.

    Raises:
        ValueError: ``max_skipped_steps`` is not an integer >= 0.
        LossNotFiniteError: from ``trainer.fit``, on the bad step beyond ``max_skipped_steps``.

    Under DDP every process takes the same decision (one all-reduce of a flag per step):
    a bad loss in any process skips or stops the step everywhere.
    """

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if isinstance(max_skipped_steps, bool) or not isinstance(max_skipped_steps, int) or max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be an integer >= 0, got {max_skipped_steps!r}")
        self.max_skipped_steps = max_skipped_steps
        self.skipped: list[int] = []
        self._drop_gradients = False

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        step = trainer.global_step
        where = "" if not finite else " in another process; here"
        what = f"{where} {describe_loss(loss, trainer.callback_metrics)}"
        if len(self.skipped) >= self.max_skipped_steps:
            already = f", after {len(self.skipped)} skipped step(s)" if self.skipped else ""
            checkpoint = last_good_checkpoint(trainer)
            kept = f"the last good checkpoint {checkpoint} is kept" if checkpoint else "no checkpoint was written yet"
            raise LossNotFiniteError(
                f"loss: not finite at global step {step} (epoch {trainer.current_epoch}){already}:{what}; "
                f"training stopped, {kept}; lower optimizer.lr, or skip up to N such steps with "
                "nan_guard.max_skipped_steps=N"
            )
        self.skipped.append(step)
        self._drop_gradients = True
        rank_zero_warn(
            f"loss: not finite at global step {step}:{what}; step skipped "
            f"({len(self.skipped)} of nan_guard.max_skipped_steps={self.max_skipped_steps})"
        )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if self._drop_gradients:
            # SGD, LARS and AdamW leave a parameter without a gradient untouched: no decay, no momentum
            optimizer.zero_grad(set_to_none=True)
            self._drop_gradients = False

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": list(self.skipped)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = list(state_dict["skipped"])


#: the signals that stop a run at the end of its current batch
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption(Callback):
    """Stops training at the end of the batch during which SIGTERM or SIGUSR1 arrived (see the module's account).

    The handlers are installed once Lightning has installed its own (which they then call), and removed when
    training ends. Lightning itself ends a run on SIGTERM by raising ``SIGTERMException``, a ``SystemExit``
    with status 0: :func:`stop_on_signals` turns that into a :class:`PreemptedError` too. A loader process
    forked from the trainer inherits the handlers, which do nothing there.

    Attributes:
        received: the number of the first stop signal received, or None.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            return  # a loader process forked from the trainer: the main process stops it
        if self.received is None:
            self.received = signum
            # a signal to the process group kills the loader processes too, and torch's SIGCHLD handler would
            # raise its report of their death wherever this process then is, even in a loader's __del__ (a
            # traceback); the loaders still see dead processes when they next wait for a batch, and the process
            # is stopping anyway
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)

    def _install(self) -> None:
        if self._previous or threading.current_thread() is not threading.main_thread():
            return
        self._pid = os.getpid()
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _remove(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    # the sanity check starts the (persistent) validation loader processes: they must inherit our handlers
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.stop_if_signalled(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove()

    def stop_if_signalled(self, trainer: pl.Trainer) -> None:
        """Raises PreemptedError if a stop signal has arrived."""
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        checkpoint = last_good_checkpoint(trainer)
        kept = (f"the last complete checkpoint {checkpoint} is kept and the same command resumes from it" if checkpoint
                else "no checkpoint was written yet, so the same command starts over")
        raise PreemptedError(
            f"preempted: {name} received at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"training stopped, {kept}", self.received,
        ) from None


@contextlib.contextmanager
def stop_on_signals(trainer: pl.Trainer) -> Iterator[None]:
    """Around ``trainer.fit``: a stop signal (see :class:`Preemption`, among ``trainer.callbacks``) ends it with a
    PreemptedError, wherever Lightning noticed it, even after the last step."""
    preemption = next(c for c in trainer.callbacks if isinstance(c, Preemption))
    try:
        yield
    except BaseException:
        # Lightning's SIGTERMException (a SystemExit with status 0), or torch's RuntimeError for loader processes
        # that the same signal, sent to the process group, killed: either way the signal stopped the run
        preemption.stop_if_signalled(trainer)
        raise
    preemption.stop_if_signalled(trainer)
