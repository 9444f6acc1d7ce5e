"""Recipe schema: solo-learn's pretraining YAML, composed by Hydra, checked by OmegaConf.

A recipe is a solo-learn pretraining config (the layout of solo-learn's
``scripts/pretrain/<dataset>/<method>.yaml`` since 1.0.6), read as solo-learn
reads it: Hydra composes the ``defaults`` list (``_self_`` order, group folders
beside the file such as ``augmentations/asymmetric.yaml``; ``override hydra/...``
entries and the ``hydra:`` block are Hydra's own and change nothing here), then
the result is merged onto the structured schema below (OmegaConf, struct mode).
Un-Mix adds one section, ``unmix``, or is ``method: <name>_unmix``, in the file or as an
override (``unmix.enabled=true``).

Everything is checked when the recipe is loaded. A mistake raises
:class:`ConfigError` with a one-line message that names the full key path and
what is allowed, e.g. ``optimizer.lrr: unknown key; did you mean optimizer.lr?``.

Example (with solo-learn's ``scripts/pretrain/cifar/simclr.yaml`` saved as ``recipe.yaml``):
    >>> cfg = load_config("recipe.yaml", ["unmix.enabled=true", "unmix.alpha=0.5"])
    >>> resolved_method(cfg), cfg.unmix.alpha, len(config_hash(cfg))
    ('simclr_unmix', 0.5, 12)

:func:`validate` is the schema's part of the one check a loaded recipe gets,
:func:`unmix_ext.runner.recipe.check_recipe` (which adds what solo-learn 1.0.2 can build, the
augmentations and the data rules). A file in solo-learn main's format (with Hydra's ``hydra:``
block) takes solo-learn main's defaults for the keys it leaves out
(:data:`unmix_ext.runner.solo_format.MAIN_DEFAULTS`); ``.yml`` files compose as ``.yaml`` ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import json
import math
import tempfile
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from omegaconf import MISSING as REQUIRED  # "???": OmegaConf reports the key if no file sets it
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from unmix_ext.errors import CommandError
from unmix_ext.losses import TARGET_SIDES
from unmix_ext.methods.base import NO_UNMIX_VARIANT, UNMIX_DEFAULTS, UNMIX_SUFFIX
from unmix_ext.runner.data import DATASETS as DATASET_SPECS
from unmix_ext.runner.data import ON_CORRUPT
from unmix_ext.runner.solo_format import MAIN_DEFAULTS

#: the names Hydra composes (``.yml`` as solo-learn main's all4one.yml is)
YAML_SUFFIXES = (".yaml", ".yml")

OPTIMIZERS = ("sgd", "lars", "adam", "adamw")
SCHEDULERS = ("warmup_cosine", "cosine", "step", "none")
#: when the learning rate moves: after every optimizer step (solo-learn 1.0.6+'s default) or once per epoch (1.0.2's only way)
SCHEDULER_INTERVALS = ("step", "epoch")
#: how data files can be read: each dataset's own layout, or solo-learn's DALI loader (which the runner
#: refuses with one line at full scale and replaces by the former at smoke scale)
DATA_FORMATS = ("image_folder", "dali")
SCALES = ("full", "smoke")
#: where pretraining views are drawn: per PIL image in the loader (solo-learn's) or per batch (unmix_ext.runner.batch_augment)
AUGMENT_MODES = ("per_image", "batch")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
#: the accelerator names that ask for a GPU
GPU_ACCELERATORS = ("gpu", "cuda")
# Lightning 2 strategy names a recipe may use; "dp" is gone from Lightning 2.
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_find_unused_parameters_true",
              "ddp_find_unused_parameters_false", "fsdp", "deepspeed", "single_device")
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true")
# Lightning 1 spellings, mapped the way Lightning 2 itself maps them.
_PRECISION_ALIASES = {32: "32-true", "32": "32-true", 16: "16-mixed", "16": "16-mixed", 64: "64-true",
                      "64": "64-true", "bf16": "bf16-mixed"}
#: keys of solo-learn's newer pretraining configs that nothing here can honour, and what to do instead
UNSUPPORTED_KEYS = {
    "auto_umap": "solo-learn 1.0.2's AutoUMAP is not wired in; remove the section",
    "knn_eval": "the online kNN is solo-learn's default here; set eval.knn for the offline one, or remove it",
    "performance": "channels-last is not applied by solo-learn 1.0.2's methods; remove the section",
    "resume_from_checkpoint": "rerunning the same command resumes its run directory (auto_resume); remove the key",
    "debug_augmentations": "not supported; remove the key",
}


#: solo-learn's name for a dataset in ImageFolder layout (one subfolder per class) -> ours
SOLO_DATASET_ALIASES = {"custom": "image_folder"}


class ConfigError(CommandError):
    """A recipe mistake; the message is one line that starts with the key path."""


# --- Field constraints. OmegaConf checks types; each field carries its allowed values in its
# metadata, so validate() can walk any Config (also one the runner edited after loading).


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
) -> Any:
    """A dataclass field plus its constraints.

    ``choices``: allowed values; ``gt``/``ge``/``le``: numeric bounds (``why`` is
    appended to a bounds error); ``check(value)`` returns a problem or None.
    """
    meta = {"choices": choices, "gt": gt, "ge": ge, "le": le, "why": why, "check": check}
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


#: the longest ``name``: it names the run directory, ``<name>-<12 hex digits>``, within the 255 bytes a file
#: system allows one path component
MAX_NAME_LENGTH = 200


def _name_value(value: str) -> str | None:
    if len(value.encode("utf-8")) > MAX_NAME_LENGTH:
        return f"must be at most {MAX_NAME_LENGTH} bytes (it names the run directory)"
    return None


def _increasing_epochs(steps: list[int]) -> str | None:
    if steps and steps[0] >= 1 and all(a < b for a, b in zip(steps, steps[1:])):
        return None
    return "must be a non-empty, strictly increasing list of epochs >= 1"


def _below_one(value: float) -> str | None:
    return None if value < 1 else "must be below 1"


def _positive_numbers(values: list[float]) -> str | None:
    return None if values and all(v > 0 for v in values) else "must be a non-empty list of numbers > 0"


def _max_steps_value(value: int) -> str | None:
    return None if value == -1 or value >= 1 else "must be -1 (no limit) or >= 1"


def _fraction_value(value: float) -> str | None:
    # solo-learn writes -1 for "all images"
    return None if value == -1 or 0 < value <= 1 else "must be in (0, 1], or -1 (all images)"


def _devices_value(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value == "auto" else "must be 'auto', a count >= 1 or a list of device indices"
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value >= 1 else "must be a count >= 1"
    ok = isinstance(value, list) and value and all(isinstance(i, int) and i >= 0 for i in value)
    return None if ok and len(set(value)) == len(value) else "must be a non-empty list of distinct device indices >= 0"


def _precision_value(value: Any) -> str | None:
    return None if value in PRECISIONS else f"expected one of {', '.join(PRECISIONS)} (or 16, 32, 64, bf16)"


# --- Schema: solo-learn's keys, then ours (eval, nan_guard, unmix, scale, ...)


@dataclass
class Backbone:
    """``name``: a solo-learn backbone (resnet18, resnet50, vit_small...) or ``timm/<model>``; ``kwargs``: passed to it."""

    name: str = _field("resnet18", check=_nonempty)
    kwargs: Dict[str, Any] = _field(factory=dict)


@dataclass
class Momentum:
    """Momentum encoder of BYOL, MoCo, DINO...: tau from ``base_tau`` to ``final_tau`` (cosine); null = the
    method's solo-learn default. ``classifier``: the online classifier also reads the momentum backbone."""

    base_tau: Optional[float] = _field(None, ge=0, le=1)
    final_tau: Optional[float] = _field(None, ge=0, le=1)
    classifier: bool = False


