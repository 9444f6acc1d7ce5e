"""The input pipeline of a recipe: augmentations, datasets and their loaders.

Three views of the data, all read by :func:`unmix_ext.runner.data.build_dataset`:

- pretraining: the ``pretrain`` split through solo-learn's own N-crop
  augmentation (one pipeline per ``augmentations`` group), served as
  ``[indices (B,), [view (B, 3, S_g, S_g) for each crop], targets (B,)]``,
  the batch solo-learn's ``training_step`` unpacks (S_g: the group's crop side
  in pixels; targets -1 for unlabeled images);
- evaluation: the ``train`` and ``val`` splits without augmentation (resize to
  the crop side, or resize and centre-crop for datasets of mixed sizes, then
  normalise), served as ``[images (B, 3, S, S), targets (B,)]``;
- linear training: the ``train`` split with solo-learn's classification
  augmentation (random resized crop, horizontal flip).

Normalisation (mean, std) and the evaluation side S come from the first
augmentation group.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms

from unmix_ext.runner.batch_augment import BatchAugment, check_batch_augmentations
from unmix_ext.runner.config import Augmentation, Config, ConfigError
from unmix_ext.runner.data import DATASETS, DataError, LabelledDataset, balanced_subset, build_dataset

#: a centre crop keeps this share of the resized side (ImageNet's 224 of 256)
CENTER_CROP_SHARE = 0.875
#: share drawn above a ``limit`` before trimming, so per-class rounding never falls short of it
LIMIT_MARGIN = 1.25


def check_augmentations(cfg: Config) -> None:
    """What solo-learn 1.0.2's augmentation cannot do (newer solo-learn can); raises ConfigError."""
    for i, group in enumerate(cfg.augmentations):
        path = f"augmentations.{i}"
        if not group.rrc.enabled:
            raise ConfigError(f"{path}.rrc.enabled: solo-learn 1.0.2 always takes a random resized crop; "
                              "set it to true (crop_min_scale: 1.0 comes closest to no crop)")
        if group.equalization.prob > 0:
            raise ConfigError(f"{path}.equalization.prob: solo-learn 1.0.2 has no equalization; set it to 0")
    if cfg.data.augment == "batch":
        check_batch_augmentations(cfg.augmentations)


def _custom_transform_args(group: Augmentation) -> dict[str, Any]:
    """One solo-learn augmentation group as the keyword arguments of 1.0.2's ``CustomTransform``."""
    jitter = group.color_jitter
    return {
        "crop_size": group.crop_size, "min_scale": group.rrc.crop_min_scale, "max_scale": group.rrc.crop_max_scale,
        "brightness": jitter.brightness, "contrast": jitter.contrast, "saturation": jitter.saturation,
        "hue": jitter.hue, "color_jitter_prob": jitter.prob, "gray_scale_prob": group.grayscale.prob,
        "gaussian_prob": group.gaussian_blur.prob, "solarization_prob": group.solarization.prob,
        "horizontal_flip_prob": group.horizontal_flip.prob, "mean": group.mean, "std": group.std,
    }


def pretrain_transform(cfg: Config) -> Callable:
    """solo-learn's N-crop augmentation: PIL image -> list of tensors (3, S_g, S_g), one per crop;
    with ``data.augment: batch``, PIL image -> tensor (3, H, W) in [0, 1] (:func:`pretrain_collate` augments)."""
    from solo.utils.pretrain_dataloader import prepare_n_crop_transform, prepare_transform

    check_augmentations(cfg)
    if cfg.data.augment == "batch":
        return transforms.ToTensor()
    pipelines = [prepare_transform("custom", **_custom_transform_args(group)) for group in cfg.augmentations]
    return prepare_n_crop_transform(pipelines, [group.num_crops for group in cfg.augmentations])


def _normalize(cfg: Config) -> list[Callable]:
    group = cfg.augmentations[0]
    return [transforms.ToTensor(), transforms.Normalize(group.mean, group.std)]


def eval_transform(cfg: Config) -> Callable:
    """Deterministic PIL image -> tensor (3, S, S), S the first group's crop side."""
    side = cfg.augmentations[0].crop_size
    native = DATASETS[cfg.data.dataset].image_size
    if native is None:  # images of mixed sizes: resize the short side, keep the centre
        steps = [transforms.Resize(round(side / CENTER_CROP_SHARE)), transforms.CenterCrop(side)]
    elif native != side:
        steps = [transforms.Resize((side, side))]
    else:
        steps = []
    return transforms.Compose(steps + _normalize(cfg))


