"""The offline linear protocol: a linear classifier trained on a frozen backbone.

solo-learn's ``LinearModel`` (SGD with momentum 0.9, no LARS) trains on the
``train`` split with solo-learn's classification augmentation and is scored on
the ``val`` split without augmentation; ``eval.linear`` sets epochs, lr,
schedule (``step`` at ``lr_decay_steps`` epochs, x0.1 each, or ``cosine``...),
batch size (per device) and weight decay, and solo-learn main's ``finetune``
(the backbone trains too), ``mixup`` / ``cutmix`` and ``label_smoothing``
(:class:`LinearProbe`). Accuracies are in percent, from the last epoch's
validation.

As a command, on a checkpoint a run wrote::

    python -m unmix_ext.linear RUN_DIR/checkpoints/last.ckpt [key=value ...]
    python -m unmix_ext.linear RUN_DIR [key=value ...]         # its last checkpoint

It reads the recipe the run saved (``RUN_DIR/config.yaml``), applies the
overrides (e.g. ``eval.linear.lr=0.1``; a key the protocol does not read, such
as the pretraining's ``optimizer.lr``, is refused in one line naming the one it
does read), trains and scores the classifier, prints the accuracy and writes it
to ``RUN_DIR/linear.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from solo.methods.linear import LinearModel
from unmix_ext.patches.topk_few_classes import top1_top5
from unmix_ext.runner.builder import build_method, ssl_methods
from unmix_ext.runner.checkpoints import ARGS_FILE, backbone_weights, read_backbone, solo_args
from unmix_ext.runner.config import Config, ConfigError
from unmix_ext.runner.data import LabelledDataset
from unmix_ext.runner.files import atomic_write_text, read_checkpoint, short_message
from unmix_ext.runner.guard import CheckpointError
from unmix_ext.runner.pipeline import (
    describe_eval_split,
    eval_loader,
    eval_split,
    eval_transform,
    linear_train_transform,
    load_split,
    num_classes,
)
from unmix_ext.runner.recipe import load_recipe
from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.solo_format import LINEAR_EVAL, args_json_recipe, by_column, find
from unmix_ext.runner.smoke import effective
from unmix_ext.runner.trainer import DevicePlan, device_plan, linear_trainer

#: the recipe keys the linear protocol reads (a prefix ends in "."): its own settings, the data and the machine
LINEAR_KEYS = ("eval.linear.", "data.dataset", "data.train_path", "data.val_path", "data.no_labels", "data.num_workers",
               "data.fraction", "data.download", "data.on_corrupt", "seed", "scale", "devices", "num_nodes",
               "accelerator", "strategy", "precision", "deterministic")


class LinearProbe(LinearModel):
    """solo-learn 1.0.2's ``LinearModel`` with solo-learn main's training options.

    ``finetune``: the backbone trains too (gradients, train mode, its parameters in the optimizer as a second group
    with the classifier's lr, weight decay and schedule); else it stays frozen and in eval mode, as in 1.0.2.
    ``mixup``: timm's ``Mixup`` or None, (images (B, 3, S, S), labels (B,)) -> (mixed images, soft targets
    (B, classes)), applied to the training batches only. ``loss``: (logits (B, classes), targets) -> the training
    loss. Validation is plain cross-entropy on the unmixed images, as in both releases.
    """

    def __init__(self, *args: Any, finetune: bool = False, mixup: Any = None, loss: nn.Module | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.finetune, self.mixup, self.loss = finetune, mixup, loss if loss is not None else nn.CrossEntropyLoss()
        self.backbone.requires_grad_(finetune)

    def forward(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            feats = self.backbone(X)
        return {"logits": self.classifier(feats), "feats": feats}

    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()  # the classifier's parameters only
        if self.finetune:
            optimizer = configured if isinstance(configured, torch.optim.Optimizer) else configured[0][0]
            # the backbone joins at the classifier's current lr; a scheduler built already follows it from base_lrs
            optimizer.add_param_group({"params": list(self.backbone.parameters()),
                                       "lr": optimizer.param_groups[0]["lr"], "initial_lr": self.lr})
            for scheduler in configured[1] if isinstance(configured, tuple) else ():
                scheduler.base_lrs.append(self.lr)
        return configured

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if not self.finetune:
            self.backbone.eval()
        images, targets = batch
        if self.mixup is not None:
            # timm's batch-mode Mixup pairs image i with image B-1-i, so it needs an even batch: the odd one out of
            # a last partial batch is left out (solo-learn drops that whole batch)
            even = images.size(0) // 2 * 2
            if even == 0:
                return None
            images, targets = self.mixup(images[:even], targets[:even])
        logits = self(images)["logits"]
        log = {"train_loss": self.loss(logits, targets)}
        if self.mixup is None:  # no accuracy against soft targets
            log["train_acc1"], log["train_acc5"] = top1_top5(logits, targets)
        self.log_dict(log, on_epoch=True, sync_dist=True)
        return log["train_loss"]


def training_loss(lin: Any, classes: int) -> tuple[Any, nn.Module]:
    """``(mixup, loss)`` for :class:`LinearProbe` from ``eval.linear``, as solo-learn main's ``main_linear.py``
    chooses them: mixing (timm's ``Mixup``, which also smooths its soft targets) with soft-target cross-entropy;
    else label-smoothing cross-entropy; else plain cross-entropy."""
    from timm.data.mixup import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if lin.mixup > 0 or lin.cutmix > 0:
        mixup = Mixup(mixup_alpha=lin.mixup, cutmix_alpha=lin.cutmix, label_smoothing=lin.label_smoothing,
                      num_classes=classes)
        return mixup, SoftTargetCrossEntropy()
    if lin.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=lin.label_smoothing)
    return None, nn.CrossEntropyLoss()


def linear_protocol(
    cfg: Config, backbone: nn.Module, train: LabelledDataset, val: LabelledDataset, plan: DevicePlan, run_dir: RunDir
) -> dict[str, float]:
    """Trains a :class:`LinearProbe` on ``backbone`` (frozen from here on unless ``eval.linear.finetune``) and
    scores it.

    Args:
        cfg: the recipe (``eval.linear``, devices, precision, loaders).
        backbone: maps images (B, 3, S, S) to features (B, D); has ``inplanes`` or ``num_features``.
        train: labelled training images, augmented; val: validation images, not augmented.
        plan: devices and strategy (:func:`unmix_ext.runner.trainer.device_plan`).
        run_dir: where the CSV log goes (``logs/linear``).

    Returns:
        ``{"linear_top1": float, "linear_top5": float}`` (percent).
    """
    lin = cfg.eval.linear
    mixup, loss = training_loss(lin, num_classes(val))
    model = LinearProbe(
        backbone=backbone, num_classes=num_classes(val), max_epochs=lin.max_epochs, batch_size=lin.batch_size,
        optimizer="sgd", lars=False, lr=lin.lr, weight_decay=lin.weight_decay, exclude_bias_n_norm=False,
        extra_optimizer_args={"momentum": 0.9}, scheduler=lin.scheduler, lr_decay_steps=lin.lr_decay_steps,
        finetune=lin.finetune, mixup=mixup, loss=loss,
    )
    train_loader = eval_loader(train, cfg, lin.batch_size, shuffle=True)
    trainer = linear_trainer(cfg, plan, run_dir, len(train_loader))
    trainer.fit(model, train_loader, eval_loader(val, cfg, lin.batch_size))
    metrics = trainer.callback_metrics
    return {"linear_top1": float(metrics["val_acc1"]), "linear_top5": float(metrics["val_acc5"])}


def load_backbone(cfg: Config, checkpoint: Path, classes: int) -> nn.Module:
    """The recipe's backbone with the weights of a pretraining checkpoint (``encoder.*`` or solo-learn 1.0.3+'s
    ``backbone.*``), every tensor filled."""
    model = build_method(cfg, classes)
    advice = "give a .ckpt from the run's checkpoints/ folder, with the recipe's backbone"
    state = backbone_weights(read_checkpoint(checkpoint, advice)["state_dict"], "online", checkpoint)
    try:
        model.encoder.load_state_dict(state)
    except RuntimeError as err:  # missing, unexpected or reshaped weights: torch lists them over many lines
        raise CheckpointError(f"checkpoint: {checkpoint} does not fit the recipe's {cfg.backbone.name} "
                              f"({short_message(err, limit=200)}); {advice}") from None
    return model.encoder


def check_linear_overrides(overrides: Sequence[str]) -> None:
    """Raises ConfigError (one line) for an override the linear protocol would not apply: any key outside
    :data:`LINEAR_KEYS`, which only change how a checkpoint was pretrained."""
    hints = by_column(LINEAR_EVAL, "solo", "recipe")
    for text in overrides:
        key = text.partition("=")[0].strip().lstrip("+~")
        if key.startswith(LINEAR_KEYS) or key in LINEAR_KEYS:
            continue
        hint = f"; the linear protocol's is {hints[key]}" if key in hints else ""
        taken = ", ".join(name + "*" * name.endswith(".") for name in LINEAR_KEYS)
        raise ConfigError(f"{key}: not read by the linear protocol (it sets pretraining, which the checkpoint has "
                          f"done){hint}; it takes {taken}")


def _checkpoint_of(target: Path) -> Path:
    """The checkpoint ``target`` names: the file itself, or a run directory's last (else newest) checkpoint."""
    if target.is_dir():
        run_dir = RunDir(target.resolve())
        if not run_dir.config.is_file():
            raise ConfigError(f"checkpoint: {target} holds no config.yaml; give a run directory or a .ckpt in one")
        found = run_dir.final_checkpoint()
        if found is None:
            raise ConfigError(f"checkpoint: {target} has no checkpoint in {run_dir.checkpoints}; was "
                              "checkpoint.enabled false for that run?")
        return found
    if not target.is_file():
        raise ConfigError(f"checkpoint: {target} does not exist")
    return target


