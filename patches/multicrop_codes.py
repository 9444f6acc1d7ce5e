"""multicrop_codes: SwAV and DINO crash when the loader yields small crops.

Symptom: ``swav`` or ``dino`` with ``num_small_crops > 0`` (multi-crop, as both papers
train and solo-learn's own SwAV/DINO configs ask) stops in its first step with
``too many values to unpack (expected 2)``.
Cause: solo-learn 1.0.2's ``SwAV.training_step`` and ``DINO.training_step`` unpack
exactly two feature tensors, ``swav_loss_func`` pairs the i-th prediction with the i-th
assignment for every crop, and ``DINOLoss.forward`` cuts the student logits into as many
chunks as there are large crops.
Fix: the multi-crop losses of the SwAV and DINO papers. Codes (Sinkhorn assignments, or
the teacher's softmax) come from the large crops only; scores come from every crop; the
loss is the mean over the pairs (codes of large crop i, scores of crop v), v != i. The
queue and the teacher still see the large crops only. With two crops and no small ones
every value is the one 1.0.2 computes.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F

from unmix_ext.patches._core import Patch, register, replace

UPSTREAM = {
    "solo.methods.swav:SwAV.training_step": "ed0b7ac54fe5d7cdaa2e6261fa887e843fdb98d2d5bed06196748121a53194ac",
    "solo.losses.swav:swav_loss_func": "19d1340f6db28e2ad448e2b17e7e15186c3307abe3e7b6a44f5110b35edd95e3",
    "solo.methods.dino:DINO.training_step": "c5a168a5bc3aa364463d2a61cdbc8c24912ff42ae019dd755697af6cb860b1ff",
    "solo.losses.dino:DINOLoss.forward": "b599e16f59ee938473f5d59d4f767293aeaa57ab1ff3e86f4e292cd30e2582bc",
}


def mean_over_other_crops(codes: List[torch.Tensor], scores: List[torch.Tensor],
                          temperature: float) -> torch.Tensor:
    """Mean over (i, v), v != i, of ``-mean_rows sum_k codes[i]_k log softmax(scores[v] / T)_k``.

    Args:
        codes: one (N, K) tensor of probabilities per large crop.
        scores: one (N, K) tensor per crop, the large crops first (as the loader yields them).
        temperature: softmax temperature T of the scores.
    """
    losses = [
        -(q * F.log_softmax(scores[v] / temperature, dim=1)).sum(dim=1).mean()
        for i, q in enumerate(codes) for v in range(len(scores)) if v != i
    ]
    return sum(losses) / len(losses)


def swav_loss_func(preds: List[torch.Tensor], assignments: List[torch.Tensor],
                   temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction: ``preds`` of every crop against ``assignments`` of the large ones."""
    return mean_over_other_crops(assignments, preds, temperature)


def dino_loss_forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
    """student_output ((large + small crops) * N, K); teacher_output (large crops * N, K)."""
    temperature = self.teacher_temp_schedule[self.epoch]
    teacher = F.softmax((teacher_output - self.center) / temperature, dim=-1).detach()
    crop_batch = len(teacher_output) // self.num_large_crops
    loss = mean_over_other_crops(list(teacher.split(crop_batch)),
                                 list(student_output.split(crop_batch)), self.student_temp)
    self.update_center(teacher_output)
    return loss


def swav_training_step(swav_cls):
    def training_step(self, batch, batch_idx):
        out = super(swav_cls, self).training_step(batch, batch_idx)
        z = [F.normalize(self.projector(feats)) for feats in out["feats"]]
        preds = [self.prototypes(zi) for zi in z]
        assignments = self.get_assignments(preds[: self.num_large_crops])
        swav_loss = swav_loss_func(preds, assignments, self.temperature)
        if self.queue_size > 0:  # the queue holds the large crops' embeddings, newest first
            large = torch.stack(z[: self.num_large_crops])
            self.queue[:, large.size(1):] = self.queue[:, : -large.size(1)].clone()
            self.queue[:, : large.size(1)] = large.detach()
        self.log("train_swav_loss", swav_loss, on_epoch=True, sync_dist=True)
        return swav_loss + out["loss"]

    return training_step


def dino_training_step(dino_cls):
    def training_step(self, batch, batch_idx):
        out = super(dino_cls, self).training_step(batch, batch_idx)
        # the student scores every crop; solo's momentum step forwards the large crops only
        student = torch.cat([self.head(feats) for feats in out["feats"]])
        teacher = torch.cat([self.momentum_head(feats) for feats in out["momentum_feats"]])
        dino_loss = self.dino_loss_func(student, teacher)
        self.log("dino_loss", dino_loss, on_epoch=True, sync_dist=True)
        return dino_loss + out["loss"]

    return training_step


def _apply() -> None:
    import solo.losses
    import solo.losses.swav
    import solo.methods.swav
    from solo.losses.dino import DINOLoss
    from solo.methods.dino import DINO
    from solo.methods.swav import SwAV

    # every binding of swav_loss_func: its module, the package's re-export, SwAV's import
    for module in (solo.losses.swav, solo.losses, solo.methods.swav):
        replace(module, "swav_loss_func", swav_loss_func)
    replace(DINOLoss, "forward", dino_loss_forward)
    replace(SwAV, "training_step", swav_training_step(SwAV))
    replace(DINO, "training_step", dino_training_step(DINO))


PATCH = register(Patch(
    name="multicrop_codes",
    summary="SwAV / DINO with small crops (multi-crop) crash: two views unpacked",
    upstream=UPSTREAM,
    apply=_apply,
))