def linear_train_transform(cfg: Config) -> Callable:
    """solo-learn's linear-evaluation augmentation: PIL image -> tensor (3, S, S)."""
    side = cfg.augmentations[0].crop_size
    steps = [transforms.RandomResizedCrop(side, scale=(0.08, 1.0)), transforms.RandomHorizontalFlip()]
    return transforms.Compose(steps + _normalize(cfg))


class IndexedDataset(Dataset):
    """``(index, *item)`` for each item of ``dataset``: solo-learn's methods key memory banks by index."""

    def __init__(self, dataset: LabelledDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return (index, *self.dataset[index])


def load_split(
    cfg: Config, split: str, transform: Callable | None, limit: int | None = None
) -> LabelledDataset:
    """One split of the recipe's dataset.

    Args:
        cfg: the recipe; ``data.fraction`` thins the training splits; ``data.on_corrupt``
            applies to folder datasets.
        split: "pretrain", "train" or "val" (read from ``data.val_path`` when set).
        transform: applied to each PIL image.
        limit: keep at most this many images (a class-balanced subset), or None.

    Raises:
        DataError: one line naming ``data.train_path`` or ``data.val_path``.
    """
    data = cfg.data
    on_val_path = split == "val" and data.val_path is not None
    root, key = (data.val_path, "data.val_path") if on_val_path else (data.train_path, "data.train_path")
    fraction = 1.0 if split == "val" or data.fraction == -1 else data.fraction  # solo-learn's -1: all
    options = {"on_corrupt": data.on_corrupt} if "on_corrupt" in DATASETS[data.dataset].options else {}
    dataset = build_dataset(
        data.dataset, root, split, transform, download=data.download,
        fraction=fraction, seed=cfg.seed, root_key=key, **options,
    )
    if limit is not None and len(dataset) > limit:
        # a class-balanced share rounds per class; trim the surplus at random to exactly `limit`
        kept = balanced_subset(dataset.targets, min(1.0, LIMIT_MARGIN * limit / len(dataset)), cfg.seed)
        if len(kept) > limit:
            kept = np.sort(np.random.default_rng(cfg.seed).choice(kept, limit, replace=False))
        dataset.select(kept)
    return dataset


def pretrain_collate(cfg: Config) -> Callable:
    """The pretraining loader's ``collate_fn``: torch's default, or :class:`BatchAugment` with ``data.augment: batch``."""
    if cfg.data.augment == "batch":
        return BatchAugment(cfg.augmentations)
    return default_collate


def _loader_options(cfg: Config, persistent: bool = True) -> dict[str, Any]:
    workers = cfg.data.num_workers
    return {
        "num_workers": workers, "persistent_workers": persistent and workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }


def pretrain_loader(dataset: LabelledDataset, cfg: Config, world_size: int = 1) -> DataLoader:
    """Shuffled batches of ``optimizer.batch_size`` (per device); the last partial batch is dropped.

    Loader processes start afresh each epoch, seeded from the main process's generator,
    which a checkpoint restores: a resumed run augments exactly as an uninterrupted one.

    Raises:
        DataError: fewer images than one global batch.
    """
    batch = cfg.optimizer.batch_size
    if len(dataset) < batch * world_size:
        raise DataError(
            f"data.train_path: {len(dataset)} pretraining images under {dataset.source}, fewer than one batch "
            f"(optimizer.batch_size={batch} x {world_size} process(es))"
        )
    return DataLoader(
        IndexedDataset(dataset), batch_size=batch, shuffle=True, drop_last=True, collate_fn=pretrain_collate(cfg),
        **_loader_options(cfg, persistent=False),
    )


def eval_loader(dataset: LabelledDataset, cfg: Config, batch_size: int, shuffle: bool = False) -> DataLoader:
    """Batches ``[images, targets]`` of a labelled split, every image kept."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **_loader_options(cfg))


def num_classes(dataset: LabelledDataset) -> int:
    """Classes of a split: its class list, or 1 + the largest label when it has no names."""
    labelled = dataset.targets[dataset.targets >= 0]
    return max(dataset.num_classes, int(np.max(labelled)) + 1 if len(labelled) else 0)