#: datasets read from class folders, whose split folders solo-learn's paths may name directly (.../train, .../val)
FOLDER_DATASETS = ("imagenet", "imagenet100", "custom", "image_folder")


def solo_split_folders(data: dict) -> dict:
    """solo-learn's ``data`` section (dataset, train_path, val_path), read here: where its paths name the split
    folders themselves (solo-learn's ImageNet scripts: ``.../train``, ``.../val``), they are read as class folders."""
    train = data.get("train_path")
    if data.get("dataset") in FOLDER_DATASETS and train is not None and not (Path(train) / "train").is_dir():
        return {**data, "dataset": "image_folder"}
    return data


def probe_method(method: Any) -> str:
    """The recipe's method for a probe of a checkpoint that ``method`` pretrained: the probe never builds it, but
    the schema wants one, so a method solo-learn 1.0.2 lacks reads as simclr."""
    return method if method in ssl_methods() else "simclr"


def solo_recipe(args: dict) -> dict:
    """The part of solo-learn's ``args.json`` (any release, read through
    :data:`~unmix_ext.runner.solo_format.ARGS_JSON`) that says which data a
    linear probe reads: the method, the backbone's name, the data and the first augmentation group's crop side and
    normalisation."""
    found = args_json_recipe(args)
    return {
        "method": probe_method(found.get("method")),
        # the backbone's keywords are not the probe's: it builds the backbone as read_backbone reads it
        "backbone": {"name": find(found, "backbone.name") or "resnet18"},
        "data": solo_split_folders(found.get("data", {})),
        "augmentations": found.get("augmentations", [{}]),
    }


