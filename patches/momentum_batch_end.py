"""momentum_batch_end: the momentum encoder is never updated under Lightning 2.

Symptom: every momentum method (BYOL, MoCo V2+, DINO, ReSSL, NNBYOL) stops with
``on_train_batch_end() missing 1 required positional argument: 'dataloader_idx'``.
Cause: ``BaseMomentumMethod.on_train_batch_end`` requires ``dataloader_idx``;
Lightning 2 calls the hook with (outputs, batch, batch_idx) only.
Fix: the same hook with ``dataloader_idx=0`` as a default, calling upstream's body.
"""
from __future__ import annotations

from unmix_ext.patches._core import wrapping_patch

TARGET = "solo.methods.base:BaseMomentumMethod.on_train_batch_end"


@wrapping_patch(
    name="momentum_batch_end",
    summary="momentum methods crash: on_train_batch_end() requires dataloader_idx",
    target=TARGET, sha256="827a385a555b4816cb5c009355b2155318661ebdabd40d7334c23ff1b0d8ed4d",
)
def _wrap(upstream):
    def on_train_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        return upstream(self, outputs, batch, batch_idx, dataloader_idx)

    return on_train_batch_end
