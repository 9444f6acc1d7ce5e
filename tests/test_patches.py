"""Each solo-learn patch fixes what its header says; the patch registry reports honestly.

Every patch test below fails with its patch left out, e.g.
``UNMIX_EXT_SKIP_PATCHES=lars_closure pytest tests/test_patches.py`` (the variable
is read when ``unmix_ext`` is first imported, so it must be set for the whole run).
The three subprocess tests at the end check the machinery on a clean run: they drop
the variable, since they assert that every patch applies.
"""
from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.metadata
import math
import os
import subprocess
import sys
import textwrap
import types

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from unmix_ext.patches import PATCHES, PatchError, PatchStatus, _core

pytestmark = pytest.mark.filterwarnings("ignore")

IMAGE = 16  # small images keep a ResNet-18 step well under a second on a CPU
# heads far below solo's defaults (4096 prototypes, 2048-4096 hidden units), same code paths
SMALL_HEADS = {
    "byol": dict(proj_hidden_dim=64, proj_output_dim=16, pred_hidden_dim=64),
    "dino": dict(proj_hidden_dim=64, proj_output_dim=16, num_prototypes=16),
    "simclr": dict(proj_hidden_dim=64, proj_output_dim=16),
}


def _trainer(**overrides) -> pl.Trainer:
    """A quiet CPU trainer: no logger, checkpoints or sanity validation."""
    kwargs = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    return pl.Trainer(**{**kwargs, **overrides})


def _small(build_method, name: str, **overrides):
    """``build_method(name)`` with small heads and no online kNN unless asked for."""
    return build_method(name, **{"knn_eval": False, **SMALL_HEADS.get(name, {}), **overrides})


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


class _TwoViews(Dataset):
    """(index, [image, flipped image], label): solo-learn's pretraining batch format."""

    def __init__(self, n: int = 8):
        self.images = _images(n, seed=0)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return i, [self.images[i], self.images[i].flip(-1)], i % 4


def _pretrain_loader() -> DataLoader:
    return DataLoader(_TwoViews(), batch_size=8)


def _labelled_loader(num_classes: int = 4, n: int = 8, batch_size: int = 6) -> DataLoader:
    """(images (B, 3, IMAGE, IMAGE), labels (B,)); 8 images in batches of 6 and 2, so a
    batch-size-weighted mean differs from the mean of the two batch values."""
    labels = torch.arange(n) % num_classes
    return DataLoader(TensorDataset(_images(n, seed=1), labels), batch_size=batch_size)


def _linear_model(num_classes: int):
    """solo's LinearModel on a frozen (3 * IMAGE * IMAGE -> 8) backbone."""
    from solo.methods.linear import LinearModel

    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * IMAGE * IMAGE, 8))
    backbone.inplanes = 8  # LinearModel reads the feature size from here
    torch.manual_seed(0)
    return LinearModel(
        backbone=backbone, num_classes=num_classes, max_epochs=1, batch_size=8, optimizer="sgd",
        lars=False, lr=0.1, weight_decay=0.0, exclude_bias_n_norm=False,
        extra_optimizer_args={"momentum": 0.9}, scheduler="none",
    )


class _ValidationOutputs(pl.Callback):
    """Keeps what each ``validation_step`` of the current validation epoch returned."""

    def on_validation_epoch_start(self, trainer, module):
        self.outputs = []

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        self.outputs.append(outputs)


def _weighted_mean(outputs, key: str) -> float:
    return sum(o["batch_size"] * float(o[key]) for o in outputs) / sum(
        o["batch_size"] for o in outputs)


def _assert_logged_weighted_means(trainer, outputs, keys) -> None:
    assert [o["batch_size"] for o in outputs] == [6, 2]
    for key in keys:
        logged = float(trainer.callback_metrics[key])
        assert logged == pytest.approx(_weighted_mean(outputs, key), rel=1e-5, abs=1e-5), key


def _clusters(labels: torch.Tensor, seed: int, dim: int = 8) -> torch.Tensor:
    """(N, dim) points near ``10 * onehot(label)``: separable by cosine and euclidean kNN."""
    noise = torch.randn(len(labels), dim, generator=torch.Generator().manual_seed(seed))
    return 10 * F.one_hot(labels, dim).float() + 0.05 * noise


# --- pl_bolts_scheduler --------------------------------------------------------------


