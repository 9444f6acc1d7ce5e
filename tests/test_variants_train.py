"""All 16 Un-Mix entries (15 ``_unmix`` variants and ``mocov2``) train on CPU with Lightning."""
import math

import pytest
import torch

UNMIX_ENTRIES = (
    "mocov2", "mocov2_unmix", "barlow_twins_unmix", "byol_unmix", "deepclusterv2_unmix",
    "dino_unmix", "mocov2plus_unmix", "nnbyol_unmix", "nnclr_unmix", "nnsiam_unmix",
    "ressl_unmix", "simclr_unmix", "simsiam_unmix", "swav_unmix", "vicreg_unmix", "wmse_unmix",
)


def test_import_registers_a_variant_for_every_solo_method():
    from solo.methods import METHODS

    solo_ssl = {"barlow_twins", "byol", "deepclusterv2", "dino", "mocov2plus", "nnbyol", "nnclr",
                "nnsiam", "ressl", "simclr", "simsiam", "swav", "vicreg", "wmse", "mocov2"}
    assert {f"{name}_unmix" for name in solo_ssl} | {"mocov2"} == set(UNMIX_ENTRIES)
    for name in solo_ssl:
        assert issubclass(METHODS[f"{name}_unmix"], METHODS[name])
        assert METHODS[f"{name}_unmix"].registry_name == f"{name}_unmix"


@pytest.mark.parametrize("name", UNMIX_ENTRIES)
def test_entry_trains_two_steps(name, build_method, fit_two_steps):
    model = build_method(name)
    before = [p.detach().clone() for p in model.encoder.parameters()]

    losses, trainer = fit_two_steps(model)

    assert trainer.global_step == 2
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses), losses
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
    if name.endswith("_unmix"):
        logged = trainer.callback_metrics
        assert {"unmix/lam", "unmix/global", "unmix/base_loss", "unmix/mix_loss"} <= set(logged)
        assert 0.0 <= float(logged["unmix/lam"]) <= 1.0
        assert math.isfinite(float(logged["unmix/mix_loss"]))
