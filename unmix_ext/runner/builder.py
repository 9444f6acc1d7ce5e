"""The solo-learn method a recipe describes: its class and constructor arguments.

Every constructor argument starts from solo-learn's own argparse default
(:func:`unmix_ext.runner.solo_kwargs.method_kwargs`); the recipe then sets those that
:data:`unmix_ext.runner.solo_format.METHOD` pairs with a recipe key, with these rules on the way:

- ``backbone.kwargs`` is merged last over ``cifar`` (images of at most 32 px) and, for ViT/Swin,
  ``img_size``/``patch_size``; ``timm/<model>`` is any timm model (:mod:`unmix_ext.backbones`);
- ``optimizer.name``: sgd, lars (SGD wrapped in LARS), adam or adamw; ``optimizer.lr`` and
  ``optimizer.classifier_lr`` are per 256 images, scaled by solo-learn's rule
  ``lr * batch_size * world_size / 256`` (its ``main_pretrain.py``); the LARS rows of
  ``optimizer.kwargs`` go to LARS, the others to the torch optimizer (SGD/LARS default ``momentum: 0.9``);
- ``momentum.*`` for momentum methods only (null: the method's default);
- ``num_large_crops``/``num_small_crops``: groups with the first group's crop size are large crops;
- ``knn_eval`` (the online kNN) is ``eval.knn.enabled``; ``unmix_*`` (``<method>_unmix`` only);
- anything else: ``method_kwargs``, verbatim.

Example::

    cfg = load_recipe("recipes/small/simclr-cifar10.yaml")   # unmix_ext.runner.recipe: checked
    model = build_method(cfg, num_classes=10)     # a solo.methods.SimCLR
"""
from __future__ import annotations

import difflib
import functools
import inspect
import re
from typing import Any

import torch

from unmix_ext.backbones import build_timm_encoder, is_timm_name, is_vit_name, timm_model_name, unknown_timm_model
from unmix_ext.methods import UNMIX_SUFFIX
from unmix_ext.runner.config import LEFTOVER_KEYS, Config, ConfigError, Dali, check_method_name, resolved_method
from unmix_ext.runner.data import DATASETS
from unmix_ext.runner.solo_format import READ_FROM_SECTION_ONLY, read, recipe_key, section_rows
from unmix_ext.runner.solo_kwargs import method_kwargs, solo_defaults

#: native image side (pixels) up to which ResNets get the CIFAR stem (3x3 conv, no max-pool)
CIFAR_STEM_MAX_SIDE = 32
#: solo-learn's rule for linearly scaled learning rates: lr and classifier_lr are given per this many images
LR_REFERENCE_BATCH = 256

_TORCH_OPTIMIZERS = {"sgd": torch.optim.SGD, "lars": torch.optim.SGD, "adam": torch.optim.Adam,
                     "adamw": torch.optim.AdamW}
# optimizer.kwargs the runner reads itself (LARS settings): leaf key -> solo-learn argument
_LARS_KWARGS = section_rows("optimizer.kwargs.")


#: methods that train on any number of large crops (solo-learn's own rule); every other takes exactly two
ANY_LARGE_CROPS = ("mae", "wmse")
#: methods whose loss uses small crops (multi-crop) in solo-learn 1.0.2, with the multicrop_codes patch;
#: the others unpack two views (a traceback) or compute the small crops and leave them out of the loss
SMALL_CROPS = ("byol", "dino", "simclr", "supcon", "swav")


def ssl_methods() -> dict[str, type]:
    """The buildable methods of ``solo.methods.METHODS`` (the Un-Mix variants included), by name."""
    from solo.methods import METHODS
    from solo.methods.base import BaseMethod

    return {name: cls for name, cls in METHODS.items() if issubclass(cls, BaseMethod) and cls is not BaseMethod}


