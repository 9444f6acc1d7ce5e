"""The solo-learn method a recipe describes: its class and constructor arguments.

Every constructor argument starts from solo-learn's own argparse default
(:func:`unmix_ext.solo_kwargs.method_kwargs`); the recipe then sets:

========================== ===============================================
solo-learn argument        recipe key
========================== ===============================================
encoder, backbone_args     ``backbone.name``, ``backbone.kwargs`` (merged
                           last over ``cifar`` = images of at most 32 px,
                           and ``img_size``/``patch_size`` for ViT/Swin);
                           ``timm/<model>``: any timm model
                           (:mod:`unmix_ext.backbones`)
optimizer, lars            ``optimizer.name``: sgd, lars (SGD wrapped in
                           LARS) or adamw
lr                         ``optimizer.lr``, used as written; with
                           ``optimizer.kwargs.scale_lr: true`` it is scaled
                           by solo-learn 1.0.2's rule
                           ``lr * batch_size * world_size / 256``
classifier_lr,             ``optimizer.classifier_lr``,
weight_decay, batch_size   ``optimizer.weight_decay``, ``optimizer.batch_size``
                           (per device)
eta_lars, grad_clip_lars,  ``optimizer.kwargs.eta``, ``.clip_lr``,
exclude_bias_n_norm        ``.exclude_bias_n_norm`` (LARS only)
extra_optimizer_args       the other ``optimizer.kwargs`` (SGD/LARS default
                           ``momentum: 0.9``)
scheduler, warmup_epochs,  ``scheduler.*``
warmup_start_lr, min_lr,
lr_decay_steps
num_large_crops,           ``augmentations``: groups with the first group's
num_small_crops            crop size are large crops, the others small
max_epochs                 ``max_epochs``
knn_eval                   ``eval.knn.enabled`` (the online kNN; turn it
                           off with ``method_kwargs.knn_eval: false``)
unmix_*                    ``unmix.*`` and ``seed`` (``<method>_unmix`` only)
anything else              ``method_kwargs``, verbatim
========================== ===============================================

Example::

    cfg = load_config("recipes/simclr-cifar10.yaml")
    model = build_method(cfg, num_classes=10)     # a solo.methods.SimCLR
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch

from unmix_ext.backbones import is_timm_name, timm_model_name, unknown_timm_model
from unmix_ext.config import UNMIX_SUFFIX, Config, ConfigError, resolved_method
from unmix_ext.data import DATASETS
from unmix_ext.solo_kwargs import method_kwargs, solo_defaults

#: native image side (pixels) up to which ResNets get the CIFAR stem (3x3 conv, no max-pool)
CIFAR_STEM_MAX_SIDE = 32
#: solo-learn's rule for linearly scaled learning rates: lr is given per this many images
LR_REFERENCE_BATCH = 256

# optimizer.kwargs the runner reads itself (LARS settings), by solo-learn argument
_LARS_KWARGS = {"eta": "eta_lars", "clip_lr": "grad_clip_lars", "exclude_bias_n_norm": "exclude_bias_n_norm"}
_TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "lars": torch.optim.SGD, "adamw": torch.optim.AdamW}

# solo-learn arguments that come from another recipe key; method_kwargs may not set them
_DERIVED = {
    "encoder": "backbone.name",
    "backbone_args": "backbone.kwargs",
    "num_classes": "data.dataset",
    "max_epochs": "max_epochs",
    "batch_size": "optimizer.batch_size",
    "optimizer": "optimizer.name",
    "lars": "optimizer.name",
    "lr": "optimizer.lr",
    "classifier_lr": "optimizer.classifier_lr",
    "weight_decay": "optimizer.weight_decay",
    "extra_optimizer_args": "optimizer.kwargs",
    "eta_lars": "optimizer.kwargs.eta",
    "grad_clip_lars": "optimizer.kwargs.clip_lr",
    "exclude_bias_n_norm": "optimizer.kwargs.exclude_bias_n_norm",
    "accumulate_grad_batches": "optimizer.batch_size (gradient accumulation is not supported)",
    "scheduler": "scheduler.name",
    "lr_decay_steps": "scheduler.lr_decay_steps",
    "min_lr": "scheduler.min_lr",
    "warmup_start_lr": "scheduler.warmup_start_lr",
    "warmup_epochs": "scheduler.warmup_epochs",
    "num_large_crops": "augmentations",
    "num_small_crops": "augmentations",
    "unmix_alpha": "unmix.alpha",
    "unmix_prob": "unmix.prob",
    "unmix_per_sample": "unmix.per_sample",
    "unmix_lam": "unmix.lam",
    "unmix_view": "unmix.view",
    "unmix_symmetric": "unmix.symmetric",
    "unmix_target_side": "unmix.target_side",
    "unmix_seed": "seed",
}


def ssl_methods() -> dict[str, type]:
    """The buildable methods of ``solo.methods.METHODS`` (the Un-Mix variants included), by name."""
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod

    return {name: cls for name, cls in METHODS.items() if issubclass(cls, BaseMethod) and cls is not BaseMethod}


def method_class(cfg: Config) -> type:
    """The class of the recipe's method (``<method>_unmix`` when ``unmix.enabled``)."""
    methods = ssl_methods()
    name = resolved_method(cfg)
    if name not in methods:
        close = difflib.get_close_matches(name, methods, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(methods))}"
        raise ConfigError(f"method: unknown method {name!r}; {hint}")
    return methods[name]


