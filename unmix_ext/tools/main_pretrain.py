"""``python -m unmix_ext.main_pretrain FLAGS``: solo-learn 1.0.2's pretraining command line.

A solo-learn 1.0.2 user changes only the first line of a ``bash_files/pretrain/<dataset>/*.sh``
script (``python3 ../../../main_pretrain.py \\`` becomes ``python -m unmix_ext.main_pretrain \\``)
and turns Un-Mix on with ``--method <name>_unmix`` (its ``--unmix_*`` options set the rest);
``--scale smoke`` runs the script on a CPU in a few minutes.

The flags are solo-learn 1.0.2's own: the dataset, augmentation and custom-dataset arguments of
``solo.args.dataset``, the method's ``add_model_specific_args`` (which hold the optimizer,
scheduler, backbone and wandb arguments), ``--save_checkpoint`` and ``--auto_resume`` with their
Checkpointer and AutoResumer arguments; the spellings of the 1.0.2 release's scripts
(``--num_crops``, ``--multicrop``, ``--num_small_crops``, ``--size``); and the Lightning 1.4
Trainer flags of :data:`TRAINER_FLAGS`. They are translated into the recipe the same settings
have in solo-learn's YAML (:func:`to_recipe`), which :func:`unmix_ext.runner.run.run` trains as it
trains a YAML recipe: there is no second training path, and the run directory's ``config.yaml``
runs again with ``python -m unmix_ext.run``. What the translation keeps of 1.0.2's behaviour:

- learning rates: 1.0.2 scales ``--lr`` by ``batch_size x GPUs / 256`` but not
  ``--classifier_lr``; the recipe's rule scales both, so ``classifier_lr`` is divided back;
- ``--gpus 0,1`` lists GPU indices (solo-learn's reading, not Lightning's), no ``--gpus`` is the CPU;
- ``--accelerator ddp`` is Lightning 1.4's name for the ``ddp`` strategy;
- no checkpoints without ``--save_checkpoint``, no resuming without ``--auto_resume``, and the
  evaluations after pretraining are off (1.0.2 has none; ``python -m unmix_ext.linear`` runs the
  linear protocol on the checkpoint afterwards).

A flag 1.0.2 has but nothing here can honour (``--auto_umap``, ``--debug_augmentations``,
``--mean`` for a named dataset, ...) is a one-line error, as is any other mistake (exit status 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.runner import solo_format
from unmix_ext.runner.builder import LR_REFERENCE_BATCH, ssl_methods
from unmix_ext.methods import UNMIX_SUFFIX
from unmix_ext.runner.config import SCALES, ConfigError, check_method_name
from unmix_ext.runner.recipe import recipe_from_dict
from unmix_ext.runner.run import run
from unmix_ext.runner.solo_format import by_column, put, section_rows
from unmix_ext.runner.solo_kwargs import solo_defaults

#: Lightning 1.4 Trainer flags solo-learn's scripts pass, with their argparse types
TRAINER_FLAGS = {
    "gpus": str, "accelerator": str, "precision": str, "max_epochs": int, "max_steps": int, "num_nodes": int,
    "accumulate_grad_batches": int,
}
TRAINER_SWITCHES = ("sync_batchnorm", "deterministic")
#: datasets 1.0.2's release crops at their own image side
NATIVE_SIDE_DATASETS = ("cifar10", "cifar100", "stl10")
#: crops per image of the release's --num_crops when not given
RELEASE_NUM_CROPS = 2
#: 1.0.2's multicrop (its main_pretrain.py): crop sides per dataset, large then small
MULTICROP_SIZES = {"cifar10": (32, 24), "cifar100": (32, 24), "stl10": (96, 58)}
MULTICROP_DEFAULT_SIZES = (224, 96)
#: and its prepare_multicrop_transform's scales of the large and the small crops
MULTICROP_SCALES = ((0.14, 1.0), (0.05, 0.14))
#: augmentation flags 1.0.2 reads for --dataset custom only
CUSTOM_DATA_FLAGS = ("mean", "std")
#: per-pipeline augmentation flags (one value for all pipelines, or one per pipeline) -> recipe key
AUGMENTATION_FLAGS = {flag: key for flag, key in by_column(solo_format.AUGMENTATION, "solo", "recipe").items()
                      if flag not in CUSTOM_DATA_FLAGS}


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a ConfigError (one line), not a usage screen."""

    def error(self, message: str) -> None:
        raise ConfigError(f"command line: {message}")