@dataclass
class Data:
    """Dataset and loader settings; ``fraction`` in (0, 1] is the share of training images used (-1: all).

    ``format``: how the files are read (``dali``: solo-learn's GPU loader, full scale only).
    ``on_corrupt`` (folder datasets): an unreadable image file stops the run
    (``error``) or is left out with a warning counting them (``skip``).
    ``augment``: pretraining views drawn per image by solo-learn's pipeline (``per_image``) or
    for the whole batch at once on tensors (``batch``, :mod:`unmix_ext.runner.batch_augment`).
    """

    dataset: str = _field(REQUIRED, choices=(*DATASET_SPECS, *SOLO_DATASET_ALIASES))
    train_path: Optional[str] = None
    val_path: Optional[str] = None
    format: str = _field("image_folder", choices=DATA_FORMATS)
    num_workers: int = _field(4, ge=0)
    fraction: float = _field(1.0, check=_fraction_value)
    no_labels: bool = False
    download: bool = False
    on_corrupt: str = _field("error", choices=ON_CORRUPT)
    augment: str = _field("per_image", choices=AUGMENT_MODES)


@dataclass
class Dali:
    """solo-learn's DALI loader settings (``data.format: dali``): where it decodes, and whether it packs image
    indices into the labels. Accepted and ignored, as solo-learn ignores them with any other format: DALI
    is refused at full scale and read by the image-folder reader at smoke scale, whose batches carry
    the indices always."""

    device: str = _field("gpu", choices=("gpu", "cpu"))
    encode_indexes_into_labels: bool = False


