"""static_lr_pickle: SimSiam and NNSiam checkpoints cannot be written (and would not resume).

Symptom: with ``lars=True``, SimSiam and NNSiam stop at their first checkpoint with
``PicklingError: args[0] from __newobj__ args has the wrong class``; without LARS the
checkpoint is written but carries a copy of the scheduler's own method, which a
resumed run then calls instead of the live scheduler's.
Cause: ``BaseMethod.configure_optimizers`` keeps the predictor's learning rate fixed
(``static_lr``) by storing ``functools.partial(static_lr, get_lr=scheduler.get_lr, ...)``
as an instance attribute of the scheduler; ``scheduler.state_dict()`` is the
instance's ``__dict__``, so the partial (and through it the scheduler and the
optimizer, or the LARS wrapper that pickle refuses) goes into the checkpoint.
Fix: after upstream's ``configure_optimizers``, move the fixed learning rates to a
plain ``{group index: lr}`` attribute and give the scheduler a subclass whose
``get_lr`` applies them: the state dict holds only numbers.
"""
from __future__ import annotations

import functools

from unmix_ext.patches._core import wrapping_patch

TARGET = "solo.methods.base:BaseMethod.configure_optimizers"


class StaticGroupLR:
    """Scheduler mixin: param groups listed in ``static_group_lrs`` keep their lr."""

    def get_lr(self):
        lrs = super().get_lr()
        for index, lr in self.static_group_lrs.items():
            lrs[index] = lr
        return lrs


@functools.lru_cache(maxsize=None)
def _with_static_groups(scheduler_cls):
    return type(f"StaticGroup{scheduler_cls.__name__}", (StaticGroupLR, scheduler_cls), {})


@wrapping_patch(
    name="static_lr_pickle",
    summary="SimSiam/NNSiam checkpoints fail (LARS) or hold a stale scheduler method (static_lr)",
    target=TARGET, sha256="109fc520590561276f7d9fa6942e4adc2849a05acb7042055806740f415267d4",
)
def _wrap(upstream):
    def configure_optimizers(self):
        configured = upstream(self)
        for scheduler in configured[1] if isinstance(configured, tuple) else ():
            static = scheduler.__dict__.pop("get_lr", None)
            if static is not None:
                scheduler.static_group_lrs = dict(zip(static.keywords["param_group_indexes"],
                                                      static.keywords["lrs_to_replace"]))
                scheduler.__class__ = _with_static_groups(type(scheduler))
        return configured

    return configure_optimizers
