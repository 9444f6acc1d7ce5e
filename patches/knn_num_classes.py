"""knn_num_classes: the online kNN infers the number of classes from the validation batch.

Symptom: with a validation set that lacks some classes (a small or class-sorted
one), the online kNN accuracy is wrong or ``scatter_`` fails with an index
out of bounds.
Cause: ``WeightedKNNClassifier.compute`` sets
``num_classes = torch.unique(test_targets).numel()``: the count of labels seen,
not the label range.
Fix: ``compute`` with ``num_classes = 1 + max label`` over training and test
features, through :func:`unmix_ext.knn.weighted_knn_scores` (the same kNN the
offline evaluation uses; training rows labelled -1 are ignored).
"""
from __future__ import annotations

import torch

from unmix_ext.patches._core import Patch, register, replace

TARGET = "solo.utils.knn:WeightedKNNClassifier.compute"


def _apply() -> None:
    from solo.utils.knn import WeightedKNNClassifier

    from unmix_ext.knn import topk_accuracy, weighted_knn_scores

    @torch.no_grad()
    def compute(self):
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

    replace(WeightedKNNClassifier, "compute", compute)


PATCH = register(Patch(
    name="knn_num_classes",
    summary="online kNN counts the classes present in the validation set, not the label range",
    upstream={TARGET: "23b088f1ab12645f00962227b169d661295d3e066c8287b1670e51fb7c7164b0"},
    apply=_apply,
))