def test_warmup_cosine_schedule_per_param_group():
    # solo imports the scheduler under this name; the shim provides it
    from pl_bolts.optimizers.lr_scheduler import LinearWarmupCosineAnnealingLR
    from solo.methods import base, linear

    assert base.LinearWarmupCosineAnnealingLR is LinearWarmupCosineAnnealingLR
    assert linear.LinearWarmupCosineAnnealingLR is LinearWarmupCosineAnnealingLR
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in (1.0, 0.2)]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    scheduler = LinearWarmupCosineAnnealingLR(
        optimizer, warmup_epochs=3, max_epochs=11, warmup_start_lr=0.1, eta_min=0.01)
    lrs = []
    for _ in range(12):  # epochs 0..11
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()

    expected = {
        0: [0.1, 0.1],  # warmup_start_lr
        1: [0.55, 0.15],
        2: [1.0, 0.2],  # each group's base lr on the last warm-up epoch
        3: [1.0, 0.2],  # cosine starts from the base lr
        7: [0.505, 0.105],  # half-way: (base + eta_min) / 2
        11: [0.01, 0.01],  # eta_min at max_epochs
    }
    for epoch, lr in expected.items():
        assert lrs[epoch] == pytest.approx(lr), epoch
    decay = [lr[0] for lr in lrs[3:]]
    assert decay == sorted(decay, reverse=True)


# --- validation_epoch_end ------------------------------------------------------------


def test_validation_logs_batch_weighted_means_and_online_knn(build_method, monkeypatch):
    model = _small(build_method, "simclr", knn_eval=True)  # knn_k=3
    knn_calls = []
    compute = model.knn.compute

    def recording_compute():
        sizes = [sum(len(t) for t in model.knn.train_targets),
                 sum(len(t) for t in model.knn.test_targets)]
        acc1, acc5 = compute()
        knn_calls.append((sizes, acc1))
        return acc1, acc5

    monkeypatch.setattr(model.knn, "compute", recording_compute)
    recorder = _ValidationOutputs()
    trainer = _trainer(max_epochs=1, callbacks=[recorder])
    trainer.fit(model, _pretrain_loader(), _labelled_loader())

    _assert_logged_weighted_means(trainer, recorder.outputs, ("val_loss", "val_acc1", "val_acc5"))
    # the kNN ran once, at the end of validation: 2 views x 8 training images, 8 val images
    assert [sizes for sizes, _ in knn_calls] == [[16, 8]]
    assert float(trainer.callback_metrics["val_knn_acc1"]) == pytest.approx(knn_calls[0][1])


@pytest.mark.parametrize("num_classes", [
    6,
    4,  # fewer than 5 classes: needs topk_few_classes
])
def test_validate_logs_weighted_means_of_the_momentum_classifier(build_method, num_classes):
    model = _small(build_method, "byol", momentum_classifier=True, num_classes=num_classes)
    recorder = _ValidationOutputs()
    trainer = _trainer(callbacks=[recorder])
    trainer.validate(model, _labelled_loader(), verbose=False)

    online = [out[0] for out in recorder.outputs]
    momentum = [out[1] for out in recorder.outputs]
    _assert_logged_weighted_means(trainer, online, ("val_loss", "val_acc1"))
    _assert_logged_weighted_means(trainer, momentum, ("momentum_val_loss", "momentum_val_acc1"))


def test_linear_model_validation_logs_weighted_means():
    model = _linear_model(num_classes=6)  # >= 5 classes: independent of topk_few_classes
    recorder = _ValidationOutputs()
    trainer = _trainer(callbacks=[recorder])
    trainer.validate(model, _labelled_loader(), verbose=False)

    _assert_logged_weighted_means(trainer, recorder.outputs, ("val_loss", "val_acc1", "val_acc5"))


# --- momentum_batch_end --------------------------------------------------------------


class _ParameterSnapshots(pl.Callback):
    """Copies a module's parameters after each optimizer step."""

    def __init__(self, module: nn.Module):
        self.module, self.snapshots = module, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.snapshots.append([p.detach().clone() for p in self.module.parameters()])


def test_momentum_encoder_is_an_ema_of_the_online_encoder(build_method):
    model = _small(build_method, "byol")
    online_0 = [p.detach().clone() for p in model.encoder.parameters()]
    snapshots = _ParameterSnapshots(model.encoder)
    trainer = _trainer(max_epochs=2, callbacks=[snapshots])
    trainer.fit(model, _pretrain_loader())

    assert trainer.global_step == 2
    online_1, online_2 = snapshots.snapshots
    updater = model.momentum_updater
    base, final = updater.base_tau, updater.final_tau
    # tau after step 1 of 2 follows solo's cosine schedule; after the last step it is final_tau
    tau_1 = final - (final - base) * (math.cos(math.pi * 1 / 2) + 1) / 2
    assert updater.cur_tau == pytest.approx(final)
    assert float(trainer.callback_metrics["tau"]) == pytest.approx(tau_1)
    moved = False
    for m, o0, o1, o2 in zip(model.momentum_encoder.parameters(), online_0, online_1, online_2):
        expected = tau_1 * (base * o0 + (1 - base) * o1) + (1 - tau_1) * o2
        torch.testing.assert_close(m.detach(), expected, rtol=1e-5, atol=1e-6)
        moved |= not torch.equal(m, o0)
    assert moved


