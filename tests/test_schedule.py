"""``scheduler.interval``: solo-learn 1.0.2's per-epoch schedules, sampled every optimizer step or every epoch."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

import unmix_ext.methods  # noqa: F401  (applies the patches: solo's schedulers need the pl_bolts shim)
from solo.methods.base import BaseMethod
from unmix_ext.runner.config import ConfigError, load_config
from unmix_ext.runner.rundir import RunDir
from unmix_ext.runner.trainer import StepwiseSchedule, device_plan, pretrain_trainer

pytestmark = pytest.mark.filterwarnings("ignore")

BASE_LR, WARMUP_START_LR, EPOCHS, STEPS_PER_EPOCH = 1.0, 0.1, 3, 4
TOTAL = EPOCHS * STEPS_PER_EPOCH


def warmup_cosine(t: float, warmup: float, total: float) -> float:
    if t < warmup:  # the base lr is reached on the last warm-up step
        return WARMUP_START_LR + (BASE_LR - WARMUP_START_LR) * t / max(1, warmup - 1)
    return BASE_LR * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2


# the lr at position t of a curve `length` positions long (epochs or steps) with `per_epoch` positions per epoch
CURVES = {
    "warmup_cosine": lambda t, length, per_epoch: warmup_cosine(t, per_epoch, length),  # one warm-up epoch
    "cosine": lambda t, length, per_epoch: BASE_LR * (1 + math.cos(math.pi * t / length)) / 2,
    "step": lambda t, length, per_epoch: BASE_LR * 0.1 ** sum(t >= epoch * per_epoch for epoch in (1, 2)),
}


class SoloSchedule(pl.LightningModule):
    """One weight, optimised by solo-learn 1.0.2's own ``configure_optimizers``; records every step's lr."""

    configure_optimizers = BaseMethod.configure_optimizers

    def __init__(self, scheduler: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.learnable_params = [{"params": [self.weight]}]
        self.optimizer, self.lars, self.lr, self.weight_decay, self.extra_optimizer_args = "sgd", False, BASE_LR, 0.0, {}
        self.scheduler, self.max_epochs, self.warmup_epochs = scheduler, EPOCHS, 1
        self.warmup_start_lr, self.min_lr, self.lr_decay_steps = WARMUP_START_LR, 0.0, [1, 2]
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return (self.weight * batch[0]).sum()


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = trainer.current_epoch + 1 >= self.epoch


def fit(model: SoloSchedule, callbacks: list, ckpt_path=None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, DataLoader(TensorDataset(torch.ones(STEPS_PER_EPOCH, 1)), batch_size=1), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("scheduler", list(CURVES))
def test_step_interval_samples_the_epoch_curve_every_step(scheduler):
    stepwise, per_epoch = SoloSchedule(scheduler), SoloSchedule(scheduler)
    fit(stepwise, [StepwiseSchedule()])
    fit(per_epoch, [])

    curve = CURVES[scheduler]
    assert stepwise.lrs == pytest.approx([curve(t, TOTAL, STEPS_PER_EPOCH) for t in range(TOTAL)])
    # solo-learn 1.0.2's own way, what interval: epoch keeps: one lr per epoch, the same curve in epochs
    assert per_epoch.lrs == pytest.approx([curve(t // STEPS_PER_EPOCH, EPOCHS, 1) for t in range(TOTAL)])
    if scheduler != "step":  # the step schedule's milestones are epochs: the same lrs either way
        assert len(set(stepwise.lrs)) > len(set(per_epoch.lrs)) == EPOCHS


def test_a_resumed_run_continues_the_step_curve(tmp_path):
    uninterrupted, first, resumed = (SoloSchedule("warmup_cosine") for _ in range(3))
    fit(uninterrupted, [StepwiseSchedule()])
    trainer = fit(first, [StepwiseSchedule(), StopAfterEpoch(1)])
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")

    fit(resumed, [StepwiseSchedule()], ckpt_path=tmp_path / "epoch1.ckpt")

    assert first.lrs + resumed.lrs == pytest.approx(uninterrupted.lrs)
    assert len(resumed.lrs) == TOTAL - STEPS_PER_EPOCH


@pytest.mark.parametrize("overrides, stepwise", [([], True), (["scheduler.interval=epoch"], False),
                                                 (["scheduler.name=none"], False)])
def test_the_recipe_chooses_the_interval(tmp_path, overrides, stepwise):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: simclr\ndata: {dataset: cifar10}\n")
    cfg = load_config(recipe, [f"checkpoint.dir={tmp_path}", *overrides])
    trainer, _ = pretrain_trainer(cfg, device_plan(cfg), RunDir.of(cfg), batches=4)
    assert any(isinstance(callback, StepwiseSchedule) for callback in trainer.callbacks) == stepwise


def test_a_scheduler_of_unknown_lengths_is_refused_in_one_line():
    class OwnSchedule(SoloSchedule):
        def configure_optimizers(self):
            optimizer = torch.optim.SGD([self.weight], lr=BASE_LR)
            return [optimizer], [torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)]

    with pytest.raises(ConfigError, match="^scheduler.interval: step cannot rescale LambdaLR, which OwnSchedule "
                                          "builds itself; set scheduler.interval=epoch$"):
        fit(OwnSchedule("cosine"), [StepwiseSchedule()])
