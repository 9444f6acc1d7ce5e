"""topk_few_classes: online and offline classifiers crash on datasets with fewer than 5 classes.

Symptom: ``LinearModel`` (offline linear evaluation) fails in its first step, and any
momentum method with ``momentum_classifier=True`` in its first step or validation, with
"selected index k out of range" when the dataset has fewer than 5 classes.
Cause: ``LinearModel.shared_step`` and ``BaseMomentumMethod._shared_step_momentum`` ask
``accuracy_at_k`` for top-1 and top-5 unconditionally (``BaseMethod`` caps k at the
number of classes; these two do not).
Fix: the same two steps with top-5 capped at the number of classes.
"""
from __future__ import annotations

import torch.nn.functional as F

from unmix_ext.patches._core import function_patch


def top1_top5(logits, targets):
    """Top-1 and top-min(5, classes) accuracy of (N, classes) ``logits`` against (N,) ``targets``, in percent."""
    from solo.utils.metrics import accuracy_at_k

    return accuracy_at_k(logits, targets, top_k=(1, min(5, logits.size(1))))


def shared_step(self, batch, batch_idx):
    """LinearModel: (images (N, C, H, W), targets (N,)) -> (N, loss, acc@1, acc@min(5, classes))."""
    images, targets = batch
    logits = self(images)["logits"]
    acc1, acc5 = top1_top5(logits, targets)
    return images.size(0), F.cross_entropy(logits, targets), acc1, acc5


def _shared_step_momentum(self, X, targets):
    """BaseMomentumMethod: momentum features, plus the momentum classifier's loss and accuracy."""
    out = self.base_momentum_forward(X)
    if self.momentum_classifier is not None:
        logits = self.momentum_classifier(out["feats"])
        acc1, acc5 = top1_top5(logits, targets)
        loss = F.cross_entropy(logits, targets, ignore_index=-1)
        out.update({"logits": logits, "loss": loss, "acc1": acc1, "acc5": acc5})
    return out


PATCH = function_patch(
    name="topk_few_classes",
    summary="LinearModel / momentum classifier crash with fewer than 5 classes (top-5 not capped)",
    upstream={
        "solo.methods.linear:LinearModel.shared_step":
            "e6b4d365aee8100383530d9fb59f67b75d04752f6e0a5e6289da54f3fcf77101",
        "solo.methods.base:BaseMomentumMethod._shared_step_momentum":
            "b6aebd2d8c0c5c1d7c1dc44455bb2a8e048240b26c085fa7540d26b1afb3e2cb",
    },
    replacements={
        "solo.methods.linear:LinearModel.shared_step": shared_step,
        "solo.methods.base:BaseMomentumMethod._shared_step_momentum": _shared_step_momentum,
    },
)
