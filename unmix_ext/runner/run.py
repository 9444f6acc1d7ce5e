"""``python -m unmix_ext.run RECIPE [key=value ...]``: pretrain, evaluate, record.

One recipe (see :mod:`unmix_ext.runner.config`) is one run:

1. the recipe is loaded and checked once (:func:`unmix_ext.runner.recipe.load_recipe`; a mistake is one line, ``error: <key>:
   ...`` on stderr, exit status 2, as is every failure of the run itself: a
   non-finite loss, a foreign or unreadable checkpoint, a full disk, see
   :mod:`unmix_ext.runner.guard`); ``unmix.enabled: true`` selects the method's
   ``<method>_unmix`` variant; keys solo-learn accepts and ignores are printed in one notice and
   listed in the results (``ignored_keys``);
2. ``scale: smoke`` shrinks it to a few CPU minutes (:mod:`unmix_ext.runner.smoke`);
3. the method pretrains with Lightning (:mod:`unmix_ext.runner.trainer`), validating
   its online classifier (and online kNN) every epoch;
4. the frozen backbone is evaluated as ``eval`` asks, on the images
   :func:`unmix_ext.runner.pipeline.eval_split` names (never the pretraining images; none with
   ``data.no_labels``, and the results' ``eval_split`` says which): weighted kNN
   (:mod:`unmix_ext.runner.evaluate`) and the linear protocol (:mod:`unmix_ext.runner.linear`);
5. ``results.json`` is written, atomically and only after success.

Everything lands in the run directory (:class:`unmix_ext.runner.rundir.RunDir`), one per
recipe and overrides; its ``config.yaml`` is the recipe as it ran (smoke shrink applied, paths
absolute) in the recipe's own schema, so ``python -m unmix_ext.run RUN_DIR/config.yaml`` continues that run (its hash is taken on this same config).

With ``auto_resume.enabled`` a rerun continues from the newest checkpoint of
its run directory, exactly where the interrupted run was (see
:mod:`unmix_ext.runner.trainer`), if that checkpoint is at most ``auto_resume.max_hours``
old (solo-learn's rule); otherwise it starts over, removing that directory's
old checkpoints first. Either way an old ``results.json`` is removed when a run
starts, so the file is there only when the last run of the recipe succeeded.

``optimizer.lr`` and ``optimizer.classifier_lr`` are per 256 images, as in
solo-learn: the optimizer gets ``lr * batch_size * devices * num_nodes / 256``
(see :mod:`unmix_ext.runner.builder`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import yaml
from pytorch_lightning.utilities import rank_zero_only

import unmix_ext.methods  # noqa: F401  (patches solo-learn, registers the Un-Mix variants)
from unmix_ext.runner.builder import build_method, ignored_keys, ignored_keys_notice
from unmix_ext.runner.config import Config, ConfigError, config_hash, config_to_dict, resolved_method
from unmix_ext.runner.data import LabelledDataset
from unmix_ext.runner.evaluate import knn_accuracy
from unmix_ext.runner.files import atomic_write_text, write_failure
from unmix_ext.runner.guard import CheckpointError, NanGuard, RunError, stop_on_signals
from unmix_ext.runner.linear import linear_protocol
from unmix_ext.runner.pipeline import (
    describe_eval_split,
    eval_loader,
    eval_split,
    eval_transform,
    linear_train_transform,
    load_split,
    num_classes,
    pretrain_loader,
    pretrain_transform,
)
from unmix_ext.runner.recipe import load_recipe
from unmix_ext.runner.rundir import RunDir, RunLock
from unmix_ext.runner.smoke import Smoke, describe_changes, effective
from unmix_ext.runner.trainer import (
    DevicePlan,
    check_resumable,
    device_plan,
    emulated_bf16_notice,
    pretrain_trainer,
)

#: online metrics copied into the results when the method logged them
ONLINE_METRICS = ("val_acc1", "val_acc5", "val_knn_acc1", "val_knn_acc5")
SECONDS_PER_HOUR = 3600
_VERSIONED = ("torch", "torchvision", "pytorch-lightning", "solo-learn", "unmix-ext")


def check_writable(folder: Path) -> None:
    """Creates ``folder`` if needed and checks a file can be written there; raises ConfigError (checkpoint.dir)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(
            f"checkpoint.dir: cannot write to {folder} ({err.strerror or err}); make it writable or choose "
            "another checkpoint.dir"
        ) from None


