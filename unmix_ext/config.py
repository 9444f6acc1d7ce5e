"""Recipe schema: YAML files read into validated dataclasses.

The layout follows solo-learn's Hydra recipes (>= 1.0.6), so a solo-learn user
recognises every section; Un-Mix adds one section, ``unmix``::

    include: base/cifar.yaml          # optional; this file's keys win
    name: simclr-unmix-cifar10
    method: simclr                    # or simclr_unmix
    backbone: {name: resnet18, kwargs: {}}
    method_kwargs: {proj_hidden_dim: 2048, proj_output_dim: 256, temperature: 0.2}
    data: {dataset: cifar10, train_path: ./data, num_workers: 4}
    augmentations:
      - {crop_size: 32, num_crops: 2, min_scale: 0.08}
    optimizer: {name: lars, batch_size: 256, lr: 0.4, weight_decay: 1.0e-5}
    scheduler: {name: warmup_cosine, warmup_epochs: 10}
    max_epochs: 1000
    precision: 16-mixed
    unmix: {enabled: true, alpha: 1.0, prob: 0.5}

Everything is checked when the recipe is loaded. A mistake raises
:class:`ConfigError` with a one-line message that names the full key path and
what is allowed, e.g. ``optimizer.lrr: unknown key; did you mean optimizer.lr?``.

Example (with the recipe above saved as ``recipe.yaml``):
    >>> cfg = load_config("recipe.yaml", ["unmix.alpha=0.5", "optimizer.lr=1e-3"])
    >>> resolved_method(cfg), cfg.unmix.alpha, len(config_hash(cfg))
    ('simclr_unmix', 0.5, 12)

What is checked elsewhere: device counts and data paths (the runner, which
calls :func:`validate` with the registered method names), the smoke shrink of
``scale: smoke`` (the runner) and method-specific ``method_kwargs`` (the method).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import yaml

UNMIX_SUFFIX = "_unmix"

OPTIMIZERS = ("sgd", "lars", "adamw")
SCHEDULERS = ("warmup_cosine", "cosine", "step", "none")
DATA_FORMATS = ("image_folder", "h5")
SCALES = ("full", "smoke")
TARGET_SIDES = ("both", "online")
#: what a folder dataset does with an unreadable image file (see unmix_ext.data)
ON_CORRUPT = ("error", "skip")
# Lightning 2 strategy names a recipe may use; "dp" is gone from Lightning 2.
STRATEGIES = (
    "auto",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "ddp_find_unused_parameters_false",
    "fsdp",
    "deepspeed",
    "single_device",
)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
# Lightning 1 spellings, mapped the way Lightning 2 itself maps them.
_PRECISION_ALIASES = {
    32: "32-true",
    "32": "32-true",
    16: "16-mixed",
    "16": "16-mixed",
    64: "64-true",
    "64": "64-true",
    "bf16": "bf16-mixed",
}


class DatasetDefaults(NamedTuple):
    """Per-dataset normalisation (per RGB channel, on [0, 1] pixels) and crop side (pixels)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_size: int


_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# CIFAR and STL-10 use the numbers solo-learn's own pipelines use, so Un-Mix runs
# and plain solo-learn runs normalise identically. Fashion-MNIST's grey channel is
# repeated: the loaders hand RGB images to the (RGB) backbones.
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "cifar10": DatasetDefaults((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), 32),
    "cifar100": DatasetDefaults((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), 32),
    "stl10": DatasetDefaults((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261), 96),
    "tiny_imagenet": DatasetDefaults((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), 64),
    "imagenet": DatasetDefaults(*_IMAGENET_STATS, 224),
    "imagenet100": DatasetDefaults(*_IMAGENET_STATS, 224),
    "fashion_mnist": DatasetDefaults((0.2860,) * 3, (0.3530,) * 3, 28),
    "image_folder": DatasetDefaults(*_IMAGENET_STATS, 224),
}
DATASETS = tuple(DATASET_DEFAULTS)