# --- knn_metric, knn_num_classes -----------------------------------------------------


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_online_knn_constructs_accumulates_and_computes(distance):
    from solo.utils.knn import WeightedKNNClassifier

    knn = WeightedKNNClassifier(k=3, distance_fx=distance)
    train_labels = torch.arange(4).repeat(5)
    # a training step passes train features only: the call accumulates, computes nothing
    assert knn(train_features=_clusters(train_labels, 0), train_targets=train_labels) is None
    test_labels = torch.arange(4).repeat(2)
    knn(test_features=_clusters(test_labels, 1), test_targets=test_labels)

    assert knn.compute() == (100.0, 100.0)
    assert knn.train_features == [] and knn.test_features == []  # compute resets the banks


def test_online_knn_on_a_validation_set_missing_classes():
    from solo.utils.knn import WeightedKNNClassifier

    knn = WeightedKNNClassifier(k=3, distance_fx="euclidean")
    train_labels = torch.arange(5).repeat(4)
    knn.update(train_features=_clusters(train_labels, 0), train_targets=train_labels)
    test_labels = torch.tensor([0, 4, 4, 0, 4])
    knn.update(test_features=_clusters(test_labels, 1), test_targets=test_labels)

    acc1, _ = knn.compute()
    assert acc1 == 100.0


def test_online_knn_ignores_unlabelled_training_rows():
    from solo.utils.knn import WeightedKNNClassifier

    knn = WeightedKNNClassifier(k=3, distance_fx="euclidean")
    labels = torch.arange(4).repeat(3)
    test_features = _clusters(labels, 1)
    knn.update(train_features=_clusters(labels, 0), train_targets=labels)
    # unlabelled rows (-1) sit exactly on the test points: they would win every vote
    knn.update(train_features=test_features, train_targets=torch.full_like(labels, -1))
    knn.update(test_features=test_features, test_targets=labels)

    acc1, _ = knn.compute()
    assert acc1 == 100.0


# --- wmse_cholesky -------------------------------------------------------------------


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast-bf16"])
def test_whitening_gives_zero_mean_and_identity_covariance(autocast):
    from solo.utils.whitening import Whitening2d

    g = torch.Generator().manual_seed(0)
    # correlated, off-centre features
    x = torch.randn(64, 4, generator=g) @ torch.randn(4, 4, generator=g) + 3.0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = Whitening2d(4)(x.bfloat16() if autocast else x)

    assert out.dtype == torch.float32 and out.shape == (64, 4)
    centred = out - out.mean(dim=0)
    cov = centred.T @ centred / (len(out) - 1)
    torch.testing.assert_close(out.mean(dim=0), torch.zeros(4), rtol=0, atol=1e-4)
    torch.testing.assert_close(cov, torch.eye(4), rtol=0, atol=1e-4)


# --- dino_clip_gradients, dino_teacher_warmup ----------------------------------------


def test_dino_trains_with_clip_grad_and_lightning_gradient_clipping(build_method):
    # warm-up within max_epochs: independent of dino_teacher_warmup
    model = _small(build_method, "dino", clip_grad=0.3, warmup_teacher_temperature_epochs=1,
                   lars=False)
    trainer = _trainer(max_epochs=2, gradient_clip_val=1e-3, gradient_clip_algorithm="norm")
    trainer.fit(model, _pretrain_loader())

    assert trainer.global_step == 2
    assert type(model).clip_gradients is pl.LightningModule.clip_gradients
    # the last step's gradients are still there, clipped by Lightning to total norm 1e-3
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    assert total <= 1e-3 * (1 + 1e-4)


def test_dino_clip_encoder_gradients_bounds_each_encoder_gradient(build_method):
    model = _small(build_method, "dino", warmup_teacher_temperature_epochs=1)
    params = list(model.encoder.parameters())
    g = torch.Generator().manual_seed(0)
    for p in params:
        p.grad = 10 * torch.randn(p.shape, generator=g)
    params[0].grad = torch.full_like(params[0], 1e-4)  # small ones are left alone
    small = params[0].grad.clone()

    model.clip_encoder_gradients(0.5)

    assert max(float(p.grad.norm()) for p in params) <= 0.5 * (1 + 1e-5)
    assert torch.equal(params[0].grad, small)