def _flag_error(flag: str, problem: str) -> ConfigError:
    return ConfigError(f"--{flag}: {problem}")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """solo-learn 1.0.2's pretraining parser for the ``--method`` named in ``argv``."""
    from solo.args.dataset import augmentations_args, custom_dataset_args, dataset_args
    from solo.utils.auto_resumer import AutoResumer
    from solo.utils.checkpointer import Checkpointer

    parser = _Parser(prog="python -m unmix_ext.main_pretrain", description=__doc__.split("\n\n")[0],
                     allow_abbrev=False)
    dataset_args(parser)
    augmentations_args(parser)
    custom_dataset_args(parser)
    for flag, kind in TRAINER_FLAGS.items():
        parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag in TRAINER_SWITCHES:
        parser.add_argument(f"--{flag}", action="store_true")
    parser.add_argument("--method", type=str, required=True)
    for flag in ("save_checkpoint", "auto_resume", "auto_umap"):
        parser.add_argument(f"--{flag}", action="store_true")
    # the spellings of the 1.0.2 release's own scripts, which its wheel renamed
    parser.add_argument("--num_crops", type=int, default=None)
    parser.add_argument("--num_small_crops", type=int, default=0)
    parser.add_argument("--multicrop", action="store_true")
    parser.add_argument("--size", type=int, default=None, nargs="+")
    parser.add_argument("--scale", choices=SCALES, default="full", help="smoke: a few CPU minutes")
    Checkpointer.add_checkpointer_args(parser)
    AutoResumer.add_autoresumer_args(parser)
    method, _ = parser.parse_known_args(argv)
    methods = ssl_methods()
    check_method_name(method.method, methods, key="--method")
    methods[method.method].add_model_specific_args(parser)
    return parser


def _given(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str) -> bool:
    return getattr(args, dest) != parser.get_default(dest)


def _refuse_unsupported(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.auto_umap:
        raise _flag_error("auto_umap", "solo-learn's AutoUMAP is not wired in here; remove the flag")
    if args.debug_augmentations:
        raise _flag_error("debug_augmentations", "not supported; remove the flag")
    if args.encode_indexes_into_labels and not args.dali:
        # with --dali it makes solo's DALI loader hand over image indices, which every loader here does
        raise _flag_error("encode_indexes_into_labels", "solo-learn 1.0.2 reads it with --dali only; remove it")
    if args.dali_device != "gpu":
        raise _flag_error("dali_device", "only gpu, solo-learn's default, is supported")
    for flag in CUSTOM_DATA_FLAGS:
        if args.dataset != "custom" and _given(parser, args, flag):
            raise _flag_error(flag, f"solo-learn 1.0.2 reads it for --dataset custom only, not {args.dataset}")


def _crop_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[int | None]:
    """--crop_size (the wheel's) or --size (the release's, which CIFAR and STL-10 ignore); None: the dataset's."""
    if args.size is not None and _given(parser, args, "crop_size"):
        raise _flag_error("size", "give --size or --crop_size, not both")
    if _given(parser, args, "crop_size"):
        return args.crop_size
    if args.size is None:
        return [None]
    if args.dataset in NATIVE_SIDE_DATASETS:
        raise _flag_error("size", f"solo-learn 1.0.2 crops {args.dataset} at its own side; remove the flag")
    return args.size


def _crop_counts(parser: argparse.ArgumentParser, args: argparse.Namespace, pipelines: int) -> list[int]:
    """Crops per pipeline: --num_crops_per_aug (the wheel's), or --num_crops (the release's, default 2:
    in all, one per pipeline when there are several)."""
    if _given(parser, args, "num_crops_per_aug"):
        if args.num_crops is not None:
            raise _flag_error("num_crops", "give --num_crops or --num_crops_per_aug, not both")
        counts = args.num_crops_per_aug
    else:
        total = RELEASE_NUM_CROPS if args.num_crops is None else args.num_crops
        if pipelines > 1 and total != pipelines:
            raise _flag_error("num_crops", f"{pipelines} augmentation pipelines give one crop each, got {total}")
        counts = [1] * pipelines if pipelines > 1 else [total]
    if len(counts) != pipelines:
        raise _flag_error("num_crops_per_aug", f"give one count per pipeline ({pipelines}), got {len(counts)}")
    return counts


def _augmentations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict]:
    """The augmentation groups of the flags: one per pipeline, each with its crop count."""
    values = {flag: getattr(args, flag) for flag in AUGMENTATION_FLAGS if flag != "crop_size"}
    values["crop_size"] = _crop_sizes(parser, args)
    pipelines = max(len(v) for v in values.values())
    for flag, given in values.items():
        if len(given) not in (1, pipelines):
            raise _flag_error(flag, f"give one value or one per pipeline ({pipelines}), got {len(given)}")
    groups = []
    for i, count in enumerate(_crop_counts(parser, args, pipelines)):
        group: dict[str, Any] = {"num_crops": count}
        for flag, key in AUGMENTATION_FLAGS.items():
            value = values[flag][i if len(values[flag]) > 1 else 0]
            if value is not None:
                put(group, key, value)
        if args.dataset == "custom":
            group.update({flag: getattr(args, flag) for flag in CUSTOM_DATA_FLAGS})
        groups.append(group)
    return _multicrop(args, groups) if args.multicrop else groups