class ConfigError(ValueError):
    """A recipe mistake; the message is one line that starts with the key path."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


# --------------------------------------------------------------------------- #
# Field constraints. Each field carries its allowed values in its metadata, so
# validate() can walk any Config (also one the runner edited after loading).
# --------------------------------------------------------------------------- #


def _field(
    default: Any = MISSING,
    *,
    factory: Any = MISSING,
    choices: Sequence[Any] | None = None,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    why: str = "",
    check: Callable[[Any], str | None] | None = None,
    parse: Callable[[str, Any], Any] | None = None,
) -> Any:
    """A dataclass field plus its constraints.

    ``choices``: allowed values; ``gt``/``ge``/``le``: numeric bounds (``why`` is
    appended to a bounds error); ``check(value)`` returns a problem or None;
    ``parse(path, raw)`` normalises the raw YAML value before the type check.
    """
    meta = {"choices": choices, "gt": gt, "ge": ge, "le": le, "why": why, "check": check, "parse": parse}
    return field(default=default, default_factory=factory, metadata=meta)


def _bounds_text(meta: dict) -> str:
    lo, lo_open, hi = meta["ge"], False, meta["le"]
    if meta["gt"] is not None:
        lo, lo_open = meta["gt"], True
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"<= {hi:g}"


def _in_bounds(value: float, meta: dict) -> bool:
    # Written as "not (...)" checks so that NaN fails every bound.
    if meta["gt"] is not None and not value > meta["gt"]:
        return False
    if meta["ge"] is not None and not value >= meta["ge"]:
        return False
    return not (meta["le"] is not None and not value <= meta["le"])


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _increasing_epochs(steps: list[int]) -> str | None:
    if steps and steps[0] >= 1 and all(a < b for a, b in zip(steps, steps[1:])):
        return None
    return "must be a non-empty, strictly increasing list of epochs >= 1"


def _positive_numbers(values: list[float]) -> str | None:
    return None if values and all(v > 0 for v in values) else "must be a non-empty list of numbers > 0"


def _max_steps_value(value: int) -> str | None:
    return None if value == -1 or value >= 1 else "must be -1 (no limit) or >= 1"


def _devices_value(value: int | list[int] | str) -> str | None:
    if isinstance(value, str):
        return None if value == "auto" else "must be 'auto', a count >= 1 or a list of device indices"
    if isinstance(value, int):
        return None if value >= 1 else "must be a count >= 1"
    ok = value and all(i >= 0 for i in value) and len(set(value)) == len(value)
    return None if ok else "must be a non-empty list of distinct device indices >= 0"


def _parse_precision(path: str, raw: Any) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return raw  # left to the type check
    # a number that is no alias becomes text, so the error lists the allowed names
    return _PRECISION_ALIASES.get(raw, str(raw))


def _parse_max_steps(path: str, raw: Any) -> Any:
    return -1 if raw is None else raw


# --------------------------------------------------------------------------- #
# Schema
# --------------------------------------------------------------------------- #


@dataclass(kw_only=True)
class Backbone:
    """``name``: a solo-learn backbone (resnet18, resnet50, vit_small...) or ``timm/<model>``; ``kwargs``: passed to it."""

    name: str = _field("resnet18", check=_nonempty)
    kwargs: dict[str, Any] = _field(factory=dict)


@dataclass(kw_only=True)
class Data:
    """Dataset and loader settings; ``fraction`` in (0, 1] is the share of training images used.

    ``on_corrupt`` (folder datasets): an unreadable image file stops the run
    (``error``) or is left out with a warning counting them (``skip``).
    """

    dataset: str = _field(choices=DATASETS)
    train_path: str | None = None
    val_path: str | None = None
    format: str = _field("image_folder", choices=DATA_FORMATS)
    num_workers: int = _field(4, ge=0)
    fraction: float = _field(1.0, gt=0, le=1)
    download: bool = False
    on_corrupt: str = _field("error", choices=ON_CORRUPT)


@dataclass(kw_only=True)
class CropGroup:
    """``num_crops`` crops of ``crop_size`` pixels sharing one augmentation pipeline.

    Scales are areas relative to the image; ``*_prob`` are probabilities; colour
    jitter strengths follow torchvision's ColorJitter. ``mean``/``std`` (and
    ``crop_size``) left out take the dataset's values from DATASET_DEFAULTS.
    """

    crop_size: int | None = _field(None, ge=1)
    num_crops: int = _field(2, ge=1)
    min_scale: float = _field(0.08, gt=0, le=1)
    max_scale: float = _field(1.0, gt=0, le=1)
    brightness: float = _field(0.4, ge=0)
    contrast: float = _field(0.4, ge=0)
    saturation: float = _field(0.2, ge=0)
    hue: float = _field(0.1, ge=0, le=0.5)
    color_jitter_prob: float = _field(0.8, ge=0, le=1)
    gray_scale_prob: float = _field(0.2, ge=0, le=1)
    gaussian_prob: float = _field(0.0, ge=0, le=1)
    solarization_prob: float = _field(0.0, ge=0, le=1)
    horizontal_flip_prob: float = _field(0.5, ge=0, le=1)
    mean: list[float] | None = None
    std: list[float] | None = _field(None, check=_positive_numbers)


@dataclass(kw_only=True)
class Optimizer:
    """``batch_size`` is per device, as in solo-learn; ``kwargs`` go to the optimizer (e.g. LARS eta)."""

    name: str = _field("lars", choices=OPTIMIZERS)
    batch_size: int = _field(
        128, ge=2, why=" (Un-Mix mixes a batch with its reversed self and BatchNorm needs more than one sample)"
    )
    lr: float = _field(0.3, gt=0)
    classifier_lr: float = _field(0.3, gt=0)
    weight_decay: float = _field(1e-4, ge=0)
    kwargs: dict[str, Any] = _field(factory=dict)


@dataclass(kw_only=True)
class Scheduler:
    """Learning-rate schedule; ``lr_decay_steps`` (epochs) is required by ``step``."""

    name: str = _field("warmup_cosine", choices=SCHEDULERS)
    warmup_epochs: int = _field(10, ge=0)
    warmup_start_lr: float = _field(0.003, ge=0)
    min_lr: float = _field(0.0, ge=0)
    lr_decay_steps: list[int] | None = _field(None, check=_increasing_epochs)


@dataclass(kw_only=True)
class Checkpoint:
    """Save every ``frequency`` epochs under ``dir``."""

    enabled: bool = True
    dir: str = _field("trained_models", check=_nonempty)
    frequency: int = _field(1, ge=1)


@dataclass(kw_only=True)
class NanGuard:
    """A NaN or infinite loss stops the run, unless fewer than ``max_skipped_steps`` steps were skipped so far."""

    max_skipped_steps: int = _field(0, ge=0)


@dataclass(kw_only=True)
class Wandb:
    """Weights & Biases logging; offline unless a recipe opts in to syncing."""

    enabled: bool = False
    project: str = _field("unmix-ext", check=_nonempty)
    offline: bool = True


@dataclass(kw_only=True)
class LinearEval:
    """Linear probe on frozen features after pre-training (solo-learn's defaults)."""

    enabled: bool = True
    max_epochs: int = _field(100, ge=1)
    lr: float = _field(0.1, gt=0)
    batch_size: int = _field(256, ge=1)
    scheduler: str = _field("step", choices=SCHEDULERS)
    lr_decay_steps: list[int] | None = _field(factory=lambda: [60, 80], check=_increasing_epochs)
    weight_decay: float = _field(0.0, ge=0)


@dataclass(kw_only=True)
class KnnEval:
    """Weighted k-NN on frozen features: ``k`` neighbours, similarity ``temperature``."""

    enabled: bool = True
    k: int = _field(200, ge=1)
    temperature: float = _field(0.1, gt=0)


@dataclass(kw_only=True)
class Eval:
    """Evaluations run on the frozen backbone after pre-training."""

    linear: LinearEval = _field(factory=LinearEval)
    knn: KnnEval = _field(factory=KnnEval)


@dataclass(kw_only=True)
class Unmix:
    """Un-Mix settings (see UNMIX_SPEC.md).

    ``alpha``: Beta(alpha, alpha) parameter of the mixing ratio; ``prob``: chance
    of the global (Mixup) mode, else region (CutMix); ``per_sample``: one ratio per
    sample instead of one per step; ``lam``: fixed ratio instead of a draw;
    ``view``: which view is mixed; ``symmetric``: MoCo family mixes against both
    clean key sets (true) or the other view's only (false); null (the default)
    follows the base loss (MoCo V2+ symmetric, MoCo v2 as its ``symmetric``); ``target_side``:
    ``both`` (the mixture also goes through the target network) or ``online``.
    """

    enabled: bool = False
    alpha: float = _field(1.0, gt=0)
    prob: float = _field(0.5, ge=0, le=1)
    per_sample: bool = False
    lam: float | None = _field(None, ge=0, le=1)
    view: int = _field(0, choices=(0, 1))
    symmetric: bool | None = None
    target_side: str = _field("both", choices=TARGET_SIDES)


@dataclass(kw_only=True)
class Config:
    """A whole recipe. ``name`` left empty becomes ``<resolved method>-<dataset>``.

    ``deterministic: true`` turns on torch's deterministic algorithms (and turns
    off cuDNN's benchmark), so a GPU run repeats exactly; slower on GPUs.
    """

    name: str = ""
    method: str = _field(check=_nonempty)
    backbone: Backbone = _field(factory=Backbone)
    method_kwargs: dict[str, Any] = _field(factory=dict)
    data: Data
    augmentations: list[CropGroup] = _field(factory=lambda: [CropGroup()])
    optimizer: Optimizer = _field(factory=Optimizer)
    scheduler: Scheduler = _field(factory=Scheduler)
    checkpoint: Checkpoint = _field(factory=Checkpoint)
    auto_resume: bool = True
    nan_guard: NanGuard = _field(factory=NanGuard)
    wandb: Wandb = _field(factory=Wandb)
    max_epochs: int = _field(100, ge=1)
    max_steps: int = _field(-1, check=_max_steps_value, parse=_parse_max_steps)
    devices: int | list[int] | str = _field(1, check=_devices_value)
    num_nodes: int = _field(1, ge=1)
    strategy: str = _field("auto", choices=STRATEGIES)
    precision: str = _field("32-true", choices=PRECISIONS, parse=_parse_precision)
    seed: int = _field(5, ge=0)
    deterministic: bool = False
    scale: str = _field("full", choices=SCALES)
    eval: Eval = _field(factory=Eval)
    unmix: Unmix = _field(factory=Unmix)


# --------------------------------------------------------------------------- #
# Messages
# --------------------------------------------------------------------------- #


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"  # -1 rather than -1.0, as the user most likely wrote it
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _unknown_key(prefix: str, key: Any, allowed: Iterable[str]) -> ConfigError:
    allowed = list(allowed)
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"did you mean {_join(prefix, close[0])}?" if close else f"allowed: {', '.join(allowed)}"
    kind = "unknown key" if prefix else "unknown top-level key"
    return ConfigError(f"{_join(prefix, key)}: {kind}; {hint}")


def _close_hint(value: Any, choices: Sequence[Any]) -> str:
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


# --------------------------------------------------------------------------- #
# Types: raw YAML values -> typed dataclasses
# --------------------------------------------------------------------------- #

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {int: "integers", float: "numbers", str: "strings"}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_PLURALS[args[0]]}" if args[0] in _PLURALS else "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, str(tp))


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """``value`` as type ``tp``, or a ConfigError naming ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return _coerce(path, arms[0], value)
        for arm in arms:
            try:
                return _coerce(path, arm, value)
            except ConfigError:
                pass
    elif tp is Any:
        return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _build(tp, value, path)
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(_join(path, i), args[0], v) for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{path}: expected a finite number, got {_show(value)}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(value, tp):  # bool, str
        return value
    raise ConfigError(f"{path}: expected {_describe(tp)}, got {_show(value)}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    """A ``cls`` dataclass from a raw mapping; missing keys take the field defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _unknown_key(prefix, key, fields)
    kwargs = {}
    for name, f in fields.items():
        path, tp = _join(prefix, name), _hints(cls)[name]
        if name in data:
            parse = f.metadata.get("parse")
            raw = parse(path, data[name]) if parse else data[name]
            kwargs[name] = _coerce(path, tp, raw)
        elif dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, {}, path)  # fills its defaults, reports its required keys
        elif f.default is MISSING and f.default_factory is MISSING:
            choices = f.metadata.get("choices")
            allowed = f"; one of {', '.join(map(str, choices))}" if choices else ""
            raise ConfigError(f"{path}: missing required key{allowed}")
    return cls(**kwargs)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #


