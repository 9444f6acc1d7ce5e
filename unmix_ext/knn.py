"""Weighted k-nearest-neighbour classification on frozen features.

The evaluation of Wu et al. (2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination") that Un-Mix's CIFAR tables use: each
test feature votes with its k nearest training features, each neighbour
weighted by ``exp(similarity / temperature)`` (cosine) or by
``1 / (distance + eps)`` (euclidean, solo-learn's online kNN).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_knn_scores(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: str = "cosine",
    eps: float = 1e-5,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of each test feature from its k nearest training features.

    Args:
        train_features: (N_train, D) bank of training features.
        train_targets: (N_train,) int labels in [0, num_classes); rows labelled -1
            (unlabelled data, e.g. STL-10's unlabeled split) are ignored.
        test_features: (N_test, D) features to classify.
        num_classes: number of classes (not inferred from the targets: a small test
            set may not contain every class).
        k: neighbours per test feature (capped at the bank size).
        temperature: softmax temperature of the cosine weights.
        distance: "cosine" (features are L2-normalised here) or "euclidean".
        chunk_size: test rows per similarity matrix, to bound memory.

    Returns:
        (N_test, num_classes) float scores; ``argmax`` is the prediction.
    """
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    labelled = train_targets >= 0
    train_features, train_targets = train_features[labelled], train_targets[labelled]
    if train_features.shape[0] == 0:
        raise ValueError("kNN needs at least one labelled training feature, got none")
    if distance == "cosine":
        train_features = F.normalize(train_features, dim=1)
        test_features = F.normalize(test_features, dim=1)
    k = min(k, train_features.shape[0])
    scores = []
    for chunk in test_features.split(chunk_size):
        if distance == "cosine":
            similarity = chunk @ train_features.T
        else:
            similarity = 1.0 / (torch.cdist(chunk, train_features) + eps)
        top_sim, top_idx = similarity.topk(k, dim=1)
        weights = (top_sim / temperature).exp() if distance == "cosine" else top_sim
        votes = F.one_hot(train_targets[top_idx], num_classes).to(weights.dtype)
        scores.append((votes * weights.unsqueeze(-1)).sum(dim=1))
    return torch.cat(scores)


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Top-k accuracy in percent for each k in ``ks`` (k capped at the number of classes)."""
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == targets.unsqueeze(1)
    return [hits[:, :k].any(dim=1).float().mean().item() * 100.0 for k in ks]

