"""The offline linear protocol: a linear classifier trained on a frozen backbone.

solo-learn's ``LinearModel`` (SGD with momentum 0.9, no LARS) trains on the
``train`` split with solo-learn's classification augmentation and is scored on
the ``val`` split without augmentation; ``eval.linear`` sets epochs, lr,
schedule (``step`` at ``lr_decay_steps`` epochs, x0.1 each, or ``cosine``...),
batch size (per device) and weight decay. Accuracies are in percent, from the
last epoch's validation.

As a command, on a checkpoint a run wrote::

    python -m unmix_ext.linear RUN_DIR/checkpoints/last.ckpt [key=value ...]

It reads the recipe the run saved (``RUN_DIR/config.yaml``), applies the
overrides (e.g. ``eval.linear.lr=0.1``), trains and scores the classifier,
prints the accuracy and writes it to ``RUN_DIR/linear.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from pytorch_lightning.utilities import rank_zero_only
from torch import nn

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.runner.builder import build_method, ssl_methods
from unmix_ext.runner.config import Config, ConfigError, load_config
from unmix_ext.runner.data import LabelledDataset
from unmix_ext.runner.files import atomic_write_text, read_checkpoint, short_message
from unmix_ext.runner.guard import CheckpointError
from unmix_ext.runner.pipeline import eval_loader, eval_transform, linear_train_transform, load_split, num_classes
from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.smoke import effective
from unmix_ext.runner.trainer import DevicePlan, device_plan, linear_trainer

#: the file a run saves its resolved recipe to, in its run directory


def linear_protocol(
    cfg: Config, backbone: nn.Module, train: LabelledDataset, val: LabelledDataset, plan: DevicePlan, run_dir: RunDir
) -> dict[str, float]:
    """Trains solo-learn's LinearModel on ``backbone`` (frozen from here on) and scores it.

    Args:
        cfg: the recipe (``eval.linear``, devices, precision, loaders).
        backbone: maps images (B, 3, S, S) to features (B, D); has ``inplanes`` or ``num_features``.
        train: labelled training images, augmented; val: validation images, not augmented.
        plan: devices and strategy (:func:`unmix_ext.runner.trainer.device_plan`).
        run_dir: where the CSV log goes (``logs/linear``).

    Returns:
        ``{"linear_top1": float, "linear_top5": float}`` (percent).
    """
    from solo.methods.linear import LinearModel

    lin = cfg.eval.linear
    model = LinearModel(
        backbone=backbone, num_classes=num_classes(val), max_epochs=lin.max_epochs, batch_size=lin.batch_size,
        optimizer="sgd", lars=False, lr=lin.lr, weight_decay=lin.weight_decay, exclude_bias_n_norm=False,
        extra_optimizer_args={"momentum": 0.9}, scheduler=lin.scheduler, lr_decay_steps=lin.lr_decay_steps,
    )
    train_loader = eval_loader(train, cfg, lin.batch_size, shuffle=True)
    trainer = linear_trainer(cfg, plan, run_dir, len(train_loader))
    trainer.fit(model, train_loader, eval_loader(val, cfg, lin.batch_size))
    metrics = trainer.callback_metrics
    return {"linear_top1": float(metrics["val_acc1"]), "linear_top5": float(metrics["val_acc5"])}


def load_backbone(cfg: Config, checkpoint: Path, classes: int) -> nn.Module:
    """The recipe's backbone with the weights of a pretraining checkpoint."""
    model = build_method(cfg, classes)
    advice = "give a .ckpt from the run's checkpoints/ folder, with the recipe's backbone"
    state = read_checkpoint(checkpoint, advice)["state_dict"]
    prefix = "encoder."
    try:
        model.encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    except RuntimeError as err:  # missing, unexpected or reshaped weights: torch lists them over many lines
        raise CheckpointError(f"checkpoint: {checkpoint} does not fit the recipe's {cfg.backbone.name} "
                              f"({short_message(err, limit=200)}); {advice}") from None
    return model.encoder


def evaluate_checkpoint(checkpoint: str | Path, overrides: Sequence[str] = ()) -> dict:
    """The linear protocol on a run's checkpoint; writes and returns ``{"checkpoint", "linear_top1", ...}``."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"checkpoint: {checkpoint} does not exist")
    run_dir = RunDir.holding(checkpoint)
    try:
        loaded = load_config(run_dir.config, overrides, ssl_methods())
    except ConfigError as err:  # a saved recipe edited or damaged since: name the file as well as the key
        shown = str(err) if str(err).startswith(str(run_dir.config)) else f"{run_dir.config}: {err}"
        raise ConfigError(shown) from None
    smoke = effective(loaded)
    cfg = smoke.cfg
    plan = device_plan(cfg)
    train = load_split(cfg, "train", linear_train_transform(cfg), smoke.limits.get("train"))
    val = load_split(cfg, "val", eval_transform(cfg), smoke.limits.get("val"))
    backbone = load_backbone(cfg, checkpoint, num_classes(val))
    result = {"checkpoint": str(checkpoint.resolve()), "overrides": list(overrides)}
    result.update(linear_protocol(cfg, backbone, train, val, plan, run_dir))
    if rank_zero_only.rank == 0:
        atomic_write_text(run_dir.linear_results, json.dumps(result, indent=2) + "\n")
        print(f"linear_top1 {result['linear_top1']:.2f}  linear_top5 {result['linear_top5']:.2f}  ({checkpoint})")
    return result
