"""``scale: smoke``: any recipe, shrunk to a few CPU minutes on the same code path.

What the shrink changes (each change is recorded as ``{key: {"from", "to"}}``
and ends up in ``results.json``; a key already small enough is left alone):

- data: when the dataset's files are absent, tiny fake data in the dataset's
  own on-disk format is written once under ``<checkpoint.dir>/data_cache/``
  (:func:`unmix_ext.runner.fake_data.write_fake_dataset`) and ``data.train_path``
  points there (``data.val_path`` is cleared); Fashion-MNIST is read from its
  Debian package when no path is given and the package is installed;
  ``data.num_workers`` <= 2; at most :data:`BATCHES_PER_EPOCH` batches of
  pretraining images and :data:`EVAL_IMAGES` images per evaluation split
  (``limits``, not config keys);
- model: crop sides scaled so the large crops are at most :data:`CROP` px;
  a ViT (``vit_*``, ``timm/vit_*``) becomes a tiny ViT, :data:`SMOKE_VIT` with
  :data:`SMOKE_VIT_KWARGS` and patches of :data:`SMOKE_VIT_PATCH` px (fewer if the large
  crop needs it), so a transformer still trains (MAE's decoder is capped alike:
  ``decoder_embed_dim``, ``decoder_depth``, ``decoder_num_heads``); any other backbone
  but resnet18 becomes resnet18, always with the ImageNet stem
  (``backbone.kwargs.cifar: false``): its stride-2 convolution and max-pool
  shrink a 32 px image 4x first, so a step costs about 16x less than with the
  CIFAR stem, which keeps every table's smoke run within minutes on 2 cores;
- schedule: ``max_epochs`` <= 2, ``max_steps`` -1, ``scheduler.warmup_epochs``
  <= 1, ``optimizer.batch_size`` <= 32, ``checkpoint.frequency`` 1;
- method: queues (``queue_size``) <= 4 batches (a multiple of the batch),
  ``num_prototypes`` <= 10, ``whitening_size`` <= the batch and
  ``proj_output_dim`` <= half of it (W-MSE);
- machine: what a GPU config asks for becomes what this machine runs:
  ``devices`` 1, ``num_nodes`` 1, ``strategy`` auto, ``sync_batchnorm``
  false, and on a machine without a GPU ``accelerator`` cpu and ``precision``
  32-true; ``data.format: dali`` (solo-learn's GPU loader) reads the same
  image folders with the CPU reader; ``wandb.offline`` true (nothing here may
  reach the network);
- evaluation: ``eval.linear.max_epochs`` <= 2, ``eval.linear.batch_size`` <= 64.

Applying the shrink to an already shrunk recipe changes nothing.
"""
from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unmix_ext.backbones import is_vit_name
from unmix_ext.runner.builder import method_class
from unmix_ext.runner.config import GPU_ACCELERATORS, Config
from unmix_ext.runner.data import DATASETS, DataNotFoundError, build_dataset
from unmix_ext.runner.fake_data import write_fake_dataset
from unmix_ext.runner.solo_kwargs import solo_defaults

CROP = 32
BATCH = 32
EPOCHS = 2
BATCHES_PER_EPOCH = 4
QUEUE_BATCHES = 4
PROTOTYPES = 10
EVAL_IMAGES = 256
WORKERS = 2
LINEAR_EPOCHS = 2
LINEAR_BATCH = 64
#: fake training images per class (10 classes): enough for BATCHES_PER_EPOCH full batches
FAKE_PER_CLASS = 16
SMOKE_BACKBONE = "resnet18"
#: what a ViT config becomes: a 2-block, 64-wide ViT (its patch side from SMOKE_VIT_PATCH, its input the large crop)
SMOKE_VIT = "timm/vit_tiny_patch16_224"
SMOKE_VIT_KWARGS = {"depth": 2, "embed_dim": 64, "num_heads": 4}
SMOKE_VIT_PATCH = 8
#: MAE's decoder at smoke scale (width, blocks, heads), no larger than the tiny ViT
SMOKE_DECODER = {"decoder_embed_dim": 64, "decoder_depth": 1, "decoder_num_heads": 4}
#: folder under ``checkpoint.dir`` holding fake datasets
CACHE_DIR = "data_cache"


@dataclass
class Smoke:
    """A shrunk recipe: ``cfg``, the config keys changed, and the per-split image limits."""

    cfg: Config
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def set(self, key: str, value: Any, default: Any = None) -> None:
        """Sets dotted ``key`` of ``cfg`` to ``value``, recording the change if it is one.

        ``default``: the value in force when a mapping (``method_kwargs``) lacks the key.
        """
        *parents, last = key.split(".")
        node: Any = self.cfg
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else getattr(node, part)
        old = node.get(last, default) if isinstance(node, dict) else getattr(node, last)
        if old == value:
            return
        if isinstance(node, dict):
            node[last] = value
        else:
            setattr(node, last, value)
        first = self.changes.get(key, {}).get("from", old)
        self.changes[key] = {"from": first, "to": value}


def _files_present(cfg: Config) -> bool:
    root = cfg.data.train_path or DATASETS[cfg.data.dataset].default_root
    if root is None:
        return False
    # whether the files are there, not whether each reads: the run reads them as data.on_corrupt says
    presence = {"verify": "lazy"} if "verify" in DATASETS[cfg.data.dataset].options else {}
    try:
        build_dataset(cfg.data.dataset, root, "train", root_key="data.train_path", **presence)
    except DataNotFoundError:
        return False
    return True