@pytest.mark.parametrize("warmup_epochs, max_epochs, expected", [
    (50, 2, [0.04, 0.04 + 0.03 / 49]),  # the run ends while the teacher still warms up
    (3, 5, [0.04, 0.055, 0.07, 0.07, 0.07]),  # the usual case keeps upstream's schedule
])
def test_dino_teacher_temperature_schedule(build_method, warmup_epochs, max_epochs, expected):
    model = _small(build_method, "dino", max_epochs=max_epochs,
                   warmup_teacher_temperature=0.04, teacher_temperature=0.07,
                   warmup_teacher_temperature_epochs=warmup_epochs)

    assert list(model.dino_loss_func.teacher_temp_schedule) == pytest.approx(expected)


# --- multicrop_codes -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["swav", "dino", "swav_unmix", "dino_unmix"])
def test_codes_methods_train_with_small_crops(name, build_method, fit_two_steps):
    model = _small(build_method, name, num_small_crops=2)

    losses, trainer = fit_two_steps(model, num_small=2)

    assert trainer.global_step == 2
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)


def _codes_and_scores(crops: int, n: int = 6, k: int = 5):
    g = torch.Generator().manual_seed(4)
    codes = [torch.softmax(torch.randn(n, k, generator=g), dim=1) for _ in range(2)]
    return codes, [torch.randn(n, k, generator=g) for _ in range(crops)]


def _mean_over_other_crops(codes, scores, temperature):
    """Written out: mean over (large crop i, crop v != i) of the rows' soft cross-entropy."""
    terms = [-(codes[i] * F.log_softmax(scores[v] / temperature, dim=1)).sum(1).mean()
             for i in range(len(codes)) for v in range(len(scores)) if v != i]
    assert len(terms) == len(codes) * (len(scores) - 1)
    return torch.stack(terms).mean()


def test_swav_loss_pairs_large_crop_codes_with_every_other_crop():
    from solo.losses.swav import swav_loss_func

    codes, scores = _codes_and_scores(crops=4)
    torch.testing.assert_close(swav_loss_func(scores, codes, 0.1),
                               _mean_over_other_crops(codes, scores, 0.1))
    # two crops: the value solo-learn 1.0.2 computes
    upstream = swav_loss_func.__unmix_upstream__
    torch.testing.assert_close(swav_loss_func(scores[:2], codes, 0.1),
                               upstream(scores[:2], codes, 0.1))


def test_dino_loss_scores_every_student_crop_against_the_two_teacher_crops():
    from solo.losses.dino import DINOLoss

    n, k = 6, 5
    loss_fn = DINOLoss(num_prototypes=k, warmup_teacher_temp=0.04, teacher_temp=0.07,
                       warmup_teacher_temp_epochs=1, num_epochs=2, student_temp=0.1)
    loss_fn.center.normal_(generator=torch.Generator().manual_seed(5))
    center = loss_fn.center.clone()
    g = torch.Generator().manual_seed(6)
    teacher, student = torch.randn(2 * n, k, generator=g), torch.randn(4 * n, k, generator=g)
    codes = list(F.softmax((teacher - center) / 0.04, dim=-1).split(n))
    expected = _mean_over_other_crops(codes, list(student.split(n)), 0.1)

    torch.testing.assert_close(loss_fn(student, teacher), expected)
    # the centre moves by the teacher's (large crops') logits only
    torch.testing.assert_close(loss_fn.center, 0.9 * center + 0.1 * teacher.mean(0, keepdim=True))
    # two crops: the value solo-learn 1.0.2 computes
    loss_fn.center.copy_(center)
    ours = loss_fn(student[: 2 * n], teacher)
    loss_fn.center.copy_(center)
    torch.testing.assert_close(ours, DINOLoss.forward.__unmix_upstream__(loss_fn, student[: 2 * n], teacher))


# --- swav_queue_resume -----------------------------------------------------------------


