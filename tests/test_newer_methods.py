"""MoCo V3, VIbCReg, SupCon, All4One and MAE: what solo-learn main does that the loss tests do not show.

Their losses and their variants' mixture losses are checked term by term in
test_variants_loss.py, the extra online pass in test_variants_rules.py; here: MoCo V3's
heads and schedules, IterNorm, where labels reach a loss, All4One's sequence code, MAE's
masking and loss, and solo-learn main's pretraining YAMLs for the five, built at smoke scale.
"""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from unmix_ext.methods import mocov3 as mocov3_module
from unmix_ext.methods.all4one import sequence_code
from unmix_ext.methods.mae import mae_loss, masked_encode, patchify
from unmix_ext.methods.vibcreg import IterNorm
from unmix_ext.runner.builder import build_method as build_recipe_method
from unmix_ext.runner.builder import ssl_methods
from unmix_ext.runner.config import ConfigError, load_config
from unmix_ext.runner.smoke import SMOKE_VIT, effective

N = 8


def two_views(n=N, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.arange(n), [torch.randn(n, 3, size, size, generator=g) for _ in range(2)], torch.arange(n) % 4]


def logged_step(model, batch):
    """(loss, logs) of one training_step outside a Trainer."""
    logs = {}
    model.log = lambda name, value, *a, **k: logs.__setitem__(name, float(value))
    model.log_dict = lambda metrics, *a, **k: logs.update({n: float(v) for n, v in metrics.items()})
    with torch.no_grad():
        loss = model.training_step(batch, 0)
    return float(loss), logs


# ---- MoCo V3 --------------------------------------------------------------------------------
def layers(module, kind):
    return [m for m in module.modules() if isinstance(m, kind)]