def _multicrop(args: argparse.Namespace, groups: list[dict]) -> list[dict]:
    """1.0.2's multicrop: its one pipeline as ``--num_crops`` large crops and ``--num_small_crops`` small ones."""
    if len(groups) != 1:
        raise _flag_error("multicrop", "takes one augmentation pipeline (one value per augmentation flag)")
    large, small = MULTICROP_SIZES.get(args.dataset, MULTICROP_DEFAULT_SIZES)
    counts = (args.num_crops or 2, args.num_small_crops)
    out = []
    for side, count, (low, high) in zip((large, small), counts, MULTICROP_SCALES):
        group = {**groups[0], "crop_size": side, "num_crops": count}
        group["rrc"] = {"crop_min_scale": low, "crop_max_scale": high}
        out.append(group)
    return out if counts[1] else out[:1]


def _devices(args: argparse.Namespace) -> dict[str, Any]:
    """Lightning 1.4's --gpus/--accelerator as recipe keys (solo-learn reads --gpus as GPU indices)."""
    keys: dict[str, Any] = {}
    if args.gpus is not None:
        try:
            indices = [int(gpu) for gpu in args.gpus.split(",") if gpu.strip()]
        except ValueError:
            raise _flag_error("gpus", f"expected GPU indices such as 0 or 0,1, got {args.gpus!r}") from None
        keys.update(accelerator="gpu", devices=indices)
    else:
        keys.update(accelerator="cpu", devices=1)
    if args.accelerator is not None:
        if args.accelerator.startswith("ddp"):
            keys["strategy"] = args.accelerator  # Lightning 1.4 named strategies accelerators
        elif args.accelerator in ("gpu", "cpu", "auto"):
            keys["accelerator"] = args.accelerator
        else:
            raise _flag_error("accelerator", f"expected ddp, ddp_spawn, gpu or cpu, got {args.accelerator!r}")
    for flag in ("precision", "max_epochs", "max_steps", "num_nodes", "accumulate_grad_batches"):
        if getattr(args, flag) is not None:
            keys[flag] = getattr(args, flag)
    for flag in TRAINER_SWITCHES:
        keys[flag] = getattr(args, flag)
    return keys


