"""solo-learn's names for the recipe's keys: the one table every translation reads.

A recipe (:mod:`unmix_ext.runner.config`) names its settings as solo-learn main's YAML does
(``optimizer.lr``, ``augmentations.0.rrc.crop_min_scale``); solo-learn 1.0.2, which builds the
methods, takes them as constructor arguments and command-line flags (``lr``, ``min_scale``). Each
:class:`Row` pairs the two spellings once, and every direction reads the same rows:

- recipe -> 1.0.2 constructor (:mod:`unmix_ext.runner.builder`: which ``method_kwargs`` another key
  sets, the LARS settings of ``optimizer.kwargs``; :mod:`unmix_ext.runner.pipeline`: one
  augmentation group as the keyword arguments of 1.0.2's augmentation pipeline);
- 1.0.2 flags -> recipe (:mod:`unmix_ext.tools.main_pretrain`);
- solo-learn's ``args.json`` of any release -> recipe (:data:`ARGS_JSON`: :mod:`unmix_ext.runner.linear`'s probe
  of a solo-learn checkpoint, :mod:`unmix_ext.runner.checkpoints`' architecture) and recipe -> solo-learn main's
  ``args.json`` (:mod:`unmix_ext.tools.export`'s ``--format solo``);
- solo-learn main's linear YAML -> recipe (:data:`LINEAR_YAML`: :mod:`unmix_ext.tools.solo_eval`'s
  ``main_linear``), with the keys it accepts and does not use.

Another format is another column: add a field to :class:`Row` (``None`` where that format has no
such key), fill it in the rows, and read it with :func:`by_column`.

Example::

    >>> recipe_key("eta_lars")
    'optimizer.kwargs.eta'
    >>> solo_augmentation_args(cfg.augmentations[0])["min_scale"]
    0.08
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
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
        note: why a row is not a plain copy (a rule applied on the way), for the reader; in :data:`LINEAR_YAML`,
            for a key without a ``recipe``, why the probe does not use it (printed, recorded in results.json).
        flat: in :data:`ARGS_JSON`, the key of solo-learn's argparse namespace that ``args.json`` held before
            1.0.6 (None: that layout did not hold it as one key, or the probe never read it there).
        default: the value where a file leaves the key out (None: the recipe schema's).
    """

    solo: str
    recipe: str | None
    note: str = ""
    flat: str | None = None
    default: Any = None


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


def find(mapping: Any, dotted: str) -> Any:
    """The value at ``dotted`` in nested mappings and lists (``augmentations.0.crop_size``), or None where a part
    is missing."""
    node = mapping
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def read(obj: Any, dotted: str) -> Any:
    """The value at ``dotted`` (``rrc.crop_min_scale``) in a dataclass or a mapping."""
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def put(mapping: dict, dotted: str, value: Any) -> None:
    """Sets ``dotted`` in a nested mapping, creating the sections on the way; a number is a position in a list
    (``augmentations.0.crop_size``)."""
    parts = dotted.split(".")
    node: Any = mapping
    for part, below in zip(parts, parts[1:]):
        if isinstance(node, list):
            while len(node) <= int(part):
                node.append([] if below.isdigit() else {})
            node = node[int(part)]
        else:
            node = node.setdefault(part, [] if below.isdigit() else {})
    node[parts[-1]] = value


def recipe_from(rows: Iterable[Row], source: dict) -> dict:
    """The recipe (nested) that ``rows`` read from ``source``, a file in solo-learn main's layout: each row's value
    at its ``solo`` key, else its ``default``; rows without a ``recipe`` key, and keys with neither, are left out."""
    recipe: dict = {}
    for row in rows:
        value = find(source, row.solo)
        if value is None:
            value = copy.deepcopy(row.default)
        if row.recipe is not None and value is not None:
            put(recipe, row.recipe, value)
    return recipe


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
#: is the linear protocol's: where a recipe keeps that setting (``eval.linear``, not scaled by batch size), and
#: the probe's value where the linear YAML leaves it out
LINEAR_EVAL = (
    Row("optimizer.lr", "eval.linear.lr", "x batch_size x devices x num_nodes / 256 (linear_lr)", default=0.1),
    Row("optimizer.batch_size", "eval.linear.batch_size", default=256),
    Row("optimizer.weight_decay", "eval.linear.weight_decay", default=0.0),
    Row("max_epochs", "eval.linear.max_epochs", default=100),
    Row("scheduler.name", "eval.linear.scheduler", default="step"),
    Row("scheduler.lr_decay_steps", "eval.linear.lr_decay_steps", default=[60, 80]),
)


def linear_lr(lr: float, batch_size: int, devices: Any, num_nodes: int) -> float:
    """solo-learn's linear lr: ``lr`` per 256 images x the whole batch (``devices``: a count or a list of ids).

    Computed from three keys, so code next to :data:`LINEAR_EVAL`, not a row.
    """
    device_count = len(devices) if isinstance(devices, list) else devices if isinstance(devices, int) else 1
    return lr * batch_size * device_count * num_nodes / 256


