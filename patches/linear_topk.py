"""linear_topk: offline linear evaluation crashes on datasets with fewer than 5 classes.

Symptom: ``LinearModel`` fails in its first step with "selected index k out of
range" when the dataset has fewer than 5 classes.
Cause: ``LinearModel.shared_step`` asks ``accuracy_at_k`` for top-1 and top-5
unconditionally (``BaseMethod`` caps k at the number of classes; this one does not).
Fix: the same step with top-5 capped at the number of classes.
"""
from __future__ import annotations

import torch.nn.functional as F

from unmix_ext.patches._core import Patch, register, replace

TARGET = "solo.methods.linear:LinearModel.shared_step"


def shared_step(self, batch, batch_idx):
    """(images (N, C, H, W), targets (N,)) -> (N, loss, acc@1, acc@min(5, classes))."""
    from solo.utils.metrics import accuracy_at_k

    images, targets = batch
    logits = self(images)["logits"]
    acc1, acc5 = accuracy_at_k(logits, targets, top_k=(1, min(5, logits.size(1))))
    return images.size(0), F.cross_entropy(logits, targets), acc1, acc5


def _apply() -> None:
    from solo.methods.linear import LinearModel

    replace(LinearModel, "shared_step", shared_step)


PATCH = register(Patch(
    name="linear_topk",
    summary="LinearModel crashes with fewer than 5 classes (top-5 accuracy not capped)",
    upstream={TARGET: "e6b4d365aee8100383530d9fb59f67b75d04752f6e0a5e6289da54f3fcf77101"},
    apply=_apply,
))
