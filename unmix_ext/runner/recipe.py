"""A recipe loaded and checked whole: the one validation entry point, called once when a recipe is loaded.

:func:`check_recipe` runs every rule a recipe must meet before anything is trained, each where it
is defined: the schema and the rules tying its keys together (:func:`unmix_ext.runner.config.validate`),
what solo-learn 1.0.2 can build of it (:func:`unmix_ext.runner.builder.check_method`), what its
augmentation pipelines can draw (:func:`unmix_ext.runner.pipeline.check_augmentations`), and the data
rules below. Every command loads its recipe through :func:`load_recipe` or :func:`recipe_from_dict`.

What is checked later, because it depends on the machine or the files and not on the recipe: the
devices (:func:`unmix_ext.runner.trainer.device_plan`), the data on disk
(:mod:`unmix_ext.runner.data`), the checkpoint folder and a checkpoint to resume
(:mod:`unmix_ext.runner.run`, :mod:`unmix_ext.runner.trainer`).

Example::

    cfg = load_recipe("scripts/pretrain/cifar/simclr.yaml", ["unmix.enabled=true", "scale=smoke"])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.runner.builder import check_method, ssl_methods
from unmix_ext.runner.config import Config, ConfigError, config_from_dict, load_config, validate
from unmix_ext.runner.data import DATASETS
from unmix_ext.runner.pipeline import check_augmentations

#: the dataset whose images may come without labels (solo-learn's ``custom`` data)
UNLABELLED_DATASETS = ("image_folder",)


def _check_data(cfg: Config) -> None:
    """Data format, crop sides, batch size and unlabelled data; raises ConfigError."""
    if cfg.data.format == "dali" and cfg.scale == "full":
        raise ConfigError(
            "data.format: dali needs solo-learn's DALI loader (a GPU and nvidia-dali-cuda130), which unmix_ext does "
            "not drive yet; use data.format=image_folder (the same folders, read by CPU workers), or scale=smoke"
        )
    # crops and batches as the recipe asks them, before the smoke shrink makes them small
    spec = DATASETS[cfg.data.dataset]
    native = spec.image_size
    for i, group in enumerate(cfg.augmentations):
        # a folder of mixed sizes (ImageNet) upsamples its small images, as every ImageNet pipeline does
        if native is not None and group.crop_size > native:
            raise ConfigError(
                f"augmentations.{i}.crop_size: {group.crop_size} px is larger than the {native}x{native} images of "
                f"{cfg.data.dataset}, which would only be upsampled; use a crop_size <= {native}"
            )
    # (a folder's own count is checked when it is read: pipeline.pretrain_loader)
    batch, images = cfg.optimizer.batch_size, spec.pretrain_images
    if images is not None and batch > images:
        raise ConfigError(f"optimizer.batch_size: {batch} images per batch, more than the {images} pretraining images "
                          f"of {cfg.data.dataset}; use a batch_size <= {images}")
    if cfg.data.no_labels:
        if cfg.data.dataset not in UNLABELLED_DATASETS:
            raise ConfigError(f"data.no_labels: true is for a folder of images (data.dataset: custom), not "
                              f"{cfg.data.dataset}, whose images have labels; set it to false")
        if cfg.momentum.classifier:
            raise ConfigError("momentum.classifier: true trains a classifier, but data.no_labels is true; set it "
                              "to false")


def check_recipe(cfg: Config) -> Config:
    """Every rule a recipe must meet (see the module docstring); returns ``cfg``.

    Raises:
        ConfigError: one line naming the first wrong key.
    """
    validate(cfg, ssl_methods())
    check_method(cfg)
    check_augmentations(cfg)
    _check_data(cfg)
    return cfg


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """The recipe file at ``path`` with ``overrides`` (:func:`unmix_ext.runner.config.load_config`), checked."""
    return check_recipe(load_config(path, overrides, ssl_methods()))


def recipe_from_dict(data: Any) -> Config:
    """A recipe from a mapping (:func:`unmix_ext.runner.config.config_from_dict`), checked."""
    return check_recipe(config_from_dict(data, ssl_methods()))
