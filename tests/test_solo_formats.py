"""solo-learn's own config format, as its users bring it: a Hydra YAML with a defaults list and
group folders, written for GPUs, runs here as it is with Un-Mix on by one override, and every
setting it makes reaches the built model, trainer, data pipeline or logger."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.strategies import DDPStrategy
from torchvision import transforms

from unmix_ext.runner.builder import build_method, ignored_keys, ssl_methods
from unmix_ext.runner.config import config_to_dict, load_config
from unmix_ext.runner.fake_data import write_fake_dataset
from unmix_ext.runner.guard import CheckpointError, NanGuard
from unmix_ext.runner.pipeline import load_split, pretrain_loader, pretrain_transform
from unmix_ext.run import main
from unmix_ext.runner.run import _prepare_run_dir
from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.trainer import StepwiseSchedule, device_plan, pretrain_trainer

pytestmark = pytest.mark.filterwarnings("ignore")

FIXTURES = Path(__file__).parent / "fixtures"
SOLO_YAML = FIXTURES / "solo_yaml" / "byol.yaml"
# the smallest smoke run of the fixture: 4-image batches of 8-pixel crops, no loader processes, no evaluation
TINY = ["scale=smoke", "optimizer.batch_size=4", "augmentations.0.crop_size=8", "augmentations.1.crop_size=8",
        "data.num_workers=0", "eval.knn.enabled=false", "eval.linear.enabled=false"]


def _leaves(tree, prefix=""):
    """Dotted path -> value of every leaf of a nested mapping (lists indexed)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    out = {}
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)) and value and not all(isinstance(v, (int, float)) for v in value):
            out.update(_leaves(value, path))
        else:
            out[path] = value
    return out


@pytest.mark.parametrize("one_line", ["unmix.enabled=true", "method=byol_unmix"])
def test_gpu_written_solo_yaml_trains_at_smoke_scale_with_unmix(tmp_path, capsys, one_line):
    status = main([str(SOLO_YAML), one_line, f"checkpoint.dir={tmp_path}", *TINY])

    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    run_dir = next(tmp_path.glob("byol-cifar10-*"))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == "byol_unmix" and results["global_step"] > 0
    changes = results["smoke_changes"]
    # what a CPU cannot run is changed, and each change is listed
    assert changes["devices"] == {"from": [0], "to": 1} and changes["strategy"] == {"from": "ddp", "to": "auto"}
    assert changes["sync_batchnorm"] == {"from": True, "to": False}
    if not torch.cuda.is_available():
        assert changes["accelerator"] == {"from": "gpu", "to": "cpu"}
        assert changes["precision"] == {"from": "16-mixed", "to": "32-true"}
    # config.yaml: the composed config in the schema the user wrote, plus unmix, and it runs again
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["momentum"] == {"base_tau": 0.98, "final_tau": 1.0, "classifier": True}
    assert [group["solarization"]["prob"] for group in saved["augmentations"]] == [0.0, 0.2]  # the group file
    assert saved["wandb"]["project"] == "solo-learn" and saved["unmix"]["enabled"] is True
    again = load_config(run_dir / "config.yaml", known_methods=ssl_methods())
    assert config_to_dict(again) == saved