@dataclass
class RandomResizedCrop:
    """Crop a random share in [``crop_min_scale``, ``crop_max_scale``] of the image area, resize to the crop size."""

    enabled: bool = True
    crop_min_scale: float = _field(0.08, gt=0, le=1)
    crop_max_scale: float = _field(1.0, gt=0, le=1)


@dataclass
class ColorJitter:
    """torchvision's ColorJitter strengths, applied with probability ``prob``."""

    enabled: Optional[bool] = None
    prob: float = _field(0.8, ge=0, le=1)
    brightness: float = _field(0.4, ge=0)
    contrast: float = _field(0.4, ge=0)
    saturation: float = _field(0.2, ge=0)
    hue: float = _field(0.1, ge=0, le=0.5)


@dataclass
class RandomApply:
    """One augmentation applied with probability ``prob``. Like solo-learn, only ``prob`` decides;
    ``enabled: false`` with ``prob > 0`` is a contradiction, reported as such."""

    enabled: Optional[bool] = None
    prob: float = _field(0.0, ge=0, le=1)


def _applied(prob: float) -> Any:
    return _field(factory=lambda: RandomApply(prob=prob))


@dataclass
class Augmentation:
    """``num_crops`` crops of ``crop_size`` pixels sharing one pipeline (solo-learn's augmentation group).

    ``mean``/``std`` (and ``crop_size``) left out take the dataset's values (``unmix_ext.runner.data.DATASETS``).
    """

    rrc: RandomResizedCrop = _field(factory=RandomResizedCrop)
    color_jitter: ColorJitter = _field(factory=ColorJitter)
    grayscale: RandomApply = _applied(0.2)
    gaussian_blur: RandomApply = _applied(0.0)
    solarization: RandomApply = _applied(0.0)
    equalization: RandomApply = _applied(0.0)
    horizontal_flip: RandomApply = _applied(0.5)
    crop_size: Optional[int] = _field(None, ge=1)
    num_crops: int = _field(2, ge=1)
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = _field(None, check=_positive_numbers)


@dataclass
class Optimizer:
    """``batch_size`` is per device and ``lr``/``classifier_lr`` are per 256 images, as in solo-learn: each
    is multiplied by ``batch_size * devices * num_nodes / 256``. ``kwargs`` go to the optimizer (LARS eta...)."""

    name: str = _field("lars", choices=OPTIMIZERS)
    batch_size: int = _field(
        128, ge=2, why=" (Un-Mix mixes a batch with its reversed self and BatchNorm needs more than one sample)"
    )
    lr: float = _field(0.3, gt=0)
    classifier_lr: float = _field(0.3, gt=0)
    weight_decay: float = _field(1e-4, ge=0)
    kwargs: Dict[str, Any] = _field(factory=dict)


@dataclass
class Scheduler:
    """Learning-rate schedule; ``lr_decay_steps`` (epochs) is required by ``step``.

    ``warmup_epochs`` and ``lr_decay_steps`` count epochs whatever ``interval`` is; with
    ``interval: step`` the lr moves after every optimizer step along the same curve, as in
    solo-learn 1.0.6 and later (whose default it is).
    """

    name: str = _field("warmup_cosine", choices=SCHEDULERS)
    warmup_epochs: int = _field(10, ge=0)
    warmup_start_lr: float = _field(0.003, ge=0)
    min_lr: float = _field(0.0, ge=0)
    lr_decay_steps: Optional[List[int]] = _field(None, check=_increasing_epochs)
    interval: str = _field("step", choices=SCHEDULER_INTERVALS)


@dataclass
class Checkpoint:
    """Save every ``frequency`` epochs under ``dir``; ``keep_prev``: keep the older checkpoints too."""

    enabled: bool = True
    dir: str = _field("trained_models", check=_nonempty)
    frequency: int = _field(1, ge=1)
    keep_prev: bool = False


@dataclass
class AutoResume:
    """A rerun resumes from its run directory's newest checkpoint if it is at most ``max_hours`` old."""

    enabled: bool = True
    max_hours: float = _field(36.0, gt=0)


@dataclass
class NanGuard:
    """A NaN or infinite loss stops the run, unless fewer than ``max_skipped_steps`` steps were skipped so far."""

    max_skipped_steps: int = _field(0, ge=0)


@dataclass
class Wandb:
    """Weights & Biases logging; offline unless a recipe opts in to syncing."""

    enabled: bool = False
    project: str = _field("unmix-ext", check=_nonempty)
    entity: Optional[str] = None
    offline: bool = True


