"""solo-learn's names for the recipe's keys: the one table every translation reads.

A recipe (:mod:`unmix_ext.runner.config`) names its settings as solo-learn main's YAML does
(``optimizer.lr``, ``augmentations.0.rrc.crop_min_scale``); solo-learn 1.0.2, which builds the
methods, takes them as constructor arguments and command-line flags (``lr``, ``min_scale``). Each
:class:`Row` pairs the two spellings once, and every direction reads the same rows:

- recipe -> 1.0.2 constructor (:mod:`unmix_ext.runner.builder`: which ``method_kwargs`` another key
  sets, the LARS settings of ``optimizer.kwargs``; :mod:`unmix_ext.runner.pipeline`: one
  augmentation group as the keyword arguments of 1.0.2's augmentation pipeline);
- 1.0.2 flags -> recipe (:mod:`unmix_ext.tools.main_pretrain`).

Another format is another column: add a field to :class:`Row` (``None`` where that format has no
such key), fill it in the rows, and read it with :func:`by_column`.

Example::

    >>> recipe_key("eta_lars")
    'optimizer.kwargs.eta'
    >>> solo_augmentation_args(cfg.augmentations[0])["min_scale"]
    0.08
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True)
class Row:
    """One setting in each format.

    Attributes:
        solo: solo-learn's name: in :data:`METHOD` and :data:`AUGMENTATION` 1.0.2's argparse ``dest``
            (also the constructor keyword), in :data:`LINEAR_EVAL` the key of solo-learn's linear YAML.
        recipe: the recipe's dotted key (relative to one ``augmentations`` group in
            :data:`AUGMENTATION`); None where the recipe has no such key (what the runner does instead
            is the row's ``note``).
        note: why a row is not a plain copy (a rule applied on the way), for the reader.
    """

    solo: str
    recipe: str | None
    note: str = ""


#: the method's constructor arguments (and 1.0.2's flags) that are recipe keys of their own;
#: ``method_kwargs`` may not set them
METHOD = (
    Row("encoder", "backbone.name"),
    Row("backbone_args", "backbone.kwargs", "with cifar (images <= 32 px) and ViT's img_size/patch_size derived"),
    Row("zero_init_residual", "backbone.kwargs.zero_init_residual"),
    Row("patch_size", "backbone.kwargs.patch_size"),
    Row("num_classes", "data.dataset", "the classes of its labelled split"),
    Row("num_workers", "data.num_workers"),
    Row("max_epochs", "max_epochs"),
    Row("accumulate_grad_batches", "accumulate_grad_batches"),
    Row("batch_size", "optimizer.batch_size"),
    Row("optimizer", "optimizer.name", "lars is sgd with lars=True"),
    Row("lars", "optimizer.name"),
    Row("lr", "optimizer.lr", "per 256 images: x batch_size x world_size / 256"),
    Row("classifier_lr", "optimizer.classifier_lr", "per 256 images, as lr"),
    Row("weight_decay", "optimizer.weight_decay"),
    Row("extra_optimizer_args", "optimizer.kwargs", "the torch optimizer's own arguments"),
    Row("eta_lars", "optimizer.kwargs.eta"),
    Row("grad_clip_lars", "optimizer.kwargs.clip_lr"),
    Row("exclude_bias_n_norm", "optimizer.kwargs.exclude_bias_n_norm"),
    Row("scheduler", "scheduler.name"),
    Row("lr_decay_steps", "scheduler.lr_decay_steps"),
    Row("min_lr", "scheduler.min_lr"),
    Row("warmup_start_lr", "scheduler.warmup_start_lr"),
    Row("warmup_epochs", "scheduler.warmup_epochs"),
    Row("base_tau_momentum", "momentum.base_tau"),
    Row("final_tau_momentum", "momentum.final_tau"),
    Row("momentum_classifier", "momentum.classifier"),
    Row("num_large_crops", "augmentations", "groups of the first group's crop size"),
    Row("num_small_crops", "augmentations", "the other groups"),
    Row("name", "name"),
    Row("wandb", "wandb.enabled"),
    Row("project", "wandb.project"),
    Row("entity", "wandb.entity"),
    Row("offline", "wandb.offline"),
    Row("encode_indexes_into_labels", None, "DALI only; every loader here hands over image indices"),
    Row("unmix_alpha", "unmix.alpha"),
    Row("unmix_prob", "unmix.prob"),
    Row("unmix_per_sample", "unmix.per_sample"),
    Row("unmix_lam", "unmix.lam"),
    Row("unmix_view", "unmix.view"),
    Row("unmix_symmetric", "unmix.symmetric"),
    Row("unmix_target_side", "unmix.target_side"),
    Row("unmix_seed", "seed"),
)

#: one augmentation group: 1.0.2's per-pipeline flags (and its pipeline's keyword arguments)
AUGMENTATION = (
    Row("crop_size", "crop_size"),
    Row("min_scale", "rrc.crop_min_scale"),
    Row("max_scale", "rrc.crop_max_scale"),
    Row("brightness", "color_jitter.brightness"),
    Row("contrast", "color_jitter.contrast"),
    Row("saturation", "color_jitter.saturation"),
    Row("hue", "color_jitter.hue"),
    Row("color_jitter_prob", "color_jitter.prob"),
    Row("gray_scale_prob", "grayscale.prob"),
    Row("gaussian_prob", "gaussian_blur.prob"),
    Row("solarization_prob", "solarization.prob"),
    Row("horizontal_flip_prob", "horizontal_flip.prob"),
    Row("mean", "mean", "custom datasets only on 1.0.2's command line"),
    Row("std", "std", "custom datasets only on 1.0.2's command line"),
)

#: the recipe sections whose rows solo-learn main reads from that section only; its own YAMLs still
#: repeat some under ``method_kwargs`` (``ressl.yaml``: ``base_tau_momentum``...), where it ignores them
READ_FROM_SECTION_ONLY = ("momentum.",)


def by_column(rows: Iterable[Row], key: str, value: str) -> dict[str, Any]:
    """``{row.<key>: row.<value>}`` over ``rows``, leaving out rows without a ``key``."""
    return {getattr(row, key): getattr(row, value) for row in rows if getattr(row, key) is not None}


def recipe_key(solo_name: str) -> str | None:
    """The recipe key a 1.0.2 constructor argument comes from, or None when ``method_kwargs`` sets it."""
    return by_column(METHOD, "solo", "recipe").get(solo_name)


def read(obj: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``rrc.crop_min_scale``) in a dataclass or a mapping."""
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def put(mapping: dict, dotted: str, value: Any) -> None:
    """Sets ``dotted`` in a nested mapping, creating the sections on the way."""
    *sections, leaf = dotted.split(".")
    for part in sections:
        mapping = mapping.setdefault(part, {})
    mapping[leaf] = value


def section_rows(prefix: str) -> dict[str, str]:
    """``{leaf key: solo name}`` of the :data:`METHOD` rows below ``prefix`` (``optimizer.kwargs.``)."""
    return {row.recipe[len(prefix):]: row.solo for row in METHOD if row.recipe and row.recipe.startswith(prefix)}


def solo_augmentation_args(group: Any) -> dict[str, Any]:
    """One ``augmentations`` group as 1.0.2's augmentation arguments (``min_scale``, ``gray_scale_prob``...)."""
    return {row.solo: read(group, row.recipe) for row in AUGMENTATION}


#: defaults of solo-learn main (its ``solo/args/pretrain.py``, ``Checkpointer``, ``AutoResumer``) where they
#: differ from the recipe schema's (which are 1.0.2's): a file in solo-learn main's format (one with
#: Hydra's ``hydra:`` block, as all of its ``scripts/pretrain`` files have) gets these for the keys it leaves out
MAIN_DEFAULTS = {
    "scheduler.warmup_start_lr": 3e-5,
    "checkpoint.enabled": False,
    "auto_resume.enabled": False,
    "wandb.project": "solo-learn",
    "wandb.offline": False,
}

#: pretraining keys whose meaning in solo-learn's linear YAML (``scripts/linear/<dataset>/<method>.yaml``)
#: is the linear protocol's: where a recipe keeps that setting (``eval.linear``, not scaled by batch size)
LINEAR_EVAL = (
    Row("optimizer.lr", "eval.linear.lr"),
    Row("optimizer.batch_size", "eval.linear.batch_size"),
    Row("optimizer.weight_decay", "eval.linear.weight_decay"),
    Row("max_epochs", "eval.linear.max_epochs"),
    Row("scheduler.name", "eval.linear.scheduler"),
    Row("scheduler.lr_decay_steps", "eval.linear.lr_decay_steps"),
)