def test_mocov3_heads_follow_the_encoder_as_in_solo_learn_main(build_method):
    resnet = build_method("mocov3")
    assert len(layers(resnet.projector, torch.nn.Linear)) == 2
    assert isinstance(resnet.projector[-1], torch.nn.BatchNorm1d) and not resnet.projector[-1].affine
    assert isinstance(resnet.predictor[-1], torch.nn.Linear)  # no BatchNorm after the predictor
    assert resnet.encoder.fc.__class__ is torch.nn.Identity

    vit = build_method("mocov3", encoder="timm/vit_tiny_patch16_224",
                       backbone_args={"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4})
    assert len(layers(vit.projector, torch.nn.Linear)) == 3
    assert isinstance(vit.predictor[-1], torch.nn.BatchNorm1d)
    # MoCo v3's ViT: a fixed 2-D sine-cosine position embedding, the same in both encoders
    pos = vit.encoder.pos_embed
    assert not pos.requires_grad and torch.equal(pos, vit.momentum_encoder.pos_embed)
    assert torch.equal(pos[0, 0], torch.zeros(64))  # the class token's row
    # patch (row 0, col 1), omega_0 = 1: [sin(1), ... | cos(1), ... | sin(0), ... | cos(0), ...] by quarters
    assert [float(pos[0, 2, i]) for i in (0, 16, 32, 48)] == pytest.approx([math.sin(1), math.cos(1), 0, 1])


def test_mocov3_momentum_follows_the_cosine_schedule_and_the_temperature_stays(build_method, fit_two_steps,
                                                                               monkeypatch):
    epochs, base_tau, final_tau = 4, 0.9, 1.0  # one batch an epoch: 4 optimizer steps
    model = build_method("mocov3", base_tau_momentum=base_tau, final_tau_momentum=final_tau, temperature=0.3)
    used_tau = []
    update = model.momentum_updater.update
    model.momentum_updater.update = lambda *pair: (used_tau.append(model.momentum_updater.cur_tau), update(*pair))
    temperatures = []
    loss_rows = mocov3_module.mocov3_loss_rows
    monkeypatch.setattr(mocov3_module, "mocov3_loss_rows",
                        lambda q, k, t: (temperatures.append(t), loss_rows(q, k, t))[1])

    fit_two_steps(model, max_epochs=epochs)

    # solo-learn main: after optimizer step s the EMA uses tau(s - 1), then tau(s) is computed, with
    # tau(t) = final - (final - base) * (cos(pi t / T) + 1) / 2 and T the run's optimizer steps
    def tau(t):
        return final_tau - (final_tau - base_tau) * (math.cos(math.pi * t / epochs) + 1) / 2

    per_step = used_tau[::2]  # two momentum pairs a step (encoder, projector), one tau
    assert used_tau[1::2] == per_step
    assert per_step == pytest.approx([tau(s) for s in range(epochs)])
    assert model.momentum_updater.cur_tau == pytest.approx(tau(epochs)) == final_tau
    # no temperature schedule in solo-learn main: every loss call of every step uses T
    assert len(temperatures) == 2 * epochs and set(temperatures) == {0.3}


# ---- VIbCReg's IterNorm -------------------------------------------------------------------------
def test_iternorm_whitens_each_group_and_evaluates_with_running_statistics():
    torch.manual_seed(0)
    # Newton's iterations converge in ~10 steps here (5 by default give a rougher whitening)
    layer = IterNorm(8, num_groups=2, iterations=10).double()
    mixing = torch.randn(8, 8, dtype=torch.float64) + 3 * torch.eye(8, dtype=torch.float64)
    x = torch.randn(512, 8, dtype=torch.float64) @ mixing + 5
    white = layer(x)
    for group in white.split(4, dim=1):  # 2 groups of 4 features: each has identity covariance
        centred = group - group.mean(0)
        torch.testing.assert_close(centred.T @ centred / len(x), torch.eye(4, dtype=torch.float64),
                                   atol=1e-4, rtol=0)  # eps on the diagonal leaves ~3e-6
    assert layer.groups == 2 and layer.channels == 4
    layer.momentum = 1.0
    layer(x)  # running statistics := this batch's
    layer.eval()
    torch.testing.assert_close(layer(x), white, atol=1e-8, rtol=0)


# ---- SupCon: labels ----------------------------------------------------------------------------
def test_supcon_with_one_class_per_image_is_simclr(build_method):
    from solo.losses.simclr import simclr_loss_func  # 1.0.2's NT-Xent: positive = the other view only

    model = build_method("supcon", num_classes=N)
    batch = two_views()
    batch[2] = torch.arange(N)
    _, logs = logged_step(model, batch)
    with torch.no_grad():
        z = [model.projector(model.encoder(v)) for v in batch[1]]
        expected = simclr_loss_func(z[0], z[1], temperature=model.temperature)
    assert logs["train_nce_loss"] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("name", ["supcon", "supcon_unmix", "mocov3_unmix", "vibcreg_unmix", "all4one_unmix"])
def test_labels_reach_the_loss_of_supcon_only(build_method, name):
    """Relabelling the classes (a permutation) changes nothing; merging classes changes SupCon's loss
    and SupCon's mixture loss only; every other loss ignores labels (the online classifier aside)."""
    def method_losses(labels):
        model = build_method(name, unmix_lam=0.3, unmix_prob=1.0) if name.endswith("_unmix") else build_method(name)
        if hasattr(model, "transformer_encoder"):
            model.transformer_encoder.eval()  # no dropout: two steps must be comparable
        batch = two_views()
        batch[2] = labels
        torch.manual_seed(0)
        loss, logs = logged_step(model, batch)
        method_loss = loss - logs["train_class_loss"] - logs.get("train_momentum_class_loss", 0.0)
        return [method_loss] + ([logs["unmix/mix_loss"]] if "unmix/mix_loss" in logs else [])

    labels = torch.arange(N) % 4
    renamed = (labels + 1) % 4
    merged = labels % 2
    assert method_losses(renamed) == pytest.approx(method_losses(labels), rel=1e-6)
    changed = [a != pytest.approx(b, rel=1e-4) for a, b in zip(method_losses(merged), method_losses(labels))]
    assert all(changed) if name.startswith("supcon") else not any(changed)


# ---- All4One --------------------------------------------------------------------------------
def test_all4one_sequence_code_is_solo_learn_mains_permuted_1d_code():
    # solo-learn main: PositionalEncodingPermute1D(5) on (N, 5, D) codes position d of the feature
    # axis over 6 channels (5 rounded up to even) sin, cos interleaved, and keeps channels 0..4
    dim = 12
    expected = torch.zeros(5, dim)
    for d in range(dim):
        for c in range(5):
            frequency = 1.0 / 10000 ** ((c // 2) * 2 / 6)
            expected[c, d] = math.sin(d * frequency) if c % 2 == 0 else math.cos(d * frequency)
    torch.testing.assert_close(sequence_code(5, dim), expected)


# ---- MAE ------------------------------------------------------------------------------------
def test_mae_masks_the_same_share_of_each_image_and_predicts_every_patch(build_method):
    model = build_method("mae", mask_ratio=0.75)
    images = two_views()[1][0]
    torch.manual_seed(0)
    tokens, mask, restore = masked_encode(model.encoder, images, model.mask_ratio)
    assert tokens.shape == (N, 1 + 4, 64)  # 16 patches of 8 px, a quarter kept, class token first
    assert mask.shape == (N, 16) and torch.equal(mask.sum(1), torch.full((N,), 12.0))
    assert torch.equal(restore.sort(dim=1).values, torch.arange(16).expand(N, -1))
    assert model.decoder(tokens, restore).shape == (N, 16, 8 * 8 * 3)
    assert not model.encoder.pos_embed.requires_grad


def test_mae_loss_is_the_mean_squared_error_on_masked_patches_only():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 8, 8, generator=g)
    pred = torch.randn(2, 4, 4 * 4 * 3, generator=g)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    # patch (row r, col c) of image i: pixels images[i, :, 4r:4r+4, 4c:4c+4] as (row, col, channel)
    total, count = 0.0, 0
    for i in range(2):
        for patch in range(4):
            r, c = divmod(patch, 2)
            pixels = images[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).reshape(-1)
            torch.testing.assert_close(patchify(images, 4)[i, patch], pixels)
            if mask[i, patch]:
                target = (pixels - pixels.mean()) / (pixels.var() + 1e-6).sqrt()
                total, count = total + ((pred[i, patch] - target) ** 2).mean(), count + 1
    assert float(mae_loss(images, pred, mask, 4, norm_pix_loss=True)) == pytest.approx(float(total / count))
    plain = sum(((pred[i, p] - patchify(images, 4)[i, p]) ** 2).mean() for i, p in [(0, 0), (0, 3), (1, 1)]) / 3
    assert float(mae_loss(images, pred, mask, 4, norm_pix_loss=False)) == pytest.approx(float(plain))


# ---- solo-learn main's YAMLs ------------------------------------------------------------------
def two_crops(size):
    return [{"crop_size": size, "num_crops": 2}]


# what solo-learn main's scripts/pretrain/{cifar,imagenet-100}/<name>.yaml set (their augmentation
# files reduced to the crops; the wandb group and Hydra keys left out)
SOLO_MAIN_YAMLS = {
    "cifar/mocov3": {
        "method": "mocov3", "backbone": {"name": "resnet18"},
        "method_kwargs": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096, "temperature": 0.2},
        "momentum": {"base_tau": 0.99, "final_tau": 1.0}, "data": {"dataset": "cifar10"},
        "optimizer": {"name": "lars", "batch_size": 256, "lr": 0.3, "classifier_lr": 0.3, "weight_decay": 1e-6,
                      "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}},
        "augmentations": two_crops(32), "max_epochs": 1000, "precision": "16-mixed",
    },
    "imagenet-100/mocov3_vit": {
        "method": "mocov3", "backbone": {"name": "vit_small"},
        "method_kwargs": {"proj_hidden_dim": 4096, "proj_output_dim": 256, "pred_hidden_dim": 4096, "temperature": 0.2},
        "momentum": {"base_tau": 0.99, "final_tau": 1.0}, "data": {"dataset": "imagenet100", "format": "dali"},
        "optimizer": {"name": "adamw", "batch_size": 128, "lr": 3.0e-4, "classifier_lr": 3.0e-4, "weight_decay": 0.1},
        "augmentations": two_crops(224), "max_epochs": 400, "devices": [0, 1, 2, 3, 4, 5, 6, 7],
    },
    "cifar/vibcreg": {
        "method": "vibcreg", "backbone": {"name": "resnet18"},
        "method_kwargs": {"proj_hidden_dim": 2048, "proj_output_dim": 2048, "sim_loss_weight": 25.0,
                          "var_loss_weight": 25.0, "cov_loss_weight": 200.0, "iternorm": True},
        "data": {"dataset": "cifar10"}, "augmentations": two_crops(32),
        "optimizer": {"name": "lars", "batch_size": 256, "lr": 0.3, "classifier_lr": 0.1, "weight_decay": 1e-4,
                      "kwargs": {"eta": 0.02, "exclude_bias_n_norm": True}},
    },
    "cifar/supcon": {
        "method": "supcon", "backbone": {"name": "resnet18"},
        "method_kwargs": {"proj_hidden_dim": 2048, "proj_output_dim": 256, "temperature": 0.2},
        "data": {"dataset": "cifar10"}, "augmentations": two_crops(32),
        "optimizer": {"name": "sgd", "batch_size": 256, "lr": 0.4, "classifier_lr": 0.1, "weight_decay": 1e-5},
    },
    "cifar/all4one": {
        "method": "all4one", "backbone": {"name": "resnet18"},
        "method_kwargs": {"temperature": 0.2, "proj_hidden_dim": 2048, "pred_hidden_dim": 4096,
                          "proj_output_dim": 256, "queue_size": 98304},
        "momentum": {"base_tau": 0.99, "final_tau": 1.0}, "data": {"dataset": "cifar100"},
        "augmentations": two_crops(32),
        "optimizer": {"name": "lars", "batch_size": 256, "lr": 1.0, "classifier_lr": 0.1, "weight_decay": 1e-5,
                      "kwargs": {"clip_lr": True, "eta": 0.02, "exclude_bias_n_norm": True}},
    },
    "cifar/mae": {
        "method": "mae", "backbone": {"name": "vit_small", "kwargs": {"patch_size": 4, "img_size": 32}},
        "method_kwargs": {"decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16,
                          "mask_ratio": 0.75, "norm_pix_loss": True},
        "data": {"dataset": "cifar10"}, "augmentations": [{"crop_size": 32, "num_crops": 1}],
        "optimizer": {"name": "adamw", "batch_size": 256, "lr": 2.0e-4, "classifier_lr": 2.0e-4,
                      "weight_decay": 0.05, "kwargs": {"betas": [0.9, 0.95]}},
    },
}
CASES = [(name, False) for name in SOLO_MAIN_YAMLS] + [(name, True) for name in SOLO_MAIN_YAMLS if "mae" not in name]


@pytest.mark.parametrize("name, unmix", CASES, ids=[f"{n}{'+unmix' * u}" for n, u in CASES])
def test_solo_main_yaml_builds_and_steps_at_smoke_scale(tmp_path, name, unmix):
    recipe = {**SOLO_MAIN_YAMLS[name], "scheduler": {"name": "warmup_cosine"}, "accelerator": "gpu",
              "strategy": "ddp", "sync_batchnorm": True}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cfg = load_config(path, [f"unmix.enabled={str(unmix).lower()}", "scale=smoke",
                             f"checkpoint.dir={tmp_path / 'runs'}"], ssl_methods())
    smoke = effective(cfg)
    vit = recipe["backbone"]["name"].startswith("vit")
    # a ViT stays a (tiny) ViT, and the change is on record
    assert (smoke.cfg.backbone.name == SMOKE_VIT) == vit
    assert ("backbone.name" in smoke.changes) == vit
    model = build_recipe_method(smoke.cfg, num_classes=10)
    assert type(model).registry_name == recipe["method"] + "_unmix" * unmix
    size = smoke.cfg.augmentations[0].crop_size
    batch = two_views(n=4, size=size)
    batch[1] = batch[1][: smoke.cfg.augmentations[0].num_crops]
    loss, logs = logged_step(model.train(), batch)
    assert math.isfinite(loss)
    assert ("unmix/mix_loss" in logs) == unmix


@pytest.mark.parametrize("overrides", [["method=mae_unmix"], ["unmix.enabled=true"]])
def test_unmix_on_mae_is_one_line_saying_why(tmp_path, overrides):
    path = tmp_path / "mae.yaml"
    path.write_text(yaml.safe_dump(SOLO_MAIN_YAMLS["cifar/mae"]))
    with pytest.raises(ConfigError, match="^method: mae has no Un-Mix variant.*reconstruction loss") as err:
        load_config(path, overrides, ssl_methods())
    assert "\n" not in str(err.value)