def test_swav_with_a_queue_resumes_with_the_queue_it_saved(build_method, tmp_path):
    first = _small(build_method, "swav", queue_size=16, epoch_queue_starts=0, max_epochs=3)
    trainer = _trainer(max_epochs=2)
    trainer.fit(first, _pretrain_loader())
    checkpoint = tmp_path / "swav.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)["state_dict"]["queue"]
    assert saved.abs().sum() > 0  # two steps of embeddings in it

    queue_at_first_step = []

    class QueueProbe(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            queue_at_first_step.append(module.queue.clone())

    resumed = _small(build_method, "swav", queue_size=16, epoch_queue_starts=0, max_epochs=3)
    _trainer(max_epochs=3, callbacks=[QueueProbe()]).fit(resumed, _pretrain_loader(), ckpt_path=checkpoint)

    torch.testing.assert_close(queue_at_first_step[0], saved, rtol=0, atol=0)


# --- deepclusterv2_empty_targets -----------------------------------------------------


def _prototype_scores() -> torch.Tensor:
    """(P=2 prototype layers, V=2 views, N=4 images, C=3 prototypes) scores."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 2, 4, 3, generator=g).requires_grad_()


@pytest.mark.parametrize("module", [
    "solo.losses.deepclusterv2",
    "solo.methods.deepclusterv2",  # the binding DeepClusterV2.training_step calls
    "solo.losses",  # the package's re-export
])
def test_deepclusterv2_loss_without_kmeans_targets_is_zero(module):
    loss_func = importlib.import_module(module).deepclusterv2_loss_func
    scores = _prototype_scores()

    loss = loss_func(scores, torch.full((2, 4), -1))
    loss.backward()

    assert loss.item() == 0.0
    assert torch.isfinite(scores.grad).all()


def test_deepclusterv2_loss_averages_over_assigned_targets_only():
    from solo.methods.deepclusterv2 import deepclusterv2_loss_func

    scores = _prototype_scores()
    assignments = torch.tensor([[0, -1, 2, -1], [-1, -1, -1, 1]])
    expected = []
    for layer_scores, labels in zip(scores, assignments):
        labels = labels.repeat(2)  # the same k-means label for both views
        rows = layer_scores.reshape(-1, 3)[labels != -1] / 0.1
        expected.append(F.cross_entropy(rows, labels[labels != -1]))

    loss = deepclusterv2_loss_func(scores, assignments, temperature=0.1)

    torch.testing.assert_close(loss, torch.stack(expected).mean())


# --- offdiagonal_mask ----------------------------------------------------------------

def _autograd_ops(tensor: torch.Tensor) -> set:
    """Names of the backward nodes that produced ``tensor``."""
    seen, stack, names = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def _projections(d: int = 32) -> tuple:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(8, d, generator=generator, requires_grad=True) for _ in range(2))


def _barlow_reference(z1, z2, lamb, scale):
    z1, z2 = (((z - z.mean(0)) / z.var(0, unbiased=False).add(1e-5).sqrt()).double() for z in (z1, z2))
    corr = z1.T @ z2 / z1.shape[0]
    diagonal = torch.diagonal(corr)
    return scale * ((diagonal - 1).pow(2).sum() + lamb * (corr.pow(2).sum() - diagonal.pow(2).sum()))


def _off_diagonal_covariance_reference(z1, z2):
    total = 0.0
    for z in (z1.double(), z2.double()):
        cov = torch.cov(z.T)
        total = total + (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / z.shape[1]
    return total


@pytest.mark.parametrize("module", ["solo.losses.barlow", "solo.methods.barlow_twins", "solo.losses"])
def test_barlow_loss_has_no_boolean_indexing_and_keeps_its_value(module):
    loss_func = importlib.import_module(module).barlow_loss_func
    z1, z2 = _projections()

    loss = loss_func(z1, z2, lamb=0.1, scale_loss=0.5)

    # a boolean index shows up as IndexBackward0 / IndexPutBackward0 (and a host sync on GPUs)
    assert not {name for name in _autograd_ops(loss) if name.startswith("Index")}, _autograd_ops(loss)
    torch.testing.assert_close(loss.double(), _barlow_reference(z1, z2, 0.1, 0.5), rtol=1e-5, atol=1e-6)


def test_vicreg_covariance_loss_has_no_boolean_indexing_and_keeps_its_value():
    from solo.losses.vicreg import covariance_loss, vicreg_loss_func

    z1, z2 = _projections()

    loss = covariance_loss(z1, z2)
    total = vicreg_loss_func(z1, z2)  # looks covariance_loss up in its module

    assert not {name for name in _autograd_ops(total) if name.startswith("Index")}, _autograd_ops(total)
    torch.testing.assert_close(loss.double(), _off_diagonal_covariance_reference(z1, z2), rtol=1e-5, atol=1e-6)


# --- topk_few_classes ----------------------------------------------------------------


def test_linear_model_trains_on_three_classes():
    model = _linear_model(num_classes=3)
    before = model.classifier.weight.detach().clone()
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, _labelled_loader(num_classes=3, batch_size=8))

    assert trainer.global_step == 1
    assert not torch.equal(before, model.classifier.weight)
    # "top-5" is capped at the 3 classes, which always contain the label
    assert float(trainer.callback_metrics["train_acc5"]) == 100.0


# --- lars_closure --------------------------------------------------------------------


class _LarsToy(pl.LightningModule):
    """One (8, 8) weight ``w`` and the loss ``scale * sum(w * x)``: its gradient is
    ``scale * x`` whatever ``w`` is. SGD without momentum inside solo's LARSWrapper."""

    def __init__(self, scale: float, lr: float, eta: float, weight_decay: float):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))
        self.scale, self.lr, self.eta, self.weight_decay = scale, lr, eta, weight_decay
        self.steps = []  # (w before the step, gradient of the step)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        self.steps.append((self.w.detach().clone(), self.scale * x[0]))
        return self.scale * (self.w * x[0]).sum()

    def configure_optimizers(self):
        from solo.utils.lars import LARSWrapper

        sgd = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0,
                              weight_decay=self.weight_decay)
        return LARSWrapper(sgd, eta=self.eta, clip=False)