def _absolute_paths(cfg: Config) -> None:
    # the saved recipe must work from any working directory (python -m unmix_ext.linear reads it)
    for key in ("train_path", "val_path"):
        value = getattr(cfg.data, key)
        if value is not None:
            setattr(cfg.data, key, str(Path(value).expanduser().resolve()))
    cfg.checkpoint.dir = str(Path(cfg.checkpoint.dir).expanduser().resolve())


def as_run(cfg: Config) -> Smoke:
    """``cfg`` exactly as :func:`run` trains it (a copy): shrunk when ``scale`` is smoke, its paths absolute.

    The run's identity (:func:`config_hash`, so :meth:`RunDir.of`) is taken on this config, which is also
    what the run directory's ``config.yaml`` holds: loading that file again finds the same run directory.
    A smoke shrink writes its fake data under ``checkpoint.dir`` the first time.
    """
    smoke = effective(cfg)
    _absolute_paths(smoke.cfg)
    return smoke


def _prepare_run_dir(cfg: Config, run_dir: RunDir) -> Path | None:
    """Saves the recipe and removes old results; returns the checkpoint to resume from, else clears old ones.

    Raises:
        CheckpointError: the checkpoint to resume is older than ``auto_resume.max_hours`` (nothing is removed).
    """
    resume = run_dir.newest_checkpoint() if cfg.auto_resume.enabled and cfg.checkpoint.enabled else None
    hours = (time.time() - resume.stat().st_mtime) / SECONDS_PER_HOUR if resume is not None else 0.0
    if hours > cfg.auto_resume.max_hours:
        # solo-learn's AutoResumer would start a new run beside it; here that run would overwrite the old
        # one's checkpoints, so the user decides
        raise CheckpointError(
            f"checkpoint: {resume} is {hours:.0f} hours old, more than auto_resume.max_hours "
            f"({cfg.auto_resume.max_hours:g}); raise auto_resume.max_hours to resume it, or set "
            "auto_resume.enabled=false to start over (which removes this run's checkpoints)"
        )
    if rank_zero_only.rank == 0:
        run_dir.results.unlink(missing_ok=True)
        _write_run_file(run_dir.config, yaml.safe_dump(config_to_dict(cfg), sort_keys=False), "checkpoint.dir",
                        "free space there or choose another checkpoint.dir, then rerun")
    if resume is None and rank_zero_only.rank == 0:
        for stale in run_dir.checkpoints.glob("*.ckpt"):
            stale.unlink(missing_ok=True)
    return resume


def _write_run_file(path: Path, text: str, key: str, advice: str) -> None:
    """Writes ``text`` to ``path`` atomically; a refusal (a full disk) is a RunError naming ``key``, the file,
    the space left there and ``advice``."""
    try:
        atomic_write_text(path, text)
    except OSError as err:
        raise RunError(f"{key}: writing {path} failed ({write_failure(err, path.parent)}); {advice}") from None


def _online_metrics(trainer: pl.Trainer) -> dict[str, float]:
    logged = trainer.callback_metrics
    return {key: float(logged[key]) for key in ONLINE_METRICS if key in logged}


