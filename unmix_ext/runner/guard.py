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

Example::

    trainer = pl.Trainer(callbacks=[NanGuard(max_skipped_steps=2)], ...)
"""
from __future__ import annotations

import math
from typing import Any, Mapping

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