def _section(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    """The flags of one recipe section (``scheduler.``), by the translation table's rows."""
    return {key: getattr(args, dest) for key, dest in section_rows(prefix).items()}


def _optimizer(args: argparse.Namespace, gpus: int) -> dict[str, Any]:
    optimizer: dict[str, Any] = {
        "name": "lars" if args.lars else args.optimizer, "batch_size": args.batch_size, "lr": args.lr,
        # 1.0.2 leaves classifier_lr unscaled; the recipe's rule will multiply it by this factor
        "classifier_lr": args.classifier_lr * LR_REFERENCE_BATCH / (args.batch_size * gpus),
        "weight_decay": args.weight_decay,
    }
    if args.lars:
        optimizer["kwargs"] = _section(args, "optimizer.kwargs.")
    elif args.optimizer not in ("sgd", "adam", "adamw"):
        raise _flag_error("optimizer", f"expected sgd, adam or adamw (or --lars), got {args.optimizer!r}")
    return optimizer


def to_recipe(argv: Sequence[str]) -> dict[str, Any]:
    """The recipe (solo-learn's YAML schema, as a mapping) that solo-learn 1.0.2's ``argv`` describes."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    _refuse_unsupported(parser, args)
    method_cls = ssl_methods()[args.method]
    defaults = solo_defaults(method_cls)
    devices = _devices(args)
    gpus = len(devices["devices"]) if isinstance(devices["devices"], list) else 1
    data_dir = Path(args.data_dir)
    # 1.0.2's default folders below --data_dir: <dataset>/train and <dataset>/val
    train_dir = args.train_dir or Path(args.dataset) / "train"
    val_dir = args.val_dir or Path(args.dataset) / "val"
    recipe: dict[str, Any] = {
        "name": args.name or "",
        "method": args.method,
        "backbone": {"name": args.encoder, "kwargs": {}},
        "data": {
            "dataset": args.dataset,
            "train_path": str(data_dir / train_dir), "val_path": str(data_dir / val_dir),
            "format": "dali" if args.dali else "image_folder", "num_workers": args.num_workers,
            "no_labels": args.no_labels,
        },
        "augmentations": _augmentations(parser, args),
        "optimizer": _optimizer(args, gpus),
        # 1.0.2 steps its schedules once per epoch (it has no other way)
        "scheduler": {**_section(args, "scheduler."), "interval": "epoch"},
        "checkpoint": {"enabled": args.save_checkpoint, "dir": str(args.checkpoint_dir),
                       "frequency": args.checkpoint_frequency},
        "auto_resume": {"enabled": args.auto_resume, "max_hours": args.auto_resumer_max_hours},
        "wandb": _section(args, "wandb."),
        "eval": {"knn": {"enabled": False}, "linear": {"enabled": False}},
        "scale": args.scale,
        **devices,
    }
    if args.zero_init_residual:
        recipe["backbone"]["kwargs"]["zero_init_residual"] = True
    if args.encoder.startswith("vit"):
        recipe["backbone"]["kwargs"]["patch_size"] = args.patch_size
    if "base_tau_momentum" in defaults:
        recipe["momentum"] = _section(args, "momentum.")
    unmix = {dest[len("unmix_"):]: getattr(args, dest) for dest in defaults if dest.startswith("unmix_")}
    if unmix:
        seed = unmix.pop("seed")
        if _given(parser, args, "unmix_seed"):  # else the seed 1.0.2 trains with, the recipe's default
            recipe["seed"] = seed
        recipe["unmix"] = {**unmix, "enabled": True}
        recipe["method"] = args.method[: -len(UNMIX_SUFFIX)]
    recipe["method_kwargs"] = {
        dest: getattr(args, dest) for dest, default in defaults.items()
        if dest not in by_column(solo_format.METHOD, "solo", "recipe")
        and (getattr(args, dest) != default or dest in ("knn_eval", "knn_k"))  # 1.0.2's online kNN is off
    }
    return recipe


def run_flags(argv: Sequence[str]) -> dict[str, Any]:
    """What ``python -m unmix_ext.main_pretrain`` does: :func:`unmix_ext.runner.run.run` of the flags' recipe."""
    return run(recipe_from_dict(to_recipe(argv)))