def test_every_setting_of_a_solo_yaml_reaches_what_is_built(tmp_path):
    """Each leaf of the composed config, read back from the model, the Trainer, the data pipeline or
    the logger: a key the schema gains without being wired anywhere fails here."""
    write_fake_dataset("cifar10", tmp_path / "cifar", num_per_class=4)
    cfg = load_config(SOLO_YAML, [
        "unmix.enabled=true", "unmix.alpha=0.7", "unmix.prob=0.3", "unmix.lam=0.25", "unmix.view=1",
        "unmix.target_side=online", "seed=11", f"data.train_path={tmp_path / 'cifar'}", "data.val_path=null",
        "data.num_workers=1", "data.fraction=0.5", "data.on_corrupt=skip", "optimizer.batch_size=4",
        "accelerator=cpu", "devices=2", "num_nodes=2", "precision=bf16-mixed", "channels_last=true",
        "accumulate_grad_batches=3",
        "max_steps=50", "deterministic=true", "checkpoint.frequency=2", "checkpoint.keep_prev=true",
        f"checkpoint.dir={tmp_path / 'runs'}", "wandb.entity=team", "wandb.offline=true",
        "nan_guard.max_skipped_steps=2", "scheduler.warmup_epochs=3", "scheduler.warmup_start_lr=0.01",
        "scheduler.min_lr=0.001", "backbone.kwargs.zero_init_residual=true",
        "augmentations.0.mean=[0.5,0.5,0.5]", "augmentations.0.std=[0.2,0.2,0.2]",
        "augmentations.1.equalization.enabled=false", "augmentations.0.rrc.crop_max_scale=0.9",
        "augmentations.1.horizontal_flip.enabled=true", "dali.device=cpu", "dali.encode_indexes_into_labels=true",
        "augmentations_cfg=old/augmentations.yaml", "wandb_cfg=old/wandb.yaml",
    ], known_methods=ssl_methods())
    if os.cpu_count() < 2:
        pytest.skip("needs 2 CPU cores for devices=2")
    plan = device_plan(cfg)
    model = build_method(cfg, num_classes=10, world_size=plan.world_size)
    run_dir = RunDir.of(cfg).path
    trainer, _ = pretrain_trainer(cfg, plan, RunDir(run_dir), batches=8)
    pretrain = load_split(cfg, "pretrain", pretrain_transform(cfg))
    loader = pretrain_loader(pretrain, cfg, plan.world_size)
    (checkpoints,) = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    (guard,) = [c for c in trainer.callbacks if isinstance(c, NanGuard)]
    (wandb,) = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    # solo-learn's rule: batch x devices x nodes / 256, and x accumulate_grad_batches (its BaseMethod's)
    scale = 4 * 2 * 2 / 256 * 3

    def pipeline(i):
        return loader.dataset.dataset.transform.transforms[i].transform.transform.transforms

    def step(i, kind):
        return next(t for t in pipeline(i) if isinstance(t, kind))

    def applied(i, position):  # RandomApply steps of 1.0.2's pipeline: jitter, blur, solarization
        return [t for t in pipeline(i) if isinstance(t, transforms.RandomApply)][position].p

    observed = {
        "name": (wandb._wandb_init["name"], "byol-cifar10-pretrain"),
        "method": (type(model).registry_name, "byol_unmix"),
        "backbone.name": (model.encoder_name, "resnet18"),
        "backbone.kwargs.zero_init_residual": (bool((model.encoder.layer1[0].bn2.weight == 0).all()), True),
        "method_kwargs.proj_hidden_dim": (model.projector[0].out_features, 64),
        "method_kwargs.proj_output_dim": (model.projector[-1].out_features, 32),
        "method_kwargs.pred_hidden_dim": (model.predictor[0].out_features, 64),
        "momentum.base_tau": (model.momentum_updater.base_tau, 0.98),
        "momentum.final_tau": (model.momentum_updater.final_tau, 1.0),
        "momentum.classifier": (model.momentum_classifier is not None, True),
        "data.dataset": (pretrain.num_classes, 10),
        "data.train_path": (Path(pretrain.source).resolve().is_relative_to(tmp_path / "cifar"), True),
        "data.val_path": (None, None),  # null: the dataset's own test split (as solo-learn's CIFAR configs)
        "data.format": (type(pretrain).__name__, "ArrayDataset"),  # image_folder: CIFAR's release files, read
        "data.num_workers": (loader.num_workers, 1),
        "data.fraction": (len(pretrain), 20),  # half of the 40 fake images
        "data.no_labels": (bool((pretrain.targets >= 0).all()), True),
        "data.augment": (loader.collate_fn is default_collate, True),  # per_image: solo's pipeline, torch's collate
        "optimizer.name": ((model.optimizer, model.lars), ("sgd", True)),
        "optimizer.batch_size": ((model.batch_size, loader.batch_size), (4, 4)),
        "optimizer.lr": (model.lr, pytest.approx(1.0 * scale)),
        "optimizer.classifier_lr": (model.classifier_lr, pytest.approx(0.1 * scale)),
        "optimizer.weight_decay": (model.weight_decay, 1e-5),
        "optimizer.kwargs.clip_lr": (model.grad_clip_lars, True),
        "optimizer.kwargs.eta": (model.eta_lars, 0.02),
        "optimizer.kwargs.exclude_bias_n_norm": (model.exclude_bias_n_norm, True),
        "scheduler.name": (model.scheduler, "warmup_cosine"),
        "scheduler.warmup_epochs": (model.warmup_epochs, 3),
        "scheduler.warmup_start_lr": (model.warmup_start_lr, pytest.approx(0.01 * 3)),
        "scheduler.min_lr": (model.min_lr, pytest.approx(0.001 * 3)),
        "scheduler.lr_decay_steps": (model.lr_decay_steps, None),
        "scheduler.interval": (any(isinstance(c, StepwiseSchedule) for c in trainer.callbacks), True),
        "checkpoint.enabled": (checkpoints is not None, True),
        "checkpoint.dir": (Path(checkpoints.dirpath), run_dir / "checkpoints"),
        "checkpoint.frequency": (checkpoints._every_n_epochs, 2),
        "checkpoint.keep_prev": (checkpoints.save_top_k, -1),
        "nan_guard.max_skipped_steps": (guard.max_skipped_steps, 2),
        "wandb.enabled": (wandb is not None, True),
        "wandb.project": (wandb._wandb_init["project"], "solo-learn"),
        "wandb.entity": (wandb._wandb_init["entity"], "team"),
        "wandb.offline": (wandb._offline, True),
        "max_epochs": ((trainer.max_epochs, model.max_epochs), (1000, 1000)),
        "max_steps": (trainer.max_steps, 50),
        "accelerator": (type(trainer.accelerator).__name__, "CPUAccelerator"),
        "devices": (trainer.num_devices, 2),
        "num_nodes": (trainer.num_nodes, 2),
        "strategy": (isinstance(trainer.strategy, DDPStrategy), True),
        "precision": (trainer.precision, "bf16-mixed"),
        "channels_last": (model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last), True),
        "sync_batchnorm": (trainer.strategy._layer_sync is not None, True),
        "accumulate_grad_batches": ((trainer.accumulate_grad_batches, model.accumulate_grad_batches), (3, 3)),
        "seed": (model.unmix_seed, 11),
        "deterministic": (torch.are_deterministic_algorithms_enabled(), True),
        "unmix.enabled": (type(model).registry_name.endswith("_unmix"), True),
        "unmix.alpha": (model.unmix.alpha, 0.7),
        "unmix.prob": (model.unmix.prob, 0.3),
        "unmix.per_sample": (model.unmix.per_sample, False),
        "unmix.lam": (model.unmix.lam, 0.25),
        "unmix.view": (model.unmix_view, 1),
        "unmix.symmetric": (model.unmix_symmetric, None),
        "unmix.target_side": (model.unmix_target_side, "online"),
    }
    # what solo-learn main accepts and ignores here is accepted, left out of the build and listed as ignored
    ignored = ignored_keys(cfg)
    observed.update({key: (key in ignored, True) for key in (
        "dali.device", "dali.encode_indexes_into_labels", "augmentations_cfg", "wandb_cfg")})
    torch.use_deterministic_algorithms(False)
    for i, group in enumerate(cfg.augmentations):
        crop = step(i, transforms.RandomResizedCrop)
        jitter = step(i, transforms.RandomApply).transforms[0]
        normalize = step(i, transforms.Normalize)
        g = f"augmentations.{i}"
        observed.update({
            f"{g}.crop_size": (crop.size, (group.crop_size,) * 2),
            f"{g}.num_crops": (loader.dataset.dataset.transform.transforms[i].num_crops, 1),
            f"{g}.rrc.enabled": (crop is not None, True),
            f"{g}.rrc.crop_min_scale": (crop.scale[0], 0.08),
            f"{g}.rrc.crop_max_scale": (crop.scale[1], [0.9, 1.0][i]),
            f"{g}.color_jitter.enabled": (group.color_jitter.enabled, None),
            f"{g}.color_jitter.prob": (applied(i, 0), 0.8),
            f"{g}.color_jitter.brightness": (jitter.brightness, (0.6, 1.4)),
            f"{g}.color_jitter.contrast": (jitter.contrast, (0.6, 1.4)),
            f"{g}.color_jitter.saturation": (jitter.saturation, (0.8, 1.2)),
            f"{g}.color_jitter.hue": (jitter.hue, (-0.1, 0.1)),
            f"{g}.grayscale.prob": (step(i, transforms.RandomGrayscale).p, 0.2),
            f"{g}.gaussian_blur.prob": (applied(i, 1), [1.0, 0.1][i]),
            f"{g}.solarization.prob": (applied(i, 2), [0.0, 0.2][i]),
            f"{g}.equalization.prob": (0.0, 0.0),  # 1.0.2 has none; a prob > 0 is refused (test_run.BAD)
            f"{g}.horizontal_flip.prob": (step(i, transforms.RandomHorizontalFlip).p, 0.5),
            f"{g}.mean": (list(normalize.mean), [[0.5] * 3, [0.4914, 0.4822, 0.4465]][i]),
            f"{g}.std": (list(normalize.std), [[0.2] * 3, [0.247, 0.243, 0.261]][i]),
        })
        for name in ("grayscale", "gaussian_blur", "solarization", "equalization", "horizontal_flip"):
            # enabled only guards against a contradiction with prob (solo-learn reads prob alone)
            observed[f"{g}.{name}.enabled"] = (getattr(group, name).enabled, getattr(group, name).enabled)
    # what the runner reads around the built objects, checked through its behaviour elsewhere:
    # auto_resume (below), scale (the smoke tests), eval (test_run's smoke run), data.download and
    # data.on_corrupt (test_data: files are fetched only when absent, images only of folder datasets)
    runner_level = ("auto_resume.", "scale", "eval.", "data.download", "data.on_corrupt")

    leaves = _leaves(config_to_dict(cfg))
    unwired = sorted(k for k in leaves if k not in observed and not k.startswith(runner_level))
    assert unwired == []
    for key, (got, expected) in observed.items():
        assert got == expected, key


