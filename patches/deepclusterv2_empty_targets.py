"""deepclusterv2_empty_targets: DeepCluster v2's loss is NaN for its whole first epoch.

Symptom: with ``deepclusterv2`` every step of epoch 0 logs a NaN loss, and the NaN
reaches the online classifier's gradients.
Cause: k-means assignments exist only from epoch 1 (epoch 0 fills the memory
bank), so in epoch 0 every target is -1; ``F.cross_entropy(..., ignore_index=-1)``
averages over zero targets, which is 0/0.
Fix: the same loss, averaged over the targets that are assigned (a step with none
contributes 0, so epoch 0 trains only what the other losses train).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unmix_ext.patches._core import function_patch

TARGET = "solo.losses.deepclusterv2:deepclusterv2_loss_func"


def deepclusterv2_loss_func(outputs: torch.Tensor, assignments: torch.Tensor,
                            temperature: float = 0.1) -> torch.Tensor:
    """outputs (P, V, N, C) prototype scores; assignments (P, N) k-means labels, -1 unassigned."""
    loss = outputs.new_zeros(())
    for scores, labels in zip(outputs, assignments):
        targets = labels.repeat(outputs.size(1)).to(outputs.device, non_blocking=True)
        total = F.cross_entropy(scores.reshape(-1, outputs.size(-1)) / temperature, targets,
                                ignore_index=-1, reduction="sum")
        loss = loss + total / (targets != -1).sum().clamp(min=1)
    return loss / outputs.size(0)


PATCH = function_patch(
    name="deepclusterv2_empty_targets",
    summary="DeepCluster v2 loss is NaN in epoch 0 (no k-means targets yet: 0/0)",
    upstream={TARGET: "7cdbf531d1fc5fe85fcfc32197ed360b1c07811514197305095a1cac62041675"},
    # every binding of the function: its module, the package's re-export, and the
    # method module that imported it by name
    replacements={
        TARGET: deepclusterv2_loss_func,
        "solo.losses:deepclusterv2_loss_func": deepclusterv2_loss_func,
        "solo.methods.deepclusterv2:deepclusterv2_loss_func": deepclusterv2_loss_func,
    },
)
