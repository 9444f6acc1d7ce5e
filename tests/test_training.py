"""Every solo-learn 1.0.2 method and every Un-Mix entry trains on today's stack.

Two optimizer steps with ``pytorch_lightning.Trainer`` on CPU (CIFAR-stem ResNet-18,
small generated batches): finite losses, changed weights, validation metrics logged
through the patched hooks, and the Un-Mix step's logs for the variants.
"""
import math

import pytest
import torch

SOLO_METHODS = (
    "barlow_twins", "byol", "deepclusterv2", "dino", "mocov2plus", "nnbyol", "nnclr",
    "nnsiam", "ressl", "simclr", "simsiam", "swav", "vicreg", "wmse",
)
# the methods of newer solo-learn that 1.0.2 lacks (MAE on a tiny ViT, conftest's sizes)
NEWER_METHODS = ("all4one", "mae", "mocov3", "supcon", "vibcreg")
# MoCo v2 as published (the paper's Table 1 base) and a variant of each method but MAE
UNMIX_ENTRIES = ("mocov2",) + tuple(f"{name}_unmix" for name in SOLO_METHODS + ("mocov2",)
                                    + NEWER_METHODS if name != "mae")


def assert_two_steps_trained(trainer, losses, before, encoder):
    """Two optimizer steps, finite losses, and encoder weights that moved and stayed finite."""
    assert trainer.global_step == 2
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses
    after = list(encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(torch.isfinite(p).all() for p in after)


def test_import_registers_a_variant_for_every_solo_method():
    from solo.methods import METHODS

    assert set(SOLO_METHODS) | set(NEWER_METHODS) | set(UNMIX_ENTRIES) <= set(METHODS)
    assert len(UNMIX_ENTRIES) == 20 and "mae_unmix" not in METHODS
    for name in SOLO_METHODS + ("mocov2", "all4one", "mocov3", "supcon", "vibcreg"):
        variant = METHODS[f"{name}_unmix"]
        assert issubclass(variant, METHODS[name])
        assert variant.registry_name == f"{name}_unmix"


@pytest.mark.parametrize("name", SOLO_METHODS + NEWER_METHODS + UNMIX_ENTRIES)
def test_method_trains_two_steps(name, build_method, fit_two_steps):
    model = build_method(name)
    before = [p.detach().clone() for p in model.encoder.parameters()]

    losses, trainer = fit_two_steps(model)

    assert_two_steps_trained(trainer, losses, before, model.encoder)
    logged = trainer.callback_metrics
    assert {"val_acc1", "val_loss", "val_knn_acc1"} <= set(logged)
    if name.endswith("_unmix"):
        assert {"unmix/lam", "unmix/global", "unmix/base_loss", "unmix/mix_loss"} <= set(logged)
        assert 0.0 <= float(logged["unmix/lam"]) <= 1.0
        assert math.isfinite(float(logged["unmix/mix_loss"]))


def test_linear_model_trains_two_steps(labelled_loader):
    import pytorch_lightning as pl
    from solo.methods.linear import LinearModel
    from torchvision.models import resnet18

    backbone = resnet18()
    backbone.fc = torch.nn.Identity()
    model = LinearModel(
        backbone=backbone, num_classes=4, max_epochs=2, batch_size=8, optimizer="sgd",
        lars=False, lr=0.1, weight_decay=0.0, exclude_bias_n_norm=False,
        extra_optimizer_args={"momentum": 0.9}, scheduler="warmup_cosine",
    )
    frozen = [p.detach().clone() for p in backbone.parameters()]
    head = model.classifier.weight.detach().clone()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, labelled_loader, labelled_loader)

    assert trainer.global_step == 2
    assert not torch.equal(head, model.classifier.weight)
    assert all(torch.equal(a, b) for a, b in zip(frozen, backbone.parameters()))
    assert math.isfinite(float(trainer.callback_metrics["val_loss"]))


VIT_VARIANTS = ("simclr_unmix", "byol_unmix", "dino_unmix", "mocov2plus_unmix", "mocov3_unmix")


@pytest.mark.parametrize("name", VIT_VARIANTS)
def test_variant_trains_on_a_vit(name, build_method, fit_two_steps):
    # ViT-Tiny on 32 px images in 8 px patches: 16 tokens, no BatchNorm anywhere
    model = build_method(name, encoder="vit_tiny",
                         backbone_args={"cifar": False, "img_size": 32, "patch_size": 8})
    before = [p.detach().clone() for p in model.encoder.parameters()]
    training_passes = []
    model.encoder.register_forward_hook(
        lambda module, inputs, output: training_passes.append(module.training))

    losses, trainer = fit_two_steps(model)

    assert_two_steps_trained(trainer, losses, before, model.encoder)
    # two clean views and the mixture, once, per step (validation runs in eval mode)
    assert training_passes.count(True) == 2 * 3
    assert math.isfinite(float(trainer.callback_metrics["unmix/mix_loss"]))