def _train_lars_toy(**kwargs):
    """Three Lightning steps (Lightning passes a closure); returns [(w, g, w after)]."""
    model = _LarsToy(**kwargs)
    x = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    trainer = _trainer(max_epochs=1)
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=1))
    assert trainer.global_step == 3
    after = [w for w, _ in model.steps[1:]] + [model.w.detach().clone()]
    return [(w, g, w_next) for (w, g), w_next in zip(model.steps, after)]


def _lars_update(w, g, lr, eta, weight_decay, eps=1e-8):
    """w after one LARS step: lr * trust * (g + wd w), trust = eta |w| / (|g| + wd |w| + eps)."""
    trust = eta * w.norm() / (g.norm() + weight_decay * w.norm() + eps)
    return w - lr * trust * (g + weight_decay * w)


def test_lars_bounds_each_step_whatever_the_gradient_scale():
    settings = dict(lr=0.1, eta=1e-3, weight_decay=0.0)
    for w, g, w_next in _train_lars_toy(scale=1e4, **settings):
        # plain SGD would move w by lr * |g|, about 8000 times |w| here
        assert float((w_next - w).norm() / w.norm()) == pytest.approx(0.1 * 1e-3, rel=1e-3)
        torch.testing.assert_close(w_next, _lars_update(w, g, **settings), rtol=1e-5, atol=1e-7)


def test_lars_applies_weight_decay():
    settings = dict(lr=1.0, eta=0.02, weight_decay=0.5)
    # a gradient tiny next to wd * w: the step is the weight decay, shrinking w by lr * eta
    for w, g, w_next in _train_lars_toy(scale=1e-6, **settings):
        assert float(w_next.norm() / w.norm()) == pytest.approx(1 - 1.0 * 0.02, rel=1e-4)
        torch.testing.assert_close(w_next, _lars_update(w, g, **settings), rtol=1e-5, atol=1e-7)


# --- the registry, on synthetic patches ----------------------------------------------


def _throwaway_target():
    """Stands in for an upstream function."""
    return "upstream"


def _changed_target():
    """The same function after an upstream release changed it."""
    return "upstream, changed"


@pytest.fixture
def synthetic(monkeypatch):
    """``synthetic(upstream, apply=None) -> Patch`` in an otherwise empty registry, with
    targets in a throwaway module ``unmix_throwaway`` holding ``func``."""
    monkeypatch.setattr(_core, "PATCHES", [])
    monkeypatch.delenv(_core.SKIP_ENV, raising=False)
    module = types.ModuleType("unmix_throwaway")
    module.func = _throwaway_target
    monkeypatch.setitem(sys.modules, module.__name__, module)

    def make(upstream, apply=None):
        calls = []
        patch = _core.register(_core.Patch(
            name="synthetic", summary="a test patch", upstream=upstream,
            apply=apply or (lambda: calls.append(1))))
        patch.calls, patch.module = calls, module
        return patch

    return make


SHA = _core.source_sha256(_throwaway_target)


def test_synthetic_patch_applies_once(synthetic):
    patch = synthetic({"unmix_throwaway:func": SHA})

    _core.ensure_applied()
    _core.apply_all()

    assert patch.status is PatchStatus.APPLIED and patch.calls == [1]