#: solo-learn main's linear YAML -> the probe's recipe (with :data:`LINEAR_EVAL`); a row without ``recipe``: a key
#: the probe accepts and does not use, its ``note`` says why. ``pretrain_method`` names a method the probe never
#: builds: :func:`unmix_ext.runner.linear.probe_method` reads one 1.0.2 lacks as simclr.
LINEAR_YAML = (
    Row("name", "name", default="linear"),
    Row("pretrain_method", "method"),
    Row("backbone.name", "backbone.name", default="resnet18"),
    Row("data.dataset", "data.dataset"),
    Row("data.train_path", "data.train_path"),
    Row("data.val_path", "data.val_path"),
    Row("data.num_workers", "data.num_workers"),
    Row("data.fraction", "data.fraction"),
    Row("data.augmentations.crop_size", "augmentations.0.crop_size"),
    Row("data.augmentations.mean", "augmentations.0.mean"),
    Row("data.augmentations.std", "augmentations.0.std"),
    *LINEAR_EVAL,
    *(Row(key, f"eval.linear.{key}") for key in ("finetune", "mixup", "cutmix", "label_smoothing")),
    Row("checkpoint.dir", "checkpoint.dir"),
    Row("wandb", "wandb"),
    *(Row(key, key) for key in ("devices", "accelerator", "strategy", "precision", "sync_batchnorm", "num_nodes",
                                "seed", "scale")),
    Row("checkpoint.enabled", None, "the probe writes no checkpoint, only results.json"),
    Row("checkpoint.frequency", None, "the probe writes no checkpoint"),
    Row("checkpoint.keep_prev", None, "the probe writes no checkpoint"),
    Row("auto_resume", None, "a probe is not resumed; rerunning it trains it again"),
    Row("performance", None, "channels-last memory order is the recipe key channels_last"),
    Row("dali", None, "the images are read by torchvision's readers"),
    Row("data.format", None, "the images are read by torchvision's readers (dali: the same folders)"),
    Row("backbone.kwargs", None, "the backbone is the checkpoint's, built as its own files say"),
    Row("optimizer.kwargs", None, "the probe's SGD has momentum 0.9, as solo-learn's default"),
    Row("optimizer.exclude_bias_n_norm_wd", None, "the probe has one linear layer"),
    Row("scheduler.min_lr", None, "solo-learn 1.0.2's probe schedules to 0"),
    Row("scheduler.warmup_start_lr", None, "no warm-up"),
    Row("scheduler.warmup_epochs", None, "no warm-up"),
    Row("scheduler.interval", None, "the probe's lr moves once per epoch"),
    Row("accumulate_grad_batches", None, "one batch per step"),
)

#: solo-learn's saved config (``args.json`` beside each of its checkpoints) <-> the recipe: ``solo`` is the key in
#: solo-learn main's nested layout (1.0.6 and later; what ``export --format solo`` writes), ``flat`` the key in
#: the argparse namespace before (1.0.2 ... 1.0.5); the rows say which data a probe reads and what the backbone is
ARGS_JSON = (
    Row("method", "method", flat="method"),
    Row("method_kwargs", "method_kwargs", "flat: the method's arguments sit among all the others, unmarked"),
    Row("backbone.name", "backbone.name", "1.0.3 ... 1.0.5", flat="backbone"),
    Row("backbone.name", "backbone.name", "1.0.2", flat="encoder"),
    Row("backbone.kwargs", "backbone.kwargs", "its cifar flag is the ResNet's stem", flat="backbone_args"),
    Row("data.dataset", "data.dataset", flat="dataset"),
    Row("data.train_path", "data.train_path", "flat: data_dir / train_dir (flat_data_paths)"),
    Row("data.val_path", "data.val_path", "flat: data_dir / val_dir (flat_data_paths)"),
    Row("data.num_workers", "data.num_workers"),
    Row("data.fraction", "data.fraction"),
    Row("augmentations.0.crop_size", "augmentations.0.crop_size"),
    Row("augmentations.0.mean", "augmentations.0.mean"),
    Row("augmentations.0.std", "augmentations.0.std"),
)


def flat_data_paths(args: dict) -> dict[str, str | None]:
    """The data paths of a flat ``args.json`` (before 1.0.6): ``data_dir`` joined with ``train_dir`` / ``val_dir``.

    Each is computed from two keys, so code next to :data:`ARGS_JSON`, not a row.
    """
    base = Path(args.get("data_dir") or ".")
    return {"data.train_path": str(base / args["train_dir"]) if args.get("train_dir") else str(base),
            "data.val_path": str(base / args["val_dir"]) if args.get("val_dir") else None}


def args_json_recipe(args: dict) -> dict:
    """The recipe keys of :data:`ARGS_JSON` that solo-learn's ``args.json`` of any release sets (nested)."""
    if isinstance(args.get("data"), dict) or isinstance(args.get("backbone"), dict):
        return recipe_from(ARGS_JSON, args)
    nested: dict = {}
    for row in ARGS_JSON:  # the first row of a key that the namespace holds wins (backbone before encoder)
        if row.flat is not None and args.get(row.flat) is not None and find(nested, row.solo) is None:
            put(nested, row.solo, args[row.flat])
    for key, value in flat_data_paths(args).items():
        if value is not None:
            put(nested, key, value)
    return recipe_from(ARGS_JSON, nested)


def args_json_of(recipe: dict[str, Any]) -> dict:
    """solo-learn main's ``args.json`` layout (nested) of ``{recipe key: value}`` (:data:`ARGS_JSON`'s keys)."""
    args: dict = {}
    for row in ARGS_JSON:
        if row.recipe in recipe:
            put(args, row.solo, recipe[row.recipe])
    return args
