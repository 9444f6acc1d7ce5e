"""``data.augment: batch``: solo-learn's N-crop augmentation drawn for a whole batch at once, on tensors.

solo-learn augments one PIL image at a time, in loader processes. On a 2-core CPU a small
network's step costs about as much as that per-image work, and the loader process competes
with the step for the cores. Here the loader only turns images into tensors (3, H, W) in
[0, 1]; :class:`BatchAugment`, its ``collate_fn``, stacks them and draws every view of the
batch with a few tensor operations, in the process that runs it (the main one with
``num_workers: 0``). It gives the batch solo-learn's ``training_step`` unpacks, as the
per-image pipeline does: ``[indices (B,), [view (B, 3, S_g, S_g) for each crop], targets (B,)]``.

What each view of a group gets, each draw independent per image and per view, from
torch's global random generator (so ``seed`` and a resumed checkpoint fix them as they fix
the per-image pipeline's):

- a random resized crop: a share of the area uniform in [``crop_min_scale``,
  ``crop_max_scale``], aspect ratio log-uniform in [3/4, 4/3] (torchvision's), each side
  the whole image where a side would exceed the image's (torchvision's fallback, without its
  redraws), position uniform; resampled bilinearly to ``crop_size``;
- a horizontal flip with probability ``horizontal_flip.prob``;
- with probability ``color_jitter.prob``, brightness then contrast (torchvision's random
  order is not kept) scaled by factors uniform in [1 - s, 1 + s], clamped to [0, 1];
- normalisation with the group's ``mean`` and ``std``.

Saturation, hue, greyscale, blur and solarization are per-image only: asking for them with
``data.augment: batch`` is a ConfigError (:func:`check_batch_augmentations`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from unmix_ext.runner.config import Augmentation, ConfigError

#: the aspect ratios (width / height) of a random resized crop, as torchvision's
RATIO = (3 / 4, 4 / 3)


def check_batch_augmentations(groups: Sequence[Augmentation]) -> None:
    """Raises ConfigError (one line, naming the key) for what :func:`augment` cannot do."""
    for i, group in enumerate(groups):
        jitter = group.color_jitter
        unsupported = {
            "color_jitter.saturation": jitter.saturation if jitter.prob > 0 else 0.0,
            "color_jitter.hue": jitter.hue if jitter.prob > 0 else 0.0,
            "grayscale.prob": group.grayscale.prob, "gaussian_blur.prob": group.gaussian_blur.prob,
            "solarization.prob": group.solarization.prob,
        }
        for key, value in unsupported.items():
            if value > 0:
                raise ConfigError(f"augmentations.{i}.{key}: data.augment=batch cannot do it (only crops, flips, "
                                  "brightness and contrast); set it to 0 or use data.augment=per_image")


def crop_grids(batch: int, side: int, scale: tuple[float, float], flip_prob: float) -> torch.Tensor:
    """Sampling grids of ``batch`` random resized crops (flipped with ``flip_prob``): (batch, side, side, 2).

    Coordinates are ``grid_sample``'s, in [-1, 1] over the source image (align_corners=False).
    """
    area = torch.empty(batch).uniform_(*scale)
    log_ratio = torch.empty(batch).uniform_(math.log(RATIO[0]), math.log(RATIO[1]))
    width, height = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()  # shares of the sides
    too_large = (width > 1) | (height > 1)  # torchvision draws again, then falls back to the whole (square) image
    width, height = width.masked_fill(too_large, 1.0), height.masked_fill(too_large, 1.0)
    centre_x = (torch.rand(batch) * 2 - 1) * (1 - width)  # the crop stays inside the image
    centre_y = (torch.rand(batch) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch) < flip_prob, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    return F.affine_grid(theta, [batch, 1, side, side], align_corners=False)


def _jitter_factors(batch: int, strength: float, applied: torch.Tensor) -> torch.Tensor:
    """(batch, 1, 1, 1) factors uniform in [1 - strength, 1 + strength] where ``applied``, else 1."""
    factors = 1 + (torch.rand(batch) * 2 - 1) * strength
    return torch.where(applied, factors, torch.ones(batch)).view(batch, 1, 1, 1)


def augment(images: torch.Tensor, group: Augmentation) -> torch.Tensor:
    """One view of every image of a batch, as ``group`` describes it (see the module docstring).

    Args:
        images: (B, 3, H, W) in [0, 1].
        group: an augmentation group with ``crop_size``, ``mean`` and ``std`` filled in.

    Returns:
        (B, 3, crop_size, crop_size), normalised.
    """
    batch = images.shape[0]
    grid = crop_grids(batch, group.crop_size, (group.rrc.crop_min_scale, group.rrc.crop_max_scale),
                      group.horizontal_flip.prob)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    jitter = group.color_jitter
    applied = torch.rand(batch) < jitter.prob
    if jitter.brightness > 0:
        views = (views * _jitter_factors(batch, jitter.brightness, applied)).clamp(0, 1)
    if jitter.contrast > 0:
        mean = views.mean(dim=(1, 2, 3), keepdim=True)  # torchvision's contrast pivots on the grey mean
        views = ((views - mean) * _jitter_factors(batch, jitter.contrast, applied) + mean).clamp(0, 1)
    mean, std = torch.tensor(group.mean).view(1, -1, 1, 1), torch.tensor(group.std).view(1, -1, 1, 1)
    return (views - mean) / std


class BatchAugment:
    """The pretraining loader's ``collate_fn`` for ``data.augment: batch``.

    Takes items ``(index, image (3, H, W) in [0, 1], target)`` and gives
    ``[indices (B,), [view (B, 3, S_g, S_g) for each crop of each group], targets (B,)]``.
    """

    def __init__(self, groups: Sequence[Augmentation]) -> None:
        check_batch_augmentations(groups)
        self.groups = list(groups)

    def __call__(self, items: Sequence[tuple[int, torch.Tensor, int]]) -> list[Any]:
        indices, images, targets = default_collate(items)
        views = [augment(images, group) for group in self.groups for _ in range(group.num_crops)]
        return [indices, views, targets]