def _solo_config(checkpoint: Path, overrides: Sequence[str]) -> Config:
    """The config of a solo-learn checkpoint's linear probe: :func:`solo_recipe` of its ``args.json``, overridden."""
    import tempfile

    import yaml

    args = solo_args(checkpoint)
    if args is None:
        raise ConfigError(f"checkpoint: no config.yaml next to {checkpoint} or above it, and no {ARGS_FILE} beside "
                          "it; give a checkpoint of python -m unmix_ext.run or of solo-learn (args.json beside it)")
    with tempfile.TemporaryDirectory() as folder:
        recipe = Path(folder) / "solo_args.yaml"
        recipe.write_text(yaml.safe_dump(solo_recipe(args)))
        return load_recipe(recipe, overrides)


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict:
    """The linear protocol on a run's checkpoint (or its run directory's last one), or on a solo-learn checkpoint
    (its ``args.json`` gives the data); writes ``linear.json`` beside the run's recipe (or the checkpoint) and
    returns ``{"checkpoint", "linear_top1", ...}``.

    Raises:
        ConfigError: an override the protocol would not apply (:func:`check_linear_overrides`), no checkpoint,
            a run on unlabelled images.
    """
    check_linear_overrides(overrides)
    checkpoint = _checkpoint_of(Path(checkpoint))
    run_dir = RunDir.find(checkpoint)
    solo = run_dir is None
    if solo:
        run_dir, recipe = RunDir(checkpoint.resolve().parent), _solo_config(checkpoint, overrides)
    else:
        try:
            recipe = load_recipe(run_dir.config, overrides)
        except ConfigError as err:  # a saved recipe edited or damaged since: name the file as well as the key
            shown = str(err) if str(err).startswith(str(run_dir.config)) else f"{run_dir.config}: {err}"
            raise ConfigError(shown) from None
    smoke = effective(recipe)
    cfg = smoke.cfg
    if eval_split(cfg) is None:
        raise ConfigError("data.no_labels: the run pretrained on unlabelled images, so there are no labels to fit "
                          "and score a linear classifier on; give data.train_path=<labelled folder> "
                          "data.no_labels=false")
    plan = device_plan(cfg)
    train = load_split(cfg, "train", linear_train_transform(cfg), smoke.limits.get("train"))
    val = load_split(cfg, "val", eval_transform(cfg), smoke.limits.get("val"))
    if solo:  # the architecture the checkpoint's own files name, every tensor filled
        backbone = read_backbone(checkpoint, "online").network()
    else:
        backbone = load_backbone(cfg, checkpoint, num_classes(val))
    result = {"checkpoint": str(checkpoint.resolve()), "overrides": list(overrides), "eval_split": eval_split(cfg),
              "eval_split_text": describe_eval_split(cfg)}
    result.update(linear_protocol(cfg, backbone, train, val, plan, run_dir))
    if rank_zero_only.rank == 0:
        atomic_write_text(run_dir.linear_results, json.dumps(result, indent=2) + "\n")
        print(f"linear_top1 {result['linear_top1']:.2f}  linear_top5 {result['linear_top5']:.2f}  ({checkpoint}; "
              f"scored on {result['eval_split_text']})")
    return result