@dataclass
class LinearEval:
    """Linear probe on frozen features after pre-training (solo-learn's defaults).

    solo-learn main's options, all off by default: ``finetune`` trains the backbone with the classifier;
    ``mixup`` / ``cutmix`` (Beta alphas, > 0 turns one on) mix each training batch with timm's ``Mixup``;
    ``label_smoothing`` (in [0, 1)) smooths the training targets (within the mixed ones when mixing).
    """

    enabled: bool = True
    max_epochs: int = _field(100, ge=1)
    lr: float = _field(0.1, gt=0)
    batch_size: int = _field(256, ge=1)
    scheduler: str = _field("step", choices=SCHEDULERS)
    lr_decay_steps: Optional[List[int]] = _field(factory=lambda: [60, 80], check=_increasing_epochs)
    weight_decay: float = _field(0.0, ge=0)
    finetune: bool = False
    mixup: float = _field(0.0, ge=0)
    cutmix: float = _field(0.0, ge=0)
    label_smoothing: float = _field(0.0, ge=0, check=_below_one)


@dataclass
class KnnEval:
    """Weighted k-NN on frozen features: ``k`` neighbours, similarity ``temperature``."""

    enabled: bool = True
    k: int = _field(200, ge=1)
    temperature: float = _field(0.1, gt=0)


@dataclass
class Eval:
    """Evaluations run on the frozen backbone after pre-training."""

    linear: LinearEval = _field(factory=LinearEval)
    knn: KnnEval = _field(factory=KnnEval)


@dataclass
class Unmix:
    """Un-Mix settings (see docs/unmix.md).

    ``alpha``: Beta(alpha, alpha) parameter of the mixing ratio; ``prob``: chance
    of the global (Mixup) mode, else region (CutMix); ``per_sample``: one ratio per
    sample instead of one per step; ``lam``: fixed ratio instead of a draw;
    ``view``: which view is mixed; ``symmetric``: MoCo family mixes against both
    clean key sets (true) or the other view's only (false); null (the default)
    follows the base loss (MoCo V2+ symmetric, MoCo v2 as its ``symmetric``); ``target_side``:
    ``both`` (the mixture also goes through the target network) or ``online``.
    """

    enabled: bool = False
    alpha: float = _field(UNMIX_DEFAULTS["unmix_alpha"], gt=0)
    prob: float = _field(UNMIX_DEFAULTS["unmix_prob"], ge=0, le=1)
    per_sample: bool = UNMIX_DEFAULTS["unmix_per_sample"]
    lam: Optional[float] = _field(UNMIX_DEFAULTS["unmix_lam"], ge=0, le=1)
    view: int = _field(UNMIX_DEFAULTS["unmix_view"], choices=(0, 1))
    symmetric: Optional[bool] = UNMIX_DEFAULTS["unmix_symmetric"]
    target_side: str = _field(UNMIX_DEFAULTS["unmix_target_side"], choices=TARGET_SIDES)


@dataclass
class Config:
    """A whole recipe. ``name`` left empty becomes ``<resolved method>-<dataset>``. The Lightning keys
    (``accelerator`` ... ``deterministic``) go to the Trainer; ``deterministic: true`` makes a GPU run
    repeat exactly (slower). ``channels_last: true`` keeps the model's 4-D weights (and so the
    activations of its convolutions) in channels-last memory order, which oneDNN on CPUs and
    cuDNN with mixed precision convolve faster; the numbers are the same up to rounding."""

    name: str = _field("", check=_name_value)
    method: str = _field(REQUIRED, check=_nonempty)
    backbone: Backbone = _field(factory=Backbone)
    method_kwargs: Dict[str, Any] = _field(factory=dict)
    momentum: Momentum = _field(factory=Momentum)
    data: Data = _field(factory=Data)
    dali: Dali = _field(factory=Dali)
    augmentations: List[Augmentation] = _field(factory=lambda: [Augmentation()])
    optimizer: Optimizer = _field(factory=Optimizer)
    scheduler: Scheduler = _field(factory=Scheduler)
    checkpoint: Checkpoint = _field(factory=Checkpoint)
    auto_resume: AutoResume = _field(factory=AutoResume)
    nan_guard: NanGuard = _field(factory=NanGuard)
    wandb: Wandb = _field(factory=Wandb)
    max_epochs: int = _field(100, ge=1)
    max_steps: int = _field(-1, check=_max_steps_value)
    accelerator: str = _field("auto", choices=ACCELERATORS)
    devices: Any = _field(1, check=_devices_value)
    num_nodes: int = _field(1, ge=1)
    strategy: str = _field("auto", choices=STRATEGIES)
    precision: Any = _field("32-true", check=_precision_value)
    channels_last: bool = False
    sync_batchnorm: bool = False
    accumulate_grad_batches: int = _field(1, ge=1)
    seed: int = _field(5, ge=0)
    deterministic: bool = False
    scale: str = _field("full", choices=SCALES)
    eval: Eval = _field(factory=Eval)
    unmix: Unmix = _field(factory=Unmix)
    # paths of solo-learn's pre-Hydra config files that imagenet-100/simsiam.yaml still carries and nothing
    # in solo-learn main reads: accepted and ignored (LEFTOVER_KEYS)
    augmentations_cfg: Optional[str] = None
    wandb_cfg: Optional[str] = None