def _offline_metrics(cfg: Config, backbone: Any, val: LabelledDataset, smoke: Smoke, plan: DevicePlan,
                     run_dir: RunDir, device: Any) -> dict[str, float]:
    """The evaluations ``eval`` asks for, of the frozen ``backbone``: kNN and the linear protocol."""
    knn, linear = cfg.eval.knn, cfg.eval.linear
    if not (knn.enabled or linear.enabled):
        return {}
    train = load_split(cfg, "train", eval_transform(cfg), smoke.limits.get("train"))
    metrics: dict[str, float] = {}
    if knn.enabled and rank_zero_only.rank == 0:  # one process suffices; the others wait at the linear fit
        metrics.update(knn_accuracy(
            backbone, eval_loader(train, cfg, linear.batch_size), eval_loader(val, cfg, linear.batch_size),
            num_classes=num_classes(val), k=knn.k, temperature=knn.temperature, device=device,
        ))
    if linear.enabled:
        augmented = copy.copy(train)  # shares the images; only the transform differs
        augmented.transform = linear_train_transform(cfg)
        metrics.update(linear_protocol(cfg, backbone, augmented, val, plan, run_dir))
    return metrics


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def run(cfg: Config, recipe: str | Path | None = None) -> dict[str, Any]:
    """Pretrains, evaluates and records one recipe; returns the results (also in ``results.json``).

    See :func:`_run` (arguments, errors); the run directory's lock it takes is released however the run ends.

    Raises:
        RunDirBusyError: another live process runs the same recipe in the same run directory.
    """
    with contextlib.ExitStack() as held:
        return _run(cfg, recipe, held)


