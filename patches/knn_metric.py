"""knn_metric: solo-learn's online kNN metric does not construct on torchmetrics 1.x.

Symptom: any method with ``knn_eval=True`` fails at construction with
"Unexpected keyword arguments: `compute_on_step`"; once that is fixed, the first
training step fails inside ``compute`` (``torch.cat`` of an empty list).
Cause: ``WeightedKNNClassifier.__init__`` passes ``compute_on_step=False``,
removed in torchmetrics 0.8; and torchmetrics 1.x's ``Metric.forward`` calls
``compute`` on every batch, before any test feature exists.
Fix: the same constructor without ``compute_on_step``, and a ``forward`` that only
accumulates features (``update``), which is what ``compute_on_step=False`` meant.
"""
from __future__ import annotations

from unmix_ext.patches._core import Patch, register, replace

TARGET = "solo.utils.knn:WeightedKNNClassifier.__init__"


def _apply() -> None:
    from solo.utils.knn import WeightedKNNClassifier
    from torchmetrics import Metric

    def __init__(self, k=20, T=0.07, max_distance_matrix_size=int(5e6),
                 distance_fx="cosine", epsilon=0.00001, dist_sync_on_step=False):
        Metric.__init__(self, dist_sync_on_step=dist_sync_on_step)
        self.k, self.T, self.epsilon = k, T, epsilon
        self.max_distance_matrix_size = max_distance_matrix_size
        self.distance_fx = distance_fx
        for state in ("train_features", "train_targets", "test_features", "test_targets"):
            self.add_state(state, default=[], persistent=False)

    def forward(self, *args, **kwargs) -> None:
        self.update(*args, **kwargs)

    replace(WeightedKNNClassifier, "__init__", __init__)
    replace(WeightedKNNClassifier, "forward", forward)


PATCH = register(Patch(
    name="knn_metric",
    summary="online kNN (knn_eval) fails on torchmetrics 1.x: compute_on_step removed",
    upstream={TARGET: "758cb5b4199210ec6c04e60a1b6411773d9fcd1d4541563fd1d8b46068bd9e58"},
    apply=_apply,
))
