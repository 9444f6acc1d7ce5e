"""validation_epoch_end: Lightning 2 refuses solo-learn's validation epoch hook.

Symptom: ``trainer.fit`` stops with "Support for `validation_epoch_end` has been
removed in v2.0.0".
Cause: ``BaseMethod``, ``BaseMomentumMethod`` and ``LinearModel`` average their
validation metrics in ``validation_epoch_end(outs)``; Lightning 2 removed the hook
and no longer collects the outputs of ``validation_step``.
Fix: remove the three hooks; collect each ``validation_step`` output in
``on_validation_batch_end`` and, in ``on_validation_epoch_end``, log the same
batch-size-weighted means (and the online kNN accuracy) the upstream hooks logged.
"""
from __future__ import annotations

from unmix_ext.patches._core import Patch, register, replace

UPSTREAM = {
    "solo.methods.base:BaseMethod.validation_epoch_end":
        "ac1c82ef84af496791c99b147e3158d110db1c08453af915158196945fc805b6",
    "solo.methods.base:BaseMomentumMethod.validation_epoch_end":
        "de18425e38732c958a46be1993bcd77b6429a4de9083f1a1a774b6e0b6764173",
    "solo.methods.linear:LinearModel.validation_epoch_end":
        "322163e7621e5e7eb5a2cbd030b9a5a4d4bcb437a769200ea226416eb034d64b",
}


def _log_weighted_means(module, outs, keys) -> None:
    from solo.utils.metrics import weighted_mean

    module.log_dict({k: weighted_mean(outs, k, "batch_size") for k in keys}, sync_dist=True)


def _epoch_end_online(self, outs) -> None:
    """BaseMethod and LinearModel: online classifier metrics, then kNN."""
    _log_weighted_means(self, outs, ("val_loss", "val_acc1", "val_acc5"))
    if getattr(self, "knn_eval", False) and not self.trainer.sanity_checking:
        acc1, acc5 = self.knn.compute()
        self.log_dict({"val_knn_acc1": acc1, "val_knn_acc5": acc5}, sync_dist=True)


def _epoch_end_momentum(self, outs) -> None:
    """BaseMomentumMethod: validation_step returns (online metrics, momentum metrics)."""
    _epoch_end_online(self, [out[0] for out in outs])
    if self.momentum_classifier is not None:
        _log_weighted_means(
            self, [out[1] for out in outs],
            ("momentum_val_loss", "momentum_val_acc1", "momentum_val_acc5"),
        )


def on_validation_epoch_start(self) -> None:
    self._unmix_val_outputs = []


def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0) -> None:
    self._unmix_val_outputs.append(outputs)


def on_validation_epoch_end(self) -> None:
    outs, self._unmix_val_outputs = self._unmix_val_outputs, []
    if outs:
        self._solo_validation_epoch_end(outs)


def _apply() -> None:
    from solo.methods.base import BaseMethod, BaseMomentumMethod
    from solo.methods.linear import LinearModel

    for cls, epoch_end in ((BaseMethod, _epoch_end_online),
                           (BaseMomentumMethod, _epoch_end_momentum),
                           (LinearModel, _epoch_end_online)):
        del cls.validation_epoch_end
        cls._solo_validation_epoch_end = epoch_end
    for cls in (BaseMethod, LinearModel):
        for hook in (on_validation_epoch_start, on_validation_batch_end, on_validation_epoch_end):
            replace(cls, hook.__name__, hook)


PATCH = register(Patch(
    name="validation_epoch_end",
    summary="Lightning 2 rejects `validation_epoch_end` (removed in Lightning 2.0)",
    upstream=UPSTREAM,
    apply=_apply,
))