def crop_counts(cfg: Config) -> tuple[int, int]:
    """``(num_large_crops, num_small_crops)``: groups of the first group's crop size are large (solo-learn's rule).

    Raises:
        ConfigError: a large-crop group after a small one (solo-learn reads the large crops first).
    """
    large_size = cfg.augmentations[0].crop_size
    large = small = 0
    for i, group in enumerate(cfg.augmentations):
        if group.crop_size == large_size:
            if small:
                raise ConfigError(
                    f"augmentations.{i}: a group of the large crop size ({large_size}) must come before "
                    "the groups of smaller crops"
                )
            large += group.num_crops
        else:
            small += group.num_crops
    return large, small


def backbone_args(cfg: Config) -> dict[str, Any]:
    """Keyword arguments of the backbone: solo-learn's derived ones, then ``backbone.kwargs``."""
    name = cfg.backbone.name
    native = DATASETS[cfg.data.dataset].image_size
    args: dict[str, Any] = {"cifar": native is not None and native <= CIFAR_STEM_MAX_SIDE}
    if is_timm_name(name):  # its own arguments size a timm model; the stem exists on ResNet-style ones only
        args["cifar"] = args["cifar"] and timm_model_name(name).startswith("resnet")
    elif name.startswith("resnet"):
        args["zero_init_residual"] = False
    else:  # timm transformers build their position embeddings for one input side
        args["img_size"] = cfg.augmentations[0].crop_size
        if name.startswith("vit"):
            args["patch_size"] = 16
    args.update(cfg.backbone.kwargs)
    return args


def _optimizer_args(cfg: Config, world_size: int) -> dict[str, Any]:
    """Optimizer-related solo-learn arguments from ``optimizer.*``; raises ConfigError on a bad kwarg."""
    opt = cfg.optimizer
    extra = {"momentum": 0.9} if opt.name in ("sgd", "lars") else {}
    solo_args: dict[str, Any] = {}
    accepted = set(inspect.signature(_TORCH_OPTIMIZERS[opt.name]).parameters) - {"params", "lr", "weight_decay"}
    for key, value in opt.kwargs.items():
        path = f"optimizer.kwargs.{key}"
        if key in _LARS_KWARGS:
            if opt.name != "lars":
                raise ConfigError(f"{path}: a LARS setting, but optimizer.name is {opt.name!r}")
            solo_args[_LARS_KWARGS[key]] = value
        elif key == "scale_lr":
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: expected true or false, got {value!r}")
        elif key in accepted:
            extra[key] = value
        else:
            allowed = sorted(accepted | {"scale_lr"} | (set(_LARS_KWARGS) if opt.name == "lars" else set()))
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean optimizer.kwargs.{close[0]}?" if close else f"allowed: {', '.join(allowed)}"
            raise ConfigError(f"{path}: not an argument of {opt.name}; {hint}")
    lr = opt.lr * opt.batch_size * world_size / LR_REFERENCE_BATCH if opt.kwargs.get("scale_lr") else opt.lr
    return {
        "optimizer": "adamw" if opt.name == "adamw" else "sgd",
        "lars": opt.name == "lars",
        "lr": lr,
        "classifier_lr": opt.classifier_lr,
        "weight_decay": opt.weight_decay,
        "batch_size": opt.batch_size,
        "extra_optimizer_args": extra,
        **solo_args,
    }