def method_class(cfg: Config) -> type:
    """The class of the recipe's method (``<method>_unmix`` when ``unmix.enabled``)."""
    methods = ssl_methods()
    check_method_name(resolved_method(cfg), methods)
    return methods[resolved_method(cfg)]


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
        elif key in accepted:
            extra[key] = value
        else:
            allowed = sorted(accepted | (set(_LARS_KWARGS) if opt.name == "lars" else set()))
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean optimizer.kwargs.{close[0]}?" if close else f"allowed: {', '.join(allowed)}"
            raise ConfigError(f"{path}: not an argument of {opt.name}; {hint}")
    scale = opt.batch_size * world_size / LR_REFERENCE_BATCH
    return {
        "optimizer": opt.name if opt.name in ("adam", "adamw") else "sgd",
        "lars": opt.name == "lars",
        "lr": opt.lr * scale,
        "classifier_lr": opt.classifier_lr * scale,
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


@functools.cache
def _solo_argument_names() -> frozenset[str]:
    """Every argument some solo-learn method (or Un-Mix variant) takes."""
    return frozenset().union(*(_accepted_arguments(cls) for cls in ssl_methods().values()))


def ignored_keys(cfg: Config) -> list[str]:
    """The keys solo-learn main accepts and ignores for the recipe's method, which the build leaves out too.

    - ``momentum.*`` of a method without a momentum encoder (solo-learn reads that section in its
      momentum methods only; its ``nnsiam.yaml`` sets it);
    - ``method_kwargs`` that repeat a section solo-learn main reads on its own
      (:data:`unmix_ext.runner.solo_format.READ_FROM_SECTION_ONLY`; its ``ressl.yaml`` writes
      ``base_tau_momentum``...);
    - ``method_kwargs`` that another solo-learn method takes but this one does not (solo-learn
      hands ``method_kwargs`` to the method, which reads what it knows; its ``simsiam.yaml`` sets
      ``temperature``). A name no method takes is refused as a typo (:func:`check_method`);
    - ``dali.*`` (DALI is not used here, see :class:`unmix_ext.runner.config.Dali`) and
      :data:`unmix_ext.runner.config.LEFTOVER_KEYS` (read by nothing in solo-learn main), when set.
    """
    from solo.methods.base import BaseMomentumMethod

    cls = method_class(cfg)
    ignored = []
    if not issubclass(cls, BaseMomentumMethod):
        m = cfg.momentum
        ignored += [f"momentum.{key}" for key, value in (("base_tau", m.base_tau), ("final_tau", m.final_tau),
                                                          ("classifier", m.classifier or None)) if value is not None]
    ignored += [f"dali.{key}" for key, value in vars(cfg.dali).items() if value != getattr(Dali(), key)]
    ignored += [key for key in LEFTOVER_KEYS if getattr(cfg, key) is not None]
    accepted = _accepted_arguments(cls)
    for key in cfg.method_kwargs:
        read_elsewhere = (recipe_key(key) or "").startswith(READ_FROM_SECTION_ONLY)
        if read_elsewhere or (key not in accepted and recipe_key(key) is None and key in _solo_argument_names()):
            ignored.append(f"method_kwargs.{key}")
    return ignored


def ignored_keys_notice(cfg: Config) -> str | None:
    """One line listing :func:`ignored_keys`, or None when there are none."""
    ignored = ignored_keys(cfg)
    if not ignored:
        return None
    return (f"notice: {resolved_method(cfg)} does not use {', '.join(ignored)}; accepted and ignored, as "
            "solo-learn does (see ignored_keys in results.json)")


def _check_method_kwargs(cfg: Config, cls: type) -> None:
    accepted = _accepted_arguments(cls)
    ignored = ignored_keys(cfg)
    for key in cfg.method_kwargs:
        path = f"method_kwargs.{key}"
        if path in ignored:
            continue
        if recipe_key(key) is not None:
            raise ConfigError(f"{path}: set from {recipe_key(key)}; set it there")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean method_kwargs.{close[0]}?" if close else ""
            raise ConfigError(f"{path}: not an argument of {resolved_method(cfg)}{hint}")


def _momentum_args(cfg: Config, cls: type) -> dict[str, Any]:
    """``momentum.*`` as solo-learn 1.0.2 arguments (null: the method's default); none for a method
    without a momentum encoder."""
    from solo.methods.base import BaseMomentumMethod

    m = cfg.momentum
    named = {"base_tau_momentum": m.base_tau, "final_tau_momentum": m.final_tau,
             "momentum_classifier": True if m.classifier else None}
    if not issubclass(cls, BaseMomentumMethod):
        return {}  # solo-learn ignores the section here: ignored_keys() lists it
    return {key: value for key, value in named.items() if value is not None}


def _check_crops(cfg: Config) -> None:
    large, small = crop_counts(cfg)
    base = resolved_method(cfg).removesuffix(UNMIX_SUFFIX)
    if small and base not in SMALL_CROPS:
        first = next(i for i, group in enumerate(cfg.augmentations)
                     if group.crop_size != cfg.augmentations[0].crop_size)
        raise ConfigError(
            f"augmentations.{first}: {base} trains on its large crops only in solo-learn 1.0.2 (multi-crop: "
            f"{', '.join(SMALL_CROPS)}); remove the groups of smaller crops"
        )
    if base not in ANY_LARGE_CROPS and large != 2:
        raise ConfigError(
            f"augmentations: {resolved_method(cfg)} compares two large views, so the groups of the first crop size "
            f"({cfg.augmentations[0].crop_size} px) must give num_crops 2 in all, got {large}"
        )


def check_method(cfg: Config) -> None:
    """Everything :func:`solo_method_kwargs` rejects, without building anything; raises ConfigError."""
    from solo.methods.base import BaseMethod

    cls = method_class(cfg)
    supported = BaseMethod._SUPPORTED_ENCODERS
    if is_timm_name(cfg.backbone.name):
        reason = unknown_timm_model(cfg.backbone.name)
        if reason is not None:
            raise ConfigError(f"backbone.name: {reason}")
        _check_timm_kwargs(cfg)
    elif cfg.backbone.name not in supported:
        close = difflib.get_close_matches(cfg.backbone.name, supported, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"backbone.name: expected one of {', '.join(supported)} or timm/<model>, "
                          f"got {cfg.backbone.name!r}{hint}")
    if getattr(cls, "needs_vit", False) and not is_vit_name(cfg.backbone.name):
        raise ConfigError(f"backbone.name: {resolved_method(cfg)} trains a ViT only (vit_tiny, vit_small, vit_base, "
                          f"vit_large or timm/vit_*), got {cfg.backbone.name!r}")
    _check_crops(cfg)
    _optimizer_args(cfg, world_size=1)
    _momentum_args(cfg, cls)
    _check_method_kwargs(cfg, cls)


def _check_timm_kwargs(cfg: Config) -> None:
    """Builds the timm backbone on the meta device (no memory, milliseconds): ``backbone.kwargs`` that
    :func:`unmix_ext.backbones.build_timm_encoder` refuses, or that the model does not take, are one line here
    rather than a trace from inside timm when the run starts."""
    args = backbone_args(cfg)
    try:
        with torch.device("meta"):
            build_timm_encoder(cfg.backbone.name, **args)
    except ValueError as err:  # ours: "<key>: <why>"
        raise ConfigError(f"backbone.kwargs.{err}") from None
    except TypeError as err:  # timm's constructor: "... got an unexpected keyword argument 'foo'"
        named = re.search(r"keyword argument '(\w+)'", str(err))
        key = f".{named.group(1)}" if named else ""
        raise ConfigError(f"backbone.kwargs{key}: {cfg.backbone.name} does not take it ({err})") from None


def solo_method_kwargs(cfg: Config, num_classes: int, world_size: int = 1) -> dict[str, Any]:
    """All constructor arguments of the recipe's method (see the module docstring for where each comes from).

    Args:
        cfg: a validated recipe.
        num_classes: classes of the labelled split (online classifier and kNN).
        world_size: processes training together (devices x nodes), for the learning-rate rule.
    """
    cls = method_class(cfg)
    num_large, num_small = crop_counts(cfg)
    mapped: dict[str, Any] = {
        "encoder": cfg.backbone.name,
        "backbone_args": backbone_args(cfg),
        **_optimizer_args(cfg, world_size),
        **{solo: read(cfg.scheduler, key) for key, solo in section_rows("scheduler.").items()},
        "knn_eval": cfg.eval.knn.enabled and not cfg.data.no_labels,
        "accumulate_grad_batches": cfg.accumulate_grad_batches,
        **_momentum_args(cfg, cls),
    }
    if resolved_method(cfg).endswith(UNMIX_SUFFIX):
        mapped.update({solo: read(cfg.unmix, key) for key, solo in section_rows("unmix.").items()},
                      unmix_seed=cfg.seed)
    ignored = ignored_keys(cfg)
    mapped.update({key: value for key, value in cfg.method_kwargs.items() if f"method_kwargs.{key}" not in ignored})
    kwargs = method_kwargs(
        cls, num_classes=num_classes, cifar=mapped["backbone_args"]["cifar"], max_epochs=cfg.max_epochs,
        num_large_crops=num_large, num_small_crops=num_small, **mapped,
    )
    # method_kwargs() empties extra_optimizer_args for any optimizer but SGD; Adam's betas are ours to keep
    kwargs["extra_optimizer_args"] = mapped["extra_optimizer_args"]
    return kwargs


def build_method(cfg: Config, num_classes: int, world_size: int = 1):
    """The recipe's solo-learn method, a ``pytorch_lightning.LightningModule`` (channels-last if the recipe says so)."""
    model = method_class(cfg)(**solo_method_kwargs(cfg, num_classes, world_size))
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model
