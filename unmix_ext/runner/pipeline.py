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
from unmix_ext.runner.config import Config, ConfigError
from unmix_ext.runner.data import (
    DATASETS,
    DataError,
    LabelledDataset,
    balanced_subset,
    build_dataset,
    has_val_split,
)
from unmix_ext.runner.solo_format import solo_augmentation_args

#: a centre crop keeps this share of the resized side (ImageNet's 224 of 256)
CENTER_CROP_SHARE = 0.875
#: share of a one-folder image dataset held out for scoring when the recipe gives no ``data.val_path``
HELD_OUT_SHARE = 0.1
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


def pretrain_transform(cfg: Config) -> Callable:
    """solo-learn's N-crop augmentation: PIL image -> list of tensors (3, S_g, S_g), one per crop;
    with ``data.augment: batch``, PIL image -> tensor (3, H, W) in [0, 1] (:func:`pretrain_collate` augments)."""
    from solo.utils.pretrain_dataloader import prepare_n_crop_transform, prepare_transform

    if cfg.data.augment == "batch":
        return transforms.ToTensor()
    pipelines = [prepare_transform("custom", **solo_augmentation_args(group)) for group in cfg.augmentations]
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


def eval_split(cfg: Config) -> str | None:
    """Which images the scores (online classifier, kNN, linear) come from; :data:`EVAL_SPLITS` says each in words.

    ``val_path``: the folder ``data.val_path``; ``dataset``: the dataset's own validation or test
    split under ``data.train_path``; ``held_out``: with no ``data.val_path`` and an image folder
    without a ``val/`` subfolder, a class-balanced :data:`HELD_OUT_SHARE` of it, seeded by ``seed`` and left out of
    pretraining; None: no scores (``data.no_labels``).
    """
    data = cfg.data
    if data.no_labels:
        return None
    if data.val_path is not None:
        return "val_path"
    return "dataset" if has_val_split(data.dataset, data.train_path) else "held_out"


def describe_eval_split(cfg: Config) -> str:
    """:func:`eval_split` in words, for the printed summary."""
    return {
        "val_path": f"data.val_path ({cfg.data.val_path})",
        "dataset": f"the {cfg.data.dataset} validation/test split",
        "held_out": f"{HELD_OUT_SHARE:.0%} of data.train_path held out (no data.val_path; not pretrained on)",
        None: "none: data.no_labels is true, so nothing is scored",
    }[eval_split(cfg)]


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
    held_out = eval_split(cfg) == "held_out"
    dataset = build_dataset(
        data.dataset, root, "train" if held_out else split, transform, download=data.download,
        fraction=1.0 if held_out else fraction, seed=cfg.seed, root_key=key, **options,
    )
    if held_out:  # no val folder: the val images are a share of the training images the training splits never see
        val = balanced_subset(dataset.targets, HELD_OUT_SHARE, cfg.seed)
        dataset.select(val if split == "val" else np.setdiff1d(np.arange(len(dataset)), val))
        if fraction < 1:
            dataset.select(balanced_subset(dataset.targets, fraction, cfg.seed))
    if data.no_labels:  # solo-learn's unlabelled custom data: class folders, if any, are not labels
        dataset.targets[:] = -1
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