def test_changed_upstream_fails_with_a_one_line_reinstall_error(synthetic, capsys):
    from unmix_ext.patches.__main__ import main

    patch = synthetic({"unmix_throwaway:func": SHA})
    patch.module.func = _changed_target

    with pytest.raises(PatchError) as err:
        _core.ensure_applied()

    assert patch.status is PatchStatus.FAILED and patch.calls == []
    message = str(err.value)
    assert "\n" not in message
    assert "'synthetic'" in message and _core.REINSTALL_HINT in message
    assert main() == 1
    assert "synthetic  failed" in capsys.readouterr().out


@pytest.mark.parametrize("upstream, status", [
    ({"unmix_throwaway:gone": SHA, "unmix_no_such_module:func": SHA}, PatchStatus.NOT_NEEDED),
    ({"unmix_throwaway:func": SHA, "unmix_throwaway:gone": SHA}, PatchStatus.FAILED),
], ids=["all-absent", "some-absent"])
def test_absent_targets(synthetic, upstream, status):
    patch = synthetic(upstream)

    _core.apply_all()

    assert patch.status is status and patch.calls == []


def test_apply_that_raises_is_reported_failed(synthetic):
    def apply():
        raise AttributeError("no such attribute")

    patch = synthetic({"unmix_throwaway:func": SHA}, apply=apply)

    with pytest.raises(PatchError, match="AttributeError: no such attribute"):
        _core.ensure_applied()
    assert patch.status is PatchStatus.FAILED


@pytest.mark.parametrize("value", ["synthetic", " all ", "other,synthetic"])
def test_skip_variable_leaves_patches_unapplied(synthetic, monkeypatch, capsys, value):
    from unmix_ext.patches.__main__ import main

    patch = synthetic({"unmix_throwaway:func": SHA})
    _core.register(_core.Patch(name="other", summary="", upstream={}, apply=lambda: None))
    monkeypatch.setenv(_core.SKIP_ENV, value)

    _core.ensure_applied()  # skipped is not failed

    assert patch.status is PatchStatus.SKIPPED and patch.calls == []
    assert main() == 0
    assert "synthetic  skipped" in capsys.readouterr().out


def test_skip_variable_with_an_unknown_name_lists_the_known_ones(synthetic, monkeypatch):
    synthetic({"unmix_throwaway:func": SHA})
    monkeypatch.setenv(_core.SKIP_ENV, "synthetic,lars")

    with pytest.raises(ValueError) as err:
        _core.apply_all()

    assert str(err.value) == (
        "UNMIX_EXT_SKIP_PATCHES: unknown patch name(s) 'lars'; known: all, synthetic")


# --- the real registry, in fresh interpreters ----------------------------------------