def _accepted_arguments(cls: type) -> set[str]:
    """Names ``cls`` takes: its solo-learn argparse options and every ``__init__`` parameter up its MRO."""
    names = set(solo_defaults(cls))
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names - {"self", "args", "kwargs"}


def _check_method_kwargs(cfg: Config, cls: type) -> None:
    accepted = _accepted_arguments(cls)
    for key in cfg.method_kwargs:
        path = f"method_kwargs.{key}"
        if key in _DERIVED:
            raise ConfigError(f"{path}: set from {_DERIVED[key]}; set it there")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean method_kwargs.{close[0]}?" if close else ""
            raise ConfigError(f"{path}: not an argument of {resolved_method(cfg)}{hint}")


def check_method(cfg: Config) -> None:
    """Everything :func:`solo_method_kwargs` rejects, without building anything; raises ConfigError."""
    from solo.methods.base import BaseMethod

    cls = method_class(cfg)
    supported = BaseMethod._SUPPORTED_ENCODERS
    if is_timm_name(cfg.backbone.name):
        reason = unknown_timm_model(cfg.backbone.name)
        if reason is not None:
            raise ConfigError(f"backbone.name: {reason}")
    elif cfg.backbone.name not in supported:
        close = difflib.get_close_matches(cfg.backbone.name, supported, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"backbone.name: expected one of {', '.join(supported)} or timm/<model>, "
                          f"got {cfg.backbone.name!r}{hint}")
    crop_counts(cfg)
    _optimizer_args(cfg, world_size=1)
    _check_method_kwargs(cfg, cls)


def solo_method_kwargs(cfg: Config, num_classes: int, world_size: int = 1) -> dict[str, Any]:
    """All constructor arguments of the recipe's method (see the module docstring for where each comes from).

    Args:
        cfg: a validated recipe.
        num_classes: classes of the labelled split (online classifier and kNN).
        world_size: processes training together (devices x nodes), for ``scale_lr``.
    """
    check_method(cfg)
    cls = method_class(cfg)
    num_large, num_small = crop_counts(cfg)
    sched = cfg.scheduler
    mapped: dict[str, Any] = {
        "encoder": cfg.backbone.name,
        "backbone_args": backbone_args(cfg),
        **_optimizer_args(cfg, world_size),
        "scheduler": sched.name,
        "warmup_epochs": sched.warmup_epochs,
        "warmup_start_lr": sched.warmup_start_lr,
        "min_lr": sched.min_lr,
        "lr_decay_steps": sched.lr_decay_steps,
        "knn_eval": cfg.eval.knn.enabled,
    }
    if resolved_method(cfg).endswith(UNMIX_SUFFIX):
        u = cfg.unmix
        mapped.update(
            unmix_alpha=u.alpha, unmix_prob=u.prob, unmix_per_sample=u.per_sample, unmix_lam=u.lam,
            unmix_view=u.view, unmix_symmetric=u.symmetric, unmix_target_side=u.target_side, unmix_seed=cfg.seed,
        )
    mapped.update(cfg.method_kwargs)
    kwargs = method_kwargs(
        cls, num_classes=num_classes, cifar=mapped["backbone_args"]["cifar"], max_epochs=cfg.max_epochs,
        num_large_crops=num_large, num_small_crops=num_small, **mapped,
    )
    # method_kwargs() empties extra_optimizer_args for any optimizer but SGD; AdamW's betas are ours to keep
    kwargs["extra_optimizer_args"] = mapped["extra_optimizer_args"]
    return kwargs


def build_method(cfg: Config, num_classes: int, world_size: int = 1):
    """The recipe's solo-learn method, a ``pytorch_lightning.LightningModule``."""
    return method_class(cfg)(**solo_method_kwargs(cfg, num_classes, world_size))
