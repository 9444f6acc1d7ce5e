"""momentum_tau_resume: a resumed momentum method restarts its EMA coefficient at base_tau.

Symptom: a run resumed from a checkpoint (BYOL, MoCo v2 and V2+, DINO, ReSSL, NNBYOL
and their Un-Mix variants) drifts from the uninterrupted run from its second step on:
the first momentum update after the restart uses ``base_tau_momentum`` (0.99)
instead of the value the cosine schedule has reached.
Cause: ``MomentumUpdater.cur_tau`` is a plain attribute, recomputed by ``update_tau``
after each step and saved nowhere; ``BaseMomentumMethod.on_train_start`` resets the
step counter only.
Fix: after upstream's ``on_train_start``, recompute ``cur_tau`` for the global step
training starts from, with upstream's ``update_tau`` (at step 0 that is base_tau,
as before).
"""
from __future__ import annotations

from unmix_ext.patches._core import wrapping_patch

TARGET = "solo.methods.base:BaseMomentumMethod.on_train_start"


@wrapping_patch(
    name="momentum_tau_resume",
    summary="momentum methods resume with tau reset to base_tau",
    target=TARGET, sha256="b9eab77e1958d476db15c15634a84099c4d29ab68e7edebbe95641174f2f8167",
)
def _wrap(upstream):
    def on_train_start(self):
        upstream(self)
        # the same step count and horizon upstream's on_train_batch_end uses
        trainer = self.trainer
        self.momentum_updater.update_tau(
            cur_step=trainer.global_step * trainer.accumulate_grad_batches,
            max_steps=len(trainer.train_dataloader) * trainer.max_epochs,
        )

    return on_train_start