def _run(cfg: Config, recipe: str | Path | None, held: contextlib.ExitStack) -> dict[str, Any]:
    """Pretrains, evaluates and records one recipe; returns the results (also in ``results.json``).

    Args:
        cfg: a checked recipe (:func:`unmix_ext.runner.recipe.load_recipe`); not modified.
        recipe: the file it came from, recorded in the results.
        held: where the run directory's lock is entered, to be released when the run ends.

    Raises:
        ConfigError, DataError: one line naming the key (devices, paths, method arguments...).
        RunError: one line, when training or writing fails (non-finite loss, checkpoint, disk).
    """
    started = time.time()
    check_writable(Path(cfg.checkpoint.dir).expanduser())  # before the smoke shrink caches data there
    ignored = ignored_keys(cfg)
    smoke = as_run(cfg)
    cfg = smoke.cfg
    recipe_hash = config_hash(cfg)
    run_dir = RunDir.of(cfg)
    if rank_zero_only.rank == 0:  # one live run per run directory: else one line naming the holder, exit 2
        held.enter_context(RunLock(run_dir))
    plan = device_plan(cfg)
    # the shrink may change keys the user set on purpose (a CIFAR stem, a crop size): said before training
    shrunk = f"scale=smoke changes {describe_changes(smoke.changes)}" if smoke.changes else None
    for notice in (shrunk, ignored_keys_notice(cfg), emulated_bf16_notice(cfg, plan)):
        if notice and rank_zero_only.rank == 0:
            print(notice, flush=True)

    pretrain = load_split(cfg, "pretrain", pretrain_transform(cfg), smoke.limits.get("pretrain"))
    scored = eval_split(cfg) is not None
    val = load_split(cfg, "val", eval_transform(cfg), smoke.limits.get("val")) if scored else None
    train_loader = pretrain_loader(pretrain, cfg, plan.world_size)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # the data above draws from cfg.seed itself
    # unlabelled data: a one-class classifier that the unlabelled_batches patch leaves untrained
    model = build_method(cfg, num_classes(val) if scored else 1, plan.world_size)

    resume = _prepare_run_dir(cfg, run_dir)
    if resume is not None:
        check_resumable(resume, model, resolved_method(cfg))
    trainer, progress = pretrain_trainer(cfg, plan, run_dir, len(train_loader))
    # data only, as check_resumable read it (Lightning's default is torch's, which
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns off)
    val_loader = eval_loader(val, cfg, cfg.eval.linear.batch_size) if scored else None
    with stop_on_signals(trainer):  # SIGTERM, SIGUSR1: one line naming the kept checkpoint, exit 128 + signal
        trainer.fit(model, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    checkpoint = None
    if cfg.checkpoint.enabled:
        checkpoint = run_dir.last_checkpoint
        if progress.saved_step != trainer.global_step:  # the final epoch fell between checkpoint.frequency
            # weights_only=False saves the whole training state (optimizer, callbacks), so a rerun resumes from it
            trainer.save_checkpoint(checkpoint, weights_only=False)

    metrics = _online_metrics(trainer) if scored else {}
    if scored:
        metrics.update(_offline_metrics(cfg, model.encoder, val, smoke, plan, run_dir, trainer.strategy.root_device))
    results = {
        "recipe": None if recipe is None else str(Path(recipe).resolve()),
        "recipe_hash": recipe_hash,
        "name": cfg.name,
        "method": resolved_method(cfg),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "dataset": cfg.data.dataset,
        "seed": cfg.seed,
        "scale": cfg.scale,
        "smoke": cfg.scale == "smoke",
        "smoke_changes": smoke.changes,
        "smoke_limits": smoke.limits,
        "metrics": metrics,
        "eval_split": eval_split(cfg),
        "eval_split_text": describe_eval_split(cfg),
        "no_labels": cfg.data.no_labels,
        "ignored_keys": ignored,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        # a finished run resumed trains no step, and Lightning then never starts training
        "start_global_step": trainer.global_step if progress.start_step is None else progress.start_step,
        "resumed_from": None if resume is None else str(resume),
        "skipped_steps": next(c.skipped for c in trainer.callbacks if isinstance(c, NanGuard)),
        "pretrain_seconds": progress.seconds,
        "pretrain_images_per_s": progress.images_per_s,
        "wall_time_s": time.time() - started,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "run_dir": str(run_dir.path),
        "accelerator": plan.accelerator,
        "world_size": plan.world_size,
        "precision": cfg.precision,
        "versions": _versions(),
    }
    if trainer.is_global_zero:
        _write_run_file(run_dir.results, json.dumps(results, indent=2) + "\n", "results",
                        "the run's checkpoints are kept: free space there and rerun to evaluate again")
        print(summary(results))
    if cfg.wandb.enabled:
        import wandb  # only runs that log to wandb pay for its import

        # Lightning leaves the wandb run open, and the next run of this process (reproduce's next row,
        # a second main() call) would log into it instead of starting its own
        wandb.finish()
    return results


def _number(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def summary(results: dict[str, Any]) -> str:
    """A one-screen account of a run's results."""
    metrics = results["metrics"]
    lines = [
        f"unmix_ext run: {results['method']} on {results['dataset']} ({results['scale']}), seed {results['seed']}",
        f"  run dir      {results['run_dir']}",
        f"  recipe       {results['recipe'] or 'none (built from command-line flags)'} (hash {results['recipe_hash']}), "
        f"as run: {Path(results['run_dir']) / 'config.yaml'}",
        f"  pretraining  {results['epochs']} epochs, step {results['start_global_step']} -> {results['global_step']}, "
        f"{_number(results['pretrain_images_per_s'])} images/s on {results['world_size']} {results['accelerator']}",
    ]
    if results["resumed_from"]:
        lines.append(f"  resumed from {results['resumed_from']}")
    if results["skipped_steps"]:
        steps = ", ".join(map(str, results["skipped_steps"]))
        lines.append(f"  skipped      {len(results['skipped_steps'])} step(s) with a non-finite loss: {steps}")
    lines.append(f"  checkpoint   {results['checkpoint']}")
    lines.append(f"  scored on    {results['eval_split_text']}")
    for label, keys in (("online", ("val_acc1", "val_knn_acc1")), ("kNN", ("knn_top1", "knn_top5")),
                        ("linear", ("linear_top1", "linear_top5"))):
        shown = [f"{key} {metrics[key]:.2f}" for key in keys if key in metrics]
        if shown:
            lines.append(f"  {label:<12} {'  '.join(shown)}")
    if results["smoke"]:
        lines.append(f"  smoke shrink {describe_changes(results['smoke_changes']) or 'nothing to shrink'}")
    lines.append(f"  wall time    {results['wall_time_s']:.1f} s")
    return "\n".join(lines)


def run_recipe(recipe: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """What ``python -m unmix_ext.run`` does: :func:`run` of the recipe file with ``overrides``."""
    return run(load_recipe(recipe, overrides), recipe)
