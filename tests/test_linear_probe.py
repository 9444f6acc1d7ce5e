"""The linear probe's solo-learn main options (``eval.linear.finetune``, ``mixup``, ``cutmix``,
``label_smoothing``): what each changes in training, how the linear YAML reaches them, and their one-line errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unmix_ext.runner.config import ConfigError, LinearEval, config_from_dict
from unmix_ext.runner.linear import LinearProbe, training_loss
from unmix_ext.tools.solo_eval import linear_recipe

CLASSES = 3


class TinyBackbone(nn.Sequential):
    """(B, 3, 8, 8) -> (B, 4) features, with BatchNorm (train mode would move its statistics)."""

    num_features = 4

    def __init__(self):
        super().__init__(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _probe(scheduler: str = "cosine", **options) -> LinearProbe:
    lin = LinearEval(**{key: value for key, value in options.items() if key != "finetune"})
    mixup, loss = training_loss(lin, CLASSES)
    return LinearProbe(backbone=TinyBackbone(), num_classes=CLASSES, max_epochs=2, batch_size=6, optimizer="sgd",
                       lars=False, lr=0.5, weight_decay=0.0, exclude_bias_n_norm=False,
                       extra_optimizer_args={"momentum": 0.9}, scheduler=scheduler, lr_decay_steps=[1],
                       finetune=options.get("finetune", False), mixup=mixup, loss=loss)


def _batch(size: int = 6):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(size, 3, 8, 8, generator=generator), torch.arange(size) % CLASSES


def _train_steps(probe: LinearProbe, steps: int = 2) -> None:
    optimizers, schedulers = probe.configure_optimizers()
    with warnings.catch_warnings():  # stepped before the optimizer, on purpose
        warnings.simplefilter("ignore")
        schedulers[0].step()  # epoch 1 (warmup_cosine's epoch 0 has lr 0)
    lrs = [group["lr"] for group in optimizers[0].param_groups]
    assert lrs[0] > 0 and lrs == [lrs[0]] * len(lrs)  # the scheduler moves every group alike
    probe.train()
    for _ in range(steps):
        optimizers[0].zero_grad()
        probe.training_step(_batch(), 0).backward()
        optimizers[0].step()


@pytest.mark.filterwarnings("ignore:.*self.log.*")
@pytest.mark.parametrize("scheduler", ["cosine", "step", "warmup_cosine"])
def test_finetune_trains_the_backbone_and_the_default_leaves_it_bit_identical(scheduler):
    torch.manual_seed(0)
    for finetune in (False, True):
        probe = _probe(scheduler, finetune=finetune)
        before = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
        classifier = probe.classifier.weight.clone()
        _train_steps(probe)
        after = probe.backbone.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert not torch.equal(classifier, probe.classifier.weight)
        if finetune:  # the conv's weights (optimizer), the BatchNorm statistics (train mode)
            assert {"0.weight", "1.weight", "1.running_mean"} <= set(changed)
            assert all(p.requires_grad for p in probe.backbone.parameters())
        else:
            assert changed == [] and not any(p.requires_grad for p in probe.backbone.parameters())


def test_finetune_puts_the_backbone_in_the_optimizer_with_the_classifiers_lr():
    for scheduler in ("cosine", "none"):
        configured = _probe(scheduler, finetune=True).configure_optimizers()
        optimizer = configured if isinstance(configured, torch.optim.Optimizer) else configured[0][0]
        assert len(optimizer.param_groups) == 2
        assert optimizer.param_groups[1]["lr"] == optimizer.param_groups[0]["lr"]
        assert optimizer.param_groups[1]["momentum"] == 0.9
    assert len(_probe("cosine").configure_optimizers()[0][0].param_groups) == 1


def test_label_smoothing_is_the_closed_form_of_smoothed_cross_entropy():
    logits, targets = torch.randn(5, CLASSES, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0, 1])
    mixup, loss = training_loss(LinearEval(label_smoothing=0.2), CLASSES)
    log_p = F.log_softmax(logits, dim=-1)
    expected = 0.8 * F.cross_entropy(logits, targets) + 0.2 * (-log_p.mean(dim=-1)).mean()
    assert mixup is None
    assert loss(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss(logits, targets).item() != pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-3)
    plain = training_loss(LinearEval(), CLASSES)[1]
    assert plain(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item())


@pytest.mark.filterwarnings("ignore:.*self.log.*")
@pytest.mark.parametrize("options", [{"mixup": 0.8}, {"cutmix": 1.0}, {"mixup": 0.8, "label_smoothing": 0.1}])
def test_mixup_and_cutmix_train_on_timms_soft_targets(options):
    from timm.data.mixup import Mixup
    from timm.loss import SoftTargetCrossEntropy

    probe = _probe(**options)
    assert isinstance(probe.mixup, Mixup) and isinstance(probe.loss, SoftTargetCrossEntropy)
    seen = []

    class Recorded(SoftTargetCrossEntropy):
        def forward(self, logits, targets):
            seen.append(targets)
            return super().forward(logits, targets)

    probe.loss = Recorded()
    torch.manual_seed(0)
    probe.train()
    for size in (6, 5):  # an odd last batch: timm pairs images, so one is left out
        assert torch.isfinite(probe.training_step(_batch(size), 0))
    assert [t.shape for t in seen] == [(6, CLASSES), (4, CLASSES)]
    for targets in seen:  # soft: rows are distributions, not one-hot
        assert torch.allclose(targets.sum(dim=1), torch.ones(len(targets)))
        assert ((targets > 0) & (targets < 1)).any()


def test_the_linear_yaml_keys_reach_the_recipe_and_bad_values_are_one_line():
    raw = {"pretrain_method": "byol", "data": {"dataset": "cifar10"}, "finetune": True, "mixup": 0.8, "cutmix": 1.0,
           "label_smoothing": 0.1}
    lin = config_from_dict(linear_recipe(raw)).eval.linear
    assert (lin.finetune, lin.mixup, lin.cutmix, lin.label_smoothing) == (True, 0.8, 1.0, 0.1)
    default = config_from_dict(linear_recipe({"data": {"dataset": "cifar10"}})).eval.linear
    assert (default.finetune, default.mixup, default.cutmix, default.label_smoothing) == (False, 0.0, 0.0, 0.0)
    for key, value, expected in (("mixup", -0.1, "must be >= 0"), ("cutmix", -1.0, "must be >= 0"),
                                 ("label_smoothing", 1.0, "must be below 1"), ("label_smoothing", -0.1, "must be >= 0")):
        with pytest.raises(ConfigError, match=rf"^eval\.linear\.{key}: {expected}"):
            config_from_dict(linear_recipe({**raw, key: value}))


def test_a_recipe_that_leaves_the_options_alone_keeps_its_hash_and_run_directory():
    import hashlib
    import json

    from unmix_ext.runner.config import RUN_CONTROL_KEYS, UNUSED_KEYS, config_hash, config_to_dict

    recipe = {"method": "simclr", "data": {"dataset": "cifar10"}}
    cfg = config_from_dict(recipe)
    before = {key: value for key, value in config_to_dict(cfg).items() if key not in (*RUN_CONTROL_KEYS, *UNUSED_KEYS)}
    for key in ("finetune", "mixup", "cutmix", "label_smoothing"):  # the schema before it took them
        del before["eval"]["linear"][key]
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    for key, value in (("finetune", True), ("mixup", 0.8), ("cutmix", 1.0), ("label_smoothing", 0.1)):
        assert config_hash(config_from_dict({**recipe, "eval": {"linear": {key: value}}})) != config_hash(cfg)