def _python(*args: str, cwd, pythonpath=None) -> str:
    """stdout of this venv's python run on ``args`` in a fresh interpreter, all patches on."""
    env = {k: v for k, v in os.environ.items() if k != _core.SKIP_ENV}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    result = subprocess.run([sys.executable, "-W", "ignore", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_cli_lists_every_patch_as_applied(tmp_path):
    out = _python("-m", "unmix_ext.patches", cwd=tmp_path)

    statuses = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert statuses == {p.name: "applied" for p in PATCHES}


def _copy_installed_solo(destination) -> None:
    """Copies solo-learn's files as its wheel installed them (RECORD hashes checked)."""
    for file in importlib.metadata.distribution("solo-learn").files:
        if file.parts[0] != "solo" or file.hash is None:  # no bytecode: a fresh install
            continue
        data = file.locate().read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert digest == file.hash.value, f"site-packages/{file} was edited: reinstall solo-learn"
        target = destination / str(file)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def test_a_fresh_solo_install_is_patched_on_import(tmp_path):
    _copy_installed_solo(tmp_path / "fresh")
    code = textwrap.dedent(f"""
        import unmix_ext.methods, solo, solo.methods
        from unmix_ext.patches import patch_statuses
        assert solo.__file__.startswith({str(tmp_path / "fresh")!r}), solo.__file__
        statuses = {{name: status.value for name, status in patch_statuses().items()}}
        assert set(statuses.values()) == {{"applied"}}, statuses
    """)
    _python("-c", code, cwd=tmp_path, pythonpath=tmp_path / "fresh")


def test_importing_solo_first_still_runs_patched_code(tmp_path):
    code = textwrap.dedent("""
        import sys, types
        from torch.optim.lr_scheduler import LRScheduler

        class StandIn(LRScheduler):
            pass

        # as if a working lightning-bolts were installed
        for name in ("pl_bolts", "pl_bolts.optimizers", "pl_bolts.optimizers.lr_scheduler"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["pl_bolts.optimizers.lr_scheduler"].LinearWarmupCosineAnnealingLR = StandIn

        import solo.methods
        import solo.methods.deepclusterv2 as deepclusterv2
        from solo.losses.dino import DINOLoss
        from solo.methods import DINO, LinearModel
        from solo.methods.base import BaseMethod, BaseMomentumMethod
        from solo.utils.lars import LARSWrapper

        import unmix_ext.methods  # noqa: F401
        from unmix_ext.patches import deepclusterv2_empty_targets, lars_closure, patch_statuses

        statuses = {name: status.value for name, status in patch_statuses().items()}
        assert statuses.pop("pl_bolts_scheduler") == "not needed", statuses
        assert set(statuses.values()) == {"applied"}, statuses
        assert solo.methods.base.LinearWarmupCosineAnnealingLR is StandIn
        for cls in (BaseMethod, BaseMomentumMethod, LinearModel):
            assert not hasattr(cls, "validation_epoch_end"), cls
        assert LARSWrapper.step is lars_closure.step
        assert deepclusterv2.deepclusterv2_loss_func is (
            deepclusterv2_empty_targets.deepclusterv2_loss_func)
        assert hasattr(DINO, "clip_encoder_gradients")
        assert len(DINOLoss(4, 0.04, 0.07, 50, 2).teacher_temp_schedule) == 2
    """)
    _python("-c", code, cwd=tmp_path)


# --- static_lr_pickle ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["simsiam", "nnsiam"])
def test_static_lr_scheduler_state_pickles_and_keeps_the_predictor_lr(build_method, name):
    import io
    import pickle

    model = _small(build_method, name, lars=True, scheduler="warmup_cosine", warmup_epochs=1,
                   max_epochs=4, lr=0.5, warmup_start_lr=0.01)
    (optimizer,), (scheduler,) = model.configure_optimizers()

    pickle.dump(scheduler.state_dict(), io.BytesIO())  # what a Lightning checkpoint holds
    predictor = [i for i, g in enumerate(optimizer.param_groups)
                 if any(p is q for p in g["params"] for q in model.predictor.parameters())]
    for _ in range(3):
        scheduler.step()
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert all(lrs[i] == pytest.approx(0.5) for i in predictor)  # fixed at the base lr
    assert lrs[0] != pytest.approx(0.5)  # the encoder follows the schedule


# --- momentum_tau_resume -------------------------------------------------------------

def test_momentum_tau_resume_recomputes_tau_for_the_restart_step():
    import math
    import types

    from solo.methods.base import BaseMomentumMethod
    from solo.utils.momentum import MomentumUpdater

    trainer = types.SimpleNamespace(global_step=5, accumulate_grad_batches=1,
                                    train_dataloader=[None] * 5, max_epochs=2)
    method = types.SimpleNamespace(momentum_updater=MomentumUpdater(base_tau=0.99, final_tau=1.0),
                                   trainer=trainer)

    BaseMomentumMethod.on_train_start(method)

    # half way through the cosine schedule: (0.99 + 1.0) / 2, not base_tau
    assert method.last_step == 0
    assert method.momentum_updater.cur_tau == pytest.approx(
        1.0 - 0.01 * (math.cos(math.pi * 5 / 10) + 1) / 2)


def test_a_swav_checkpoint_of_two_processes_fits_the_resume_check(build_method, tmp_path):
    # two processes each keep half the queue: the checkpoint's queue is (2, 8, D) for queue_size 16
    from unmix_ext.runner.trainer import check_resumable

    model = _small(build_method, "swav", queue_size=16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["queue"] = torch.randn(2, 8, model.proj_output_dim)
    path = tmp_path / "swav.ckpt"
    torch.save({"state_dict": state, "epoch": 1, "global_step": 2}, path)

    check_resumable(path, model, "swav")

    assert model.queue.shape == (2, 8, model.proj_output_dim)


# --- unlabelled_batches ---------------------------------------------------------------


def test_online_classifier_loss_is_zero_on_a_batch_without_labels_and_unchanged_with_labels():
    from types import SimpleNamespace

    from solo.methods.base import BaseMethod

    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    owner = SimpleNamespace(base_forward=lambda images: {"logits": logits, "feats": images})

    unlabelled = BaseMethod._base_shared_step(owner, torch.zeros(4, 2), torch.full((4,), -1))
    unlabelled["loss"].backward()
    partly = BaseMethod._base_shared_step(owner, torch.zeros(4, 2), torch.tensor([0, -1, 2, 1]))

    assert unlabelled["loss"].item() == 0.0 and torch.isfinite(logits.grad).all()
    labelled = torch.tensor([0, 2, 1])
    torch.testing.assert_close(partly["loss"], F.cross_entropy(logits[[0, 2, 3]], labelled))