#: top-level keys solo-learn main's own YAMLs carry and nothing reads
LEFTOVER_KEYS = ("augmentations_cfg", "wandb_cfg")


# --- Messages


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"  # -1 rather than -1.0, as the user most likely wrote it
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _close_hint(value: Any, choices: Sequence[Any]) -> str:
    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _unknown_key(prefix: str, key: Any, cls: type) -> ConfigError:
    path = _join(prefix, key)
    if not prefix and key in UNSUPPORTED_KEYS:
        return ConfigError(f"{path}: {UNSUPPORTED_KEYS[key]}")
    allowed = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    hint = f"did you mean {_join(prefix, close[0])}?" if close else f"allowed: {', '.join(allowed)}"
    kind = "unknown key" if prefix else "unknown top-level key"
    return ConfigError(f"{path}: {kind}; {hint}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp: Any) -> Any:
    """``Optional[X]`` -> ``X``; any other type as it is."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp


def _type_at(cls: type, parts: Sequence[str]) -> Any:
    """The schema type at ``parts`` below dataclass ``cls`` (None where the schema has no type)."""
    tp: Any = cls
    for part in parts:
        tp = _unwrap(tp)
        if dataclasses.is_dataclass(tp):
            tp = _hints(tp).get(part)
        elif typing.get_origin(tp) is list and part.isdigit():
            tp = typing.get_args(tp)[0]
        else:
            return None
    return tp


# what a value of a type is called in a message: alone, and in a list
_TYPE_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               str: ("a string", "strings")}


def _describe(tp: Any) -> str:
    if _unwrap(tp) is not tp:
        return f"{_describe(_unwrap(tp))} or null"
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_TYPE_NAMES.get(typing.get_args(tp)[0], ('', 'values'))[1]}"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, ("a value",))[0]


def _schema_error(cls: type, prefix: str, err: OmegaConfBaseException) -> ConfigError:
    """One line naming the key path of an OmegaConf merge error below ``cls`` (found at ``prefix``)."""
    parts = [p for p in (err.full_key or "").replace("[", ".").replace("]", "").split(".") if p]
    path = ".".join([prefix, *parts]).strip(".") or "recipe"
    if isinstance(err, MissingMandatoryValue):
        owner = _type_at(cls, parts[:-1])
        choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(owner)}.get(parts[-1])
        return ConfigError(f"{path}: missing required key" + (f"; one of {', '.join(choices)}" if choices else ""))
    owner = getattr(err, "object_type", None)
    if isinstance(err, ConfigKeyError) and dataclasses.is_dataclass(owner) and parts and parts[-1] == str(err.key):
        return _unknown_key(".".join([prefix, *parts[:-1]]).strip("."), err.key, owner)
    tp = _type_at(cls, parts)
    value = getattr(err, "value", None)
    if value is None:
        return ConfigError(f"{path}: {str(err).splitlines()[0]}")
    return ConfigError(f"{path}: expected {_describe(tp)}, got {_show(value)}")


# --- Raw mappings -> typed dataclasses (OmegaConf does the typing)


def _check_sections(cls: type, data: Any, prefix: str) -> None:
    """A section given as a scalar (``optimizer: 3``) or a list given as a scalar, named by its path
    (OmegaConf's merge error does not say where it is)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'recipe'}: expected a mapping of keys, got {_show(data)}")
    for f in dataclasses.fields(cls):
        if f.name not in data or data[f.name] is None:
            continue
        tp, value, path = _unwrap(_hints(cls)[f.name]), data[f.name], _join(prefix, f.name)
        if dataclasses.is_dataclass(tp):
            _check_sections(tp, value, path)
        elif typing.get_origin(tp) is list and not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {_show(value)}")


def _typed(cls: type, data: Any, prefix: str) -> Any:
    """``data`` merged onto the schema of ``cls`` and returned as a ``cls``; errors name the key path."""
    _check_sections(cls, data, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data))
    except OmegaConfBaseException as err:
        raise _schema_error(cls, prefix, err) from None


def _precision(raw: Any) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return raw  # left to the check
    return _PRECISION_ALIASES.get(raw, str(raw))


# --- Validation


def _check_value(path: str, value: Any, meta: dict) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {_show(value)}")
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


def _check_augmentation(path: str, group: Augmentation) -> None:
    rrc = group.rrc
    if rrc.crop_min_scale > rrc.crop_max_scale:
        raise ConfigError(
            f"{path}.rrc.crop_min_scale: must be <= {path}.rrc.crop_max_scale ({rrc.crop_max_scale:g}), "
            f"got {rrc.crop_min_scale:g}"
        )
    for name in ("color_jitter", "grayscale", "gaussian_blur", "solarization", "equalization", "horizontal_flip"):
        step = getattr(group, name)
        if step.enabled is False and step.prob > 0:
            raise ConfigError(
                f"{path}.{name}.enabled: false, but {path}.{name}.prob is {step.prob:g}; solo-learn applies it "
                "whenever prob > 0: set prob: 0 to turn it off"
            )
    if group.mean is not None and group.std is not None and len(group.mean) != len(group.std):
        raise ConfigError(
            f"{path}.mean: must have as many values as {path}.std ({len(group.std)}), got {len(group.mean)}"
        )


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
        _check_augmentation(f"augmentations.{i}", group)
    _check_step_schedule("scheduler", cfg.scheduler.name, cfg.scheduler.lr_decay_steps)
    _check_step_schedule("eval.linear", cfg.eval.linear.scheduler, cfg.eval.linear.lr_decay_steps)
    if known_methods is not None:
        name = resolved_method(cfg)
        check_method_name(name, known_methods, via=f" (method {cfg.method} with unmix.enabled)" * (name != cfg.method))


def check_method_name(name: str, known: Iterable[str], key: str = "method", via: str = "") -> None:
    """Raises ConfigError (naming ``key``) unless ``name`` is one of ``known``: a variant of a method that has
    none (MAE) says why, any other unknown name suggests the nearest known ones."""
    known = sorted(set(known))
    base = name[: -len(UNMIX_SUFFIX)] if name.endswith(UNMIX_SUFFIX) else name
    if base != name and base in NO_UNMIX_VARIANT:
        raise ConfigError(f"{key}: {base} has no Un-Mix variant{via}: {NO_UNMIX_VARIANT[base]}; "
                          f"train {base} without unmix")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        raise ConfigError(f"{key}: unknown method {name!r}{via}; {hint}")


def resolved_method(cfg: Config) -> str:
    """The method name to build: ``simclr`` with ``unmix.enabled`` gives ``simclr_unmix``."""
    if cfg.unmix.enabled and not cfg.method.endswith(UNMIX_SUFFIX):
        return cfg.method + UNMIX_SUFFIX
    return cfg.method


def config_from_dict(data: Any, known_methods: Iterable[str] | None = None) -> Config:
    """A validated Config from a composed recipe (a mapping or an OmegaConf DictConfig).

    Fills what depends on other keys: per-dataset ``mean``/``std``/``crop_size``,
    ``name``; and folds ``method: <m>_unmix`` into ``method: <m>`` with
    ``unmix.enabled: true`` so both spellings give the same config and hash.
    """
    if OmegaConf.is_config(data):
        try:
            data = OmegaConf.to_container(data, resolve=True)
        except OmegaConfBaseException as err:  # a missing ${oc.env:...}, a key that refers to itself...
            key = getattr(err, "full_key", None) or "recipe"
            raise ConfigError(f"{key}: cannot resolve its interpolation ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe: expected a mapping of keys, got {_show(data)}")
    data = dict(data)
    groups = data.pop("augmentations", None)
    if "precision" in data:
        data["precision"] = _precision(data["precision"])
    if data.get("max_steps", 0) is None:
        data["max_steps"] = -1  # Lightning 1 wrote "no limit" as None
    cfg = _typed(Config, data, "")
    if groups is not None:
        if not isinstance(groups, (list, tuple)):
            raise ConfigError(f"augmentations: expected a list of augmentation groups, got {_show(groups)}")
        cfg.augmentations = [_typed(Augmentation, group, f"augmentations.{i}") for i, group in enumerate(groups)]
    if cfg.method.endswith(UNMIX_SUFFIX * 2):
        raise ConfigError(f"method: unknown method {cfg.method!r}; did you mean {cfg.method[: -len(UNMIX_SUFFIX)]}?")
    if cfg.method.endswith(UNMIX_SUFFIX):
        raw_unmix = data.get("unmix")
        if isinstance(raw_unmix, dict) and raw_unmix.get("enabled") is False:
            raise ConfigError(f"unmix.enabled: false contradicts method {cfg.method!r}; drop one of them")
        cfg.method = cfg.method[: -len(UNMIX_SUFFIX)]
        cfg.unmix.enabled = True
    cfg.data.dataset = SOLO_DATASET_ALIASES.get(cfg.data.dataset, cfg.data.dataset)
    spec = DATASET_SPECS.get(cfg.data.dataset)
    if spec is not None:  # an unknown dataset is reported by validate()
        mean, std = spec.stats
        for group in cfg.augmentations:
            group.mean = list(mean) if group.mean is None else group.mean
            group.std = list(std) if group.std is None else group.std
            group.crop_size = spec.crop_size if group.crop_size is None else group.crop_size
    if not cfg.name:
        cfg.name = f"{resolved_method(cfg)}-{cfg.data.dataset}"
    validate(cfg, known_methods)
    return cfg


# --- Files: Hydra composes, OmegaConf types


def _hydra_override(text: str, config_dir: Path) -> str:
    """``key=value`` as a Hydra override. A key that names a config group beside the recipe
    (``augmentations=asymmetric``) selects an option; any other sets or adds the key (Hydra's ``++``),
    since the recipe need not spell out a section (``unmix``) for an override to set it; the schema
    then refuses what it does not know."""
    if text.startswith(("+", "~")):  # Hydra's own add and delete
        return text
    key, sep, _ = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value, e.g. optimizer.lr=0.1")
    return text if (config_dir / key.strip()).is_dir() else f"++{text}"


#: values one recipe file may hold once its YAML aliases are expanded (a recipe holds a few hundred)
MAX_YAML_VALUES = 100_000


def _expanded_values(node: Any, counted: dict[int, int]) -> int:
    """Values ``node`` (a YAML node) stands for with every alias expanded; ``counted`` memoises shared nodes."""
    if id(node) not in counted:
        children = node.value if isinstance(node.value, list) else []
        items = [part for child in children for part in (child if isinstance(child, tuple) else (child,))]
        counted[id(node)] = 1 + sum(_expanded_values(item, counted) for item in items)
    return counted[id(node)]


@contextlib.contextmanager
def _bounded_yaml() -> Iterator[None]:
    """While Hydra composes: each YAML file it reads is refused (a ConfigError naming the file) if its aliases
    expand to more than :data:`MAX_YAML_VALUES` values or it nests deeper than the parser's stack.

    The YAML parser keeps an alias as a reference to one node, but OmegaConf copies it at every use, so a
    few lines of nested aliases (a "billion laughs") would otherwise take minutes and all the memory.
    OmegaConf reads every file with the loader ``omegaconf._utils.get_yaml_loader()`` returns; this wraps it.
    """
    import omegaconf._utils

    plain = omegaconf._utils.get_yaml_loader

    def bounded() -> Any:
        class BoundedLoader(plain()):  # type: ignore[misc]
            def compose_document(self) -> Any:
                try:
                    node = super().compose_document()
                    values = _expanded_values(node, {}) if node is not None else 0
                except RecursionError:
                    raise ConfigError(f"{self.name}: nests deeper than the YAML parser can follow") from None
                if values > MAX_YAML_VALUES:
                    raise ConfigError(f"{self.name}: its aliases expand to more than {MAX_YAML_VALUES:,} values "
                                    "(nested anchors); write the values out")
                return node

        return BoundedLoader

    omegaconf._utils.get_yaml_loader = bounded
    try:
        yield
    finally:
        omegaconf._utils.get_yaml_loader = plain


def compose(path: str | Path, overrides: Iterable[str] = ()) -> Any:
    """The recipe at ``path`` composed by Hydra with ``overrides``: an OmegaConf DictConfig.

    Raises:
        ConfigError: a missing file, a YAML or defaults-list error, a bad override.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from yaml import YAMLError

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"recipe: file not found: {path}")
    if path.suffix not in YAML_SUFFIXES:
        raise ConfigError(f"recipe: {path} must end in .yaml or .yml (Hydra reads no other name); rename it")
    hydra_overrides = [_hydra_override(text, path.parent) for text in overrides]
    with _as_yaml(path) as config_dir:
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base=None), _bounded_yaml():
                return hydra_compose(config_name=path.stem, overrides=hydra_overrides)
        except RecursionError:  # Hydra follows a defaults list that includes itself until Python's stack ends
            raise ConfigError(f"{path}: defaults: the list includes its own file again, directly or through the "
                              "files it names; remove that entry") from None
        except (HydraException, OmegaConfBaseException, YAMLError, ValueError, TypeError) as err:
            # Hydra wraps the YAML parser's and OmegaConf's errors; the innermost cause says what is wrong
            cause = err
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, ConfigError):  # ours (_bounded_yaml), naming the file Hydra was reading
                raise cause from None
            detail = str(cause) if cause is err else f"{err}: {str(cause).splitlines()[0]}"
            detail = detail.split("Config search path")[0].replace(str(config_dir), str(path.parent))
            raise ConfigError(f"{path}: {detail}") from None


@contextlib.contextmanager
def _as_yaml(path: Path) -> Iterator[Path]:
    """The folder Hydra composes ``path`` from. Hydra (from version_base 1.2) looks up ``<name>.yaml`` only, so
    a ``.yml`` file (solo-learn main ships ``all4one.yml``) is composed from a folder of links to its own folder's
    entries, where the file is linked as ``<name>.yaml``: the same defaults list and group folders."""
    if path.suffix == ".yaml":
        yield path.parent
        return
    with tempfile.TemporaryDirectory(prefix="unmix-yml-") as tmp:
        for entry in path.parent.iterdir():
            if entry.suffix != ".yaml" or entry.stem != path.stem:
                (Path(tmp) / entry.name).symlink_to(entry)
        (Path(tmp) / f"{path.stem}.yaml").symlink_to(path)
        yield Path(tmp)


def _solo_main_format(path: Path) -> bool:
    """Whether the file is one of solo-learn main's (they carry Hydra's ``hydra:`` block; recipes here do not)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False  # compose has read it, so this does not happen
    return isinstance(raw, dict) and "hydra" in raw


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    known_methods: Iterable[str] | None = None,
) -> Config:
    """Compose a recipe with Hydra, apply overrides, validate.

    Args:
        path: the YAML recipe; its ``defaults`` list may name other files of its
            folder (``- _base``) and options of group folders beside it
            (``- augmentations: asymmetric.yaml``), composed in ``_self_`` order.
        overrides: ``dotted.key=value`` strings applied last, values read as
            Hydra reads them (``optimizer.lr=1e-3``, ``unmix.enabled=true``,
            ``augmentations.0.crop_size=32``, ``devices=[0,1]``);
            ``augmentations=asymmetric`` picks another option of a group.
        known_methods: see :func:`validate`.

    Raises:
        ConfigError: missing file, YAML syntax error, bad defaults list or
            override, unknown key, wrong type or value.
    """
    composed = compose(path, overrides)
    if _solo_main_format(Path(path).expanduser()):  # solo-learn main's pretraining file: its defaults for what it leaves out
        for key, value in MAIN_DEFAULTS.items():
            if OmegaConf.select(composed, key) is None:
                OmegaConf.update(composed, key, value, force_add=True)
    return config_from_dict(composed, known_methods)


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain mappings, lists and scalars (YAML/JSON ready), in the recipe's schema."""
    return dataclasses.asdict(cfg)