def _check_value(path: str, value: Any, meta: dict) -> None:
    if value is None or not meta:
        return
    choices = meta["choices"]
    if choices is not None and value not in choices:
        allowed = ", ".join(map(str, choices))
        raise ConfigError(f"{path}: expected one of {allowed}, got {_show(value)}{_close_hint(value, choices)}")
    if any(meta[b] is not None for b in ("gt", "ge", "le")) and not _in_bounds(value, meta):
        raise ConfigError(f"{path}: must be {_bounds_text(meta)}, got {_show(value)}{meta['why']}")
    problem = meta["check"](value) if meta["check"] else None
    if problem:
        raise ConfigError(f"{path}: {problem}, got {_show(value)}")


def _check_fields(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        path, value = _join(prefix, f.name), getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, path)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _check_fields(item, _join(path, i))
        else:
            _check_value(path, value, f.metadata)


def _check_step_schedule(path: str, name: str, steps: list[int] | None) -> None:
    if name == "step" and not steps:
        raise ConfigError(f"{path}.lr_decay_steps: required by the step scheduler (a list of epochs, e.g. [60, 80])")


def validate(cfg: Config, known_methods: Iterable[str] | None = None) -> None:
    """Check every value of ``cfg`` and the rules that tie fields together.

    Args:
        cfg: a Config, e.g. from :func:`load_config`, possibly edited since.
        known_methods: method names that can be built (solo-learn's METHODS plus
            the Un-Mix variants); None skips the method-name check.

    Raises:
        ConfigError: one line naming the first wrong key path.
    """
    _check_fields(cfg, "")
    if not cfg.augmentations:
        raise ConfigError("augmentations: must list at least one crop group")
    for i, group in enumerate(cfg.augmentations):
        path = f"augmentations.{i}"
        if group.min_scale > group.max_scale:
            raise ConfigError(
                f"{path}.min_scale: must be <= {path}.max_scale ({group.max_scale:g}), got {group.min_scale:g}"
            )
        if group.mean is not None and group.std is not None and len(group.mean) != len(group.std):
            raise ConfigError(
                f"{path}.mean: must have as many values as {path}.std ({len(group.std)}), got {len(group.mean)}"
            )
    _check_step_schedule("scheduler", cfg.scheduler.name, cfg.scheduler.lr_decay_steps)
    _check_step_schedule("eval.linear", cfg.eval.linear.scheduler, cfg.eval.linear.lr_decay_steps)
    if known_methods is not None:
        known = sorted(set(known_methods))
        name = resolved_method(cfg)
        if name not in known:
            via = f" (method {cfg.method} with unmix.enabled)" if name != cfg.method else ""
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
            raise ConfigError(f"method: unknown method {name!r}{via}; {hint}")


