"""unlabelled_batches: the online classifier's loss is NaN on a batch without labels.

Symptom: pretraining on unlabelled images (``data.no_labels: true``, solo-learn's custom data
without class folders) stops at its first step with a non-finite loss.
Cause: ``BaseMethod._base_shared_step`` adds ``F.cross_entropy(logits, targets, ignore_index=-1)``
to the loss; when every target is -1 it averages over zero targets, which is 0/0.
Fix: the same step, with the classifier's loss averaged over the labelled targets only (a batch
with none contributes 0, so the classifier is left untrained and the method's loss is unchanged).
"""
from __future__ import annotations

import torch.nn.functional as F

from unmix_ext.patches._core import function_patch


def _base_shared_step(self, X, targets):
    """images X (N, C, H, W), targets (N,), -1 unlabelled -> logits, feats, loss, acc@1, acc@min(5, classes)."""
    from solo.utils.metrics import accuracy_at_k

    out = self.base_forward(X)
    logits = out["logits"]
    labelled = (targets != -1).sum().clamp(min=1)
    loss = F.cross_entropy(logits, targets, ignore_index=-1, reduction="sum") / labelled
    acc1, acc5 = accuracy_at_k(logits, targets, top_k=(1, min(5, logits.size(1))))
    return {**out, "loss": loss, "acc1": acc1, "acc5": acc5}


PATCH = function_patch(
    name="unlabelled_batches",
    summary="online classifier loss is NaN on a batch with no labels (0/0)",
    upstream={"solo.methods.base:BaseMethod._base_shared_step":
              "ef77fc4352a50be2302a0c47bcce8c27a4220f8259e38ca8ada598dd4e8a7085"},
    replacements={"solo.methods.base:BaseMethod._base_shared_step": _base_shared_step},
)
