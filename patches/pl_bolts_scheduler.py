"""pl_bolts_scheduler: solo-learn imports a scheduler from a package that no longer installs.

Symptom: ``import solo`` fails with ``ModuleNotFoundError: No module named 'pl_bolts'``.
Cause: ``solo/methods/base.py`` and ``solo/methods/linear.py`` import
``pl_bolts.optimizers.lr_scheduler.LinearWarmupCosineAnnealingLR``; lightning-bolts
is unmaintained and pins Lightning 1.x, so it cannot sit beside Lightning 2.
Fix: when the real module is not importable, register a module of that name that
holds our own :class:`LinearWarmupCosineAnnealingLR` (same constructor and the
same per-epoch schedule), before solo is imported.
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types

from torch.optim.lr_scheduler import LRScheduler

from unmix_ext.patches._core import Patch, register

SHIM_NAME = "pl_bolts.optimizers.lr_scheduler"


class LinearWarmupCosineAnnealingLR(LRScheduler):
    """Linear warm-up from ``warmup_start_lr`` to each group's base lr, then cosine to ``eta_min``.

    Stepped once per epoch (solo-learn's default interval). The lr at epoch ``e`` is
    ``warmup_start_lr + (base - warmup_start_lr) * e / (warmup_epochs - 1)`` while
    ``e < warmup_epochs`` (the base lr is reached on the last warm-up epoch), then
    ``eta_min + (base - eta_min) * (1 + cos(pi * t)) / 2`` with
    ``t = (e - warmup_epochs) / (max_epochs - warmup_epochs)`` clipped to [0, 1].
    It is computed in closed form from the epoch, so a resumed run gets the same lr.
    """

    def __init__(self, optimizer, warmup_epochs: int, max_epochs: int,
                 warmup_start_lr: float = 0.0, eta_min: float = 0.0, last_epoch: int = -1):
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.warmup_start_lr = warmup_start_lr
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            # max(1, ...): a one-epoch warm-up starts and ends at warmup_start_lr
            share = epoch / max(1, self.warmup_epochs - 1)
            return self.warmup_start_lr + (base_lr - self.warmup_start_lr) * share
        progress = (epoch - self.warmup_epochs) / max(1, self.max_epochs - self.warmup_epochs)
        progress = min(1.0, progress)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2

    def get_lr(self):
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


def _real_module_missing() -> bool:
    if sys.modules.get(SHIM_NAME) is not None:
        return getattr(sys.modules[SHIM_NAME], "__unmix_shim__", False)
    try:
        return importlib.util.find_spec(SHIM_NAME) is None
    except (ImportError, ValueError):  # pl_bolts missing, or installed but broken
        return True


def _apply() -> None:
    parts = SHIM_NAME.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        module = sys.modules.get(name) or types.ModuleType(name)
        module.__unmix_shim__ = True
        module.__path__ = []  # a package, so its children can be imported
        sys.modules[name] = module
        if depth > 1:
            setattr(sys.modules[".".join(parts[: depth - 1])], parts[depth - 1], module)
    sys.modules[SHIM_NAME].LinearWarmupCosineAnnealingLR = LinearWarmupCosineAnnealingLR


PATCH = register(Patch(
    name="pl_bolts_scheduler",
    summary="`import solo` fails: pl_bolts (LinearWarmupCosineAnnealingLR) does not install",
    upstream={},
    apply=_apply,
    needed=_real_module_missing,
))