#: keys that say how a run is looked after, not what it trains: left out of :func:`config_hash`, so a
#: rerun that changes them (the NaN guard's advice, wandb on, auto_resume off) keeps the run's directory
RUN_CONTROL_KEYS = ("auto_resume", "checkpoint", "nan_guard", "wandb")


#: keys solo-learn's files carry that change nothing trained here (accepted and ignored): left out of
#: :func:`config_hash` too, so a recipe hashes as it did before the schema took them
UNUSED_KEYS = ("dali", *LEFTOVER_KEYS)

#: ``eval.linear`` keys the schema took later (solo-learn main's probe options): left out of :func:`config_hash`
#: at their defaults, so a recipe that leaves them alone keeps the run directory it had before
LATER_LINEAR_KEYS = ("finetune", "mixup", "cutmix", "label_smoothing")


def config_hash(cfg: Config) -> str:
    """12 hex digits of the sha256 of the canonical resolved config, without :data:`RUN_CONTROL_KEYS`
    and :data:`UNUSED_KEYS`.

    Key order does not matter; any other value that differs gives another hash.
    """
    left_out = (*RUN_CONTROL_KEYS, *UNUSED_KEYS)
    trained = {key: value for key, value in config_to_dict(cfg).items() if key not in left_out}
    linear, defaults = trained["eval"]["linear"], LinearEval()
    for key in LATER_LINEAR_KEYS:
        if linear[key] == getattr(defaults, key):
            del linear[key]
    canonical = json.dumps(trained, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