def fake_data_root(dataset: str, cache_dir: Path) -> Path:
    """``cache_dir/<dataset>`` holding fake files, written once (atomically, so parallel runs may race)."""
    root = cache_dir / dataset
    if not root.is_dir():
        partial = cache_dir / f".{dataset}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        write_fake_dataset(dataset, partial, num_per_class=FAKE_PER_CLASS)
        try:
            os.replace(partial, root)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(partial, ignore_errors=True)
    return root


def _shrink_data(smoke: Smoke, cache_dir: Path) -> None:
    cfg = smoke.cfg
    if cfg.data.format == "dali":
        smoke.set("data.format", "image_folder")
    if not _files_present(cfg):
        smoke.set("data.train_path", str(fake_data_root(cfg.data.dataset, cache_dir).resolve()))
        smoke.set("data.val_path", None)
        smoke.set("data.download", False)
    smoke.set("data.num_workers", min(cfg.data.num_workers, WORKERS))


def _shrink_model(smoke: Smoke) -> None:
    cfg = smoke.cfg
    large = cfg.augmentations[0].crop_size
    if large > CROP:
        for i, group in enumerate(cfg.augmentations):
            smoke.set(f"augmentations.{i}.crop_size", max(1, round(group.crop_size * CROP / large)))
    if is_vit_name(cfg.backbone.name):
        side = cfg.augmentations[0].crop_size
        patch = next(p for p in range(min(SMOKE_VIT_PATCH, side), 0, -1) if side % p == 0)
        smoke.set("backbone.name", SMOKE_VIT)
        smoke.set("backbone.kwargs", {**SMOKE_VIT_KWARGS, "img_size": side, "patch_size": patch})
    elif cfg.backbone.name != SMOKE_BACKBONE:
        smoke.set("backbone.name", SMOKE_BACKBONE)
        smoke.set("backbone.kwargs", {})
    smoke.set("backbone.kwargs.cifar", False)


def _shrink_method(smoke: Smoke, method_cls: type) -> None:
    cfg = smoke.cfg
    batch = cfg.optimizer.batch_size
    settings = {**solo_defaults(method_cls), **cfg.method_kwargs}

    def cap(key: str, value: Any) -> None:
        smoke.set(f"method_kwargs.{key}", value, default=settings[key])

    queue = settings.get("queue_size")
    if queue and queue > QUEUE_BATCHES * batch:
        cap("queue_size", QUEUE_BATCHES * batch)
    prototypes = settings.get("num_prototypes")
    if isinstance(prototypes, list):
        cap("num_prototypes", [min(p, PROTOTYPES) for p in prototypes])
    elif prototypes:
        cap("num_prototypes", min(prototypes, PROTOTYPES))
    for key, most in SMOKE_DECODER.items():
        if key in settings and settings[key] > most:
            cap(key, most)
    whitening = settings.get("whitening_size")
    if whitening:
        # W-MSE whitens chunks of whitening_size projections: the chunk needs more rows than dimensions
        size = min(whitening, batch)
        cap("whitening_size", size)
        cap("proj_output_dim", min(settings["proj_output_dim"], size // 2))


def shrink(cfg: Config, method_cls: type, cache_dir: Path) -> Smoke:
    """``cfg`` shrunk for a smoke run (a copy; ``cfg`` is untouched); see the module docstring.

    Args:
        cfg: a validated recipe.
        method_cls: the class it builds (its solo-learn defaults hold the queue sizes).
        cache_dir: where fake data is written when the dataset's files are absent.
    """
    smoke = Smoke(copy.deepcopy(cfg))
    _shrink_data(smoke, cache_dir)
    _shrink_model(smoke)
    smoke.set("max_epochs", min(cfg.max_epochs, EPOCHS))
    smoke.set("max_steps", -1)
    smoke.set("scheduler.warmup_epochs", min(cfg.scheduler.warmup_epochs, EPOCHS - 1))
    smoke.set("optimizer.batch_size", min(cfg.optimizer.batch_size, BATCH))
    smoke.set("checkpoint.frequency", 1)
    _shrink_method(smoke, method_cls)
    smoke.set("devices", 1)
    smoke.set("num_nodes", 1)
    smoke.set("strategy", "auto")
    smoke.set("sync_batchnorm", False)
    if not torch.cuda.is_available():
        smoke.set("precision", "32-true")
        if cfg.accelerator in GPU_ACCELERATORS:
            smoke.set("accelerator", "cpu")
    smoke.set("wandb.offline", True)
    smoke.set("eval.linear.max_epochs", min(cfg.eval.linear.max_epochs, LINEAR_EPOCHS))
    smoke.set("eval.linear.batch_size", min(cfg.eval.linear.batch_size, LINEAR_BATCH))
    smoke.limits = {
        "pretrain": BATCHES_PER_EPOCH * smoke.cfg.optimizer.batch_size,
        "train": EVAL_IMAGES,
        "val": EVAL_IMAGES,
    }
    return smoke


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    """``key from->to, ...`` of a shrink's recorded changes, on one line."""
    return ", ".join(f"{key} {c['from']!r}->{c['to']!r}" for key, c in changes.items())


def effective(cfg: Config) -> Smoke:
    """The recipe as it runs: shrunk when ``scale`` is smoke (fake data cached in
    ``<checkpoint.dir>/data_cache``), else an unchanged copy (no changes, no limits)."""
    if cfg.scale == "smoke":
        return shrink(cfg, method_class(cfg), Path(cfg.checkpoint.dir) / CACHE_DIR)
    return Smoke(copy.deepcopy(cfg))