def resolved_method(cfg: Config) -> str:
    """The method name to build: ``simclr`` with ``unmix.enabled`` gives ``simclr_unmix``."""
    if cfg.unmix.enabled and not cfg.method.endswith(UNMIX_SUFFIX):
        return cfg.method + UNMIX_SUFFIX
    return cfg.method


def config_from_dict(data: dict, known_methods: Iterable[str] | None = None) -> Config:
    """A validated Config from a raw recipe mapping (no ``include``, overrides applied).

    Fills what depends on other keys: per-dataset ``mean``/``std``/``crop_size``,
    ``name``; and folds ``method: <m>_unmix`` into ``method: <m>`` with
    ``unmix.enabled: true`` so both spellings give the same config and hash.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"recipe: expected a mapping of keys, got {_show(data)}")
    cfg = _build(Config, data, "")
    if cfg.method.endswith(UNMIX_SUFFIX):
        raw_unmix = data.get("unmix")
        if isinstance(raw_unmix, dict) and raw_unmix.get("enabled") is False:
            raise ConfigError(f"unmix.enabled: false contradicts method {cfg.method!r}; drop one of them")
        cfg.method = cfg.method[: -len(UNMIX_SUFFIX)]
        cfg.unmix.enabled = True
    stats = DATASET_DEFAULTS.get(cfg.data.dataset)
    if stats is not None:  # an unknown dataset is reported by validate()
        for group in cfg.augmentations:
            group.mean = list(stats.mean) if group.mean is None else group.mean
            group.std = list(stats.std) if group.std is None else group.std
            group.crop_size = stats.crop_size if group.crop_size is None else group.crop_size
    if not cfg.name:
        cfg.name = f"{resolved_method(cfg)}-{cfg.data.dataset}"
    validate(cfg, known_methods)
    return cfg


# --------------------------------------------------------------------------- #
# Files: YAML, include, overrides
# --------------------------------------------------------------------------- #


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_FLOAT_TAG = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _FLOAT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        raise ConfigError(f"{at}: YAML syntax error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: YAML error: {err}") from None


def _deep_merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_recipe(path: Path, chain: tuple[Path, ...], key: str) -> dict:
    """The mapping in ``path`` merged over the recipes it includes, ``include`` removed."""
    if not path.is_file():
        source = f" (included from {chain[-1]})" if chain else ""
        raise ConfigError(f"{key}: file not found: {path}{source}")
    data = _parse_yaml(path.read_text(), str(path))
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of keys, got {_show(data)}")
    include = data.pop("include", None)
    if include is None:
        return data
    if not isinstance(include, str) or not include.strip():
        raise ConfigError(f"include: expected a file path, got {_show(include)} (in {path})")
    target = (path.parent / include).resolve()  # an absolute include stays as it is
    if target in chain or target == path:
        loop = " -> ".join(str(p) for p in (*chain, path, target))
        raise ConfigError(f"include: cycle {loop}")
    return _deep_merge(_read_recipe(target, (*chain, path), "include"), data)


def _schema_child(tp: Any, part: str, parent: str) -> Any:
    """The schema type at ``parent.part`` below type ``tp``, or a ConfigError."""
    path = _join(parent, part)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = arms[0] if len(arms) == 1 else tp
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        if part not in hints:
            raise _unknown_key(parent, part, hints)
        return hints[part]
    origin = typing.get_origin(tp)
    if origin is list:
        if not part.isdigit():
            raise ConfigError(f"{path}: {parent} is a list, index it with a number (e.g. {parent}.0)")
        return typing.get_args(tp)[0]
    if origin is dict or tp is Any:
        return Any
    raise ConfigError(f"{path}: {parent} is {_describe(tp)}, it has no keys")


def _apply_override(data: dict, text: str) -> None:
    """Set one ``dotted.key=value`` override in the raw recipe ``data`` (in place)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optimizer.lr=0.1")
    parts = key.split(".")
    if parts[0] == "include":
        raise ConfigError("include: only a recipe file can include another, not an override")
    tp, node = Config, data
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth])
        tp = _schema_child(tp, part, parent)
        slot: Any = part
        if isinstance(node, list):
            if not part.isdigit():  # a list inside a free mapping such as method_kwargs
                raise ConfigError(f"{_join(parent, part)}: {parent} is a list, index it with a number")
            slot = int(part)
            if slot >= len(node):
                raise ConfigError(f"{_join(parent, part)}: no such item; {parent} has {len(node)} in the recipe")
        if depth == len(parts) - 1:
            node[slot] = _parse_yaml(raw.strip(), f"override {key}")
            return
        child = node[slot] if isinstance(node, list) else node.get(slot)
        if not isinstance(child, (dict, list)):
            # an absent section, or a scalar the override now turns into a section
            child = [] if typing.get_origin(tp) is list else {}
            node[slot] = child
        node = child


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    known_methods: Iterable[str] | None = None,
) -> Config:
    """Read a recipe, resolve its ``include`` chain, apply overrides, validate.

    Args:
        path: the YAML recipe. ``include: other.yaml`` in it (relative to the
            including file, or absolute; chains allowed) is read first, and this
            file's keys override it: mappings merge, lists are replaced.
        overrides: ``dotted.key=value`` strings applied last, values read as
            YAML (``optimizer.lr=1e-3``, ``unmix.enabled=true``,
            ``augmentations.0.crop_size=32``, ``devices=[0,1]``).
        known_methods: see :func:`validate`.

    Raises:
        ConfigError: missing file, YAML syntax error, include cycle, bad
            override, unknown key, wrong type or value.
    """
    data = _read_recipe(Path(path).resolve(), (), "recipe")
    for text in overrides:
        _apply_override(data, text)
    return config_from_dict(data, known_methods)


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain mappings, lists and scalars (YAML/JSON ready)."""
    return dataclasses.asdict(cfg)


#: keys that say how a run is looked after, not what it trains: left out of :func:`config_hash`, so a
#: rerun that changes them (the NaN guard's advice, wandb on, auto_resume off) keeps the run's directory
RUN_CONTROL_KEYS = ("auto_resume", "checkpoint", "nan_guard", "wandb")


def config_hash(cfg: Config) -> str:
    """12 hex digits of the sha256 of the canonical resolved config, without :data:`RUN_CONTROL_KEYS`.

    Key order does not matter; any other value that differs gives another hash.
    """
    trained = {key: value for key, value in config_to_dict(cfg).items() if key not in RUN_CONTROL_KEYS}
    canonical = json.dumps(trained, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
