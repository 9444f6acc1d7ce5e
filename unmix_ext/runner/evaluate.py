"""Frozen-backbone features and the weighted kNN evaluation on them.

The kNN is Wu et al.'s (2018) as Un-Mix's CIFAR tables use it: each
validation image votes with its ``k`` nearest training images (cosine
similarity of the backbone's pooled features), each vote weighted by
``exp(similarity / temperature)``; see :mod:`unmix_ext.knn`.

Example::

    scores = knn_accuracy(model.encoder, train_loader, val_loader, num_classes=10, k=200, temperature=0.1)
    scores["knn_top1"]     # percent
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from unmix_ext.knn import topk_accuracy, weighted_knn_scores


@torch.inference_mode()
def extract_features(
    backbone: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every image of ``loader`` (batches ``[images (B, 3, S, S), targets (B,)]``).

    The backbone runs in eval mode (BatchNorm uses its running statistics) on
    ``device`` and is left there, in the mode it was in.

    Returns:
        features (N, D) float32 and targets (N,) int64, both on ``device``.
    """
    was_training = backbone.training
    backbone.eval().to(device)
    features, targets = [], []
    for images, labels in loader:
        features.append(backbone(images.to(device, non_blocking=True)).float())
        targets.append(labels.to(device))
    backbone.train(was_training)
    return torch.cat(features), torch.cat(targets)


def knn_accuracy(
    backbone: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Weighted kNN top-1 and top-5 accuracy (percent) of the validation images against the training images.

    Returns:
        ``{"knn_top1": float, "knn_top5": float}``.
    """
    train_features, train_targets = extract_features(backbone, train_loader, device)
    val_features, val_targets = extract_features(backbone, val_loader, device)
    return knn_accuracy_of_features(train_features, train_targets, val_features, val_targets,
                                    num_classes=num_classes, k=k, temperature=temperature)


def knn_accuracy_of_features(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    val_features: torch.Tensor,
    val_targets: torch.Tensor,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, float]:
    """:func:`knn_accuracy` on features already extracted: (N, D) and (M, D), targets (N,) and (M,).

    Returns:
        ``{"knn_top1": float, "knn_top5": float}``.
    """
    scores = weighted_knn_scores(
        train_features, train_targets, val_features, num_classes=num_classes, k=k, temperature=temperature
    )
    top1, top5 = topk_accuracy(scores, val_targets, ks=(1, 5))
    return {"knn_top1": top1, "knn_top5": top5}