def test_auto_resume_max_hours_is_solo_learns_age_limit(tmp_path):
    cfg = load_config(SOLO_YAML, [f"checkpoint.dir={tmp_path}", "auto_resume.max_hours=1"])
    run_dir = RunDir.of(cfg).path
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = run_dir / "checkpoints" / "epoch=0-step=1.ckpt"
    checkpoint.write_bytes(b"x")
    assert _prepare_run_dir(cfg, RunDir(run_dir)) == checkpoint
    (run_dir / "results.json").write_text("{}")  # a finished run's results
    two_hours_ago = time.time() - 7200
    os.utime(checkpoint, (two_hours_ago, two_hours_ago))
    # older than the limit: one line, and the old run's checkpoints are left alone
    with pytest.raises(CheckpointError, match=r"is 2 hours old, more than auto_resume.max_hours \(1\); raise"):
        _prepare_run_dir(cfg, RunDir(run_dir))
    assert checkpoint.exists() and (run_dir / "results.json").exists()



def test_args_json_of_every_release_reads_through_one_table_and_writes_back():
    from unmix_ext.runner.solo_format import args_json_of, args_json_recipe, find

    common = {"method": "byol", "backbone.name": "resnet18", "backbone.kwargs": {"cifar": True},
              "data.dataset": "custom", "data.train_path": str(Path("/d") / "train"),
              "data.val_path": str(Path("/d") / "val")}
    flat = {"method": "byol", "dataset": "custom", "backbone_args": {"cifar": True}, "data_dir": "/d",
            "train_dir": "train", "val_dir": "val", "proj_hidden_dim": 64}
    releases = {"1.0.2": {**flat, "encoder": "resnet18"},
                "1.0.3": {**flat, "backbone": "resnet18", "encoder": "resnet50"},  # backbone wins, as 1.0.3 reads it
                "main": args_json_of(common)}
    for release, args in releases.items():
        found = args_json_recipe(args)
        assert {key: find(found, key) for key in common} == common, release
    assert releases["main"]["backbone"] == {"name": "resnet18", "kwargs": {"cifar": True}}  # main's nested layout
    assert "method_kwargs" not in args_json_recipe(releases["1.0.2"])  # flat: unmarked among the others
