"""knn_num_classes: the online kNN infers the number of classes from the validation batch.

Symptom: with a validation set that lacks some classes (a small or class-sorted
one), the online kNN accuracy is wrong or ``scatter_`` fails with an index
out of bounds.
Cause: ``WeightedKNNClassifier.compute`` sets
``num_classes = torch.unique(test_targets).numel()``: the count of labels seen,
not the label range.
Fix: ``compute`` with ``num_classes = 1 + max label`` over training and test
features, through :func:`unmix_ext.knn.weighted_knn_scores` (the same kNN the
offline evaluation uses). Two more differences from upstream, both deliberate:
training rows labelled -1 (unlabelled data) are ignored, and the cosine distance
L2-normalises the features (upstream took raw dot products, whose exponentials
overflow on unnormalised features); top-5 is capped at the number of classes.
"""
from __future__ import annotations

import torch

from unmix_ext.patches._core import function_patch

TARGET = "solo.utils.knn:WeightedKNNClassifier.compute"


@torch.no_grad()
def compute(self):
    """Weighted kNN accuracy @1 and @5 of the accumulated test features; resets the banks."""
    from unmix_ext.knn import topk_accuracy, weighted_knn_scores

    train_targets = torch.cat(self.train_targets)
    test_targets = torch.cat(self.test_targets)
    num_classes = 1 + int(max(train_targets.max(), test_targets.max()))
    scores = weighted_knn_scores(
        torch.cat(self.train_features), train_targets, torch.cat(self.test_features),
        num_classes=num_classes, k=self.k, temperature=self.T,
        distance=self.distance_fx, eps=self.epsilon,
    )
    acc1, acc5 = topk_accuracy(scores, test_targets)
    self.reset()
    return acc1, acc5


PATCH = function_patch(
    name="knn_num_classes",
    summary="online kNN counts the classes present in the validation set, not the label range",
    upstream={TARGET: "23b088f1ab12645f00962227b169d661295d3e066c8287b1670e51fb7c7164b0"},
    replacements={TARGET: compute},
)
