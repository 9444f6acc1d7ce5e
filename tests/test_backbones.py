"""timm encoders (``encoder="timm/<model>"``): every method trains on one, and its export rebuilds it."""
from __future__ import annotations

import json

import pytest
import torch

from unmix_ext.backbones import CHECKPOINT_ENTRY, build_timm_encoder
from unmix_ext.tools.export import backbone_from_export, export

# two timm families: a narrow ResNet-18 with solo's CIFAR stem (narrowed too: the momentum encoder and
# the export must rebuild it so), and a ConvNeXt
TIMM_CASES = [
    ("byol_unmix", "timm/resnet18", {"cifar": True, "stem_width": 16, "channels": [16, 32, 64, 128]}),
    ("simclr_unmix", "timm/convnext_atto", {"cifar": False}),
]


@pytest.mark.parametrize("name, encoder, backbone_args", TIMM_CASES)
def test_timm_encoder_trains_with_unmix_and_exports(name, encoder, backbone_args, build_method,
                                                    fit_two_steps, tmp_path):
    model = build_method(name, encoder=encoder, backbone_args=backbone_args)
    assert model.features_dim == model.encoder.num_features
    before = [p.detach().clone() for p in model.encoder.parameters()]

    losses, trainer = fit_two_steps(model)
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)

    assert trainer.global_step == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))
    assert torch.load(checkpoint, weights_only=True)[CHECKPOINT_ENTRY]["name"] == encoder
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    encoders = {"online": model.encoder}
    if hasattr(model, "momentum_encoder"):
        encoders["momentum"] = model.momentum_encoder
    for which, trained in encoders.items():
        out = export(checkpoint, "timm", tmp_path / f"{which}.pth", which=which)
        info = json.loads((tmp_path / f"{which}.pth.json").read_text())
        assert info["timm_name"] == encoder.split("/", 1)[1]
        assert info["cifar_stem"] == backbone_args["cifar"]
        rebuilt = backbone_from_export(out).eval()
        torch.testing.assert_close(rebuilt(x), trained.eval()(x))


def test_cifar_stem_keeps_a_resnets_resolution():
    small = build_timm_encoder("timm/resnet18", cifar=True, channels=[16, 32, 64, 128])
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    standard = build_timm_encoder("timm/resnet18", channels=[16, 32, 64, 128])
    maps = {}
    for label, model in (("cifar", small), ("standard", standard)):
        model.layer4.register_forward_hook(lambda m, i, o, label=label: maps.__setitem__(label, o.shape[-1]))
        model.eval()(torch.randn(1, 3, 32, 32))
    assert maps == {"cifar": 5, "standard": 1}  # 34 px after solo's padding-2 stem, /8 by the stages


def test_stride_two_cifar_stem_halves_the_side_without_max_pool():
    model = build_timm_encoder("timm/resnet18", cifar=True, stem_stride=2, channels=[16, 32, 64, 128])
    assert model.conv1.stride == (2, 2) and isinstance(model.maxpool, torch.nn.Identity)
    sides = []
    model.layer1.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    model.eval()(torch.randn(1, 3, 28, 28))
    assert sides == [14]  # the standard stem gives 7, solo's stride-1 stem 30


@pytest.mark.parametrize("channels, projected", [(16, False), (32, True)])
def test_cifar_stem_width_narrows_the_stem_and_feeds_the_first_block(channels, projected):
    model = build_timm_encoder("timm/resnet18", cifar=True, stem_width=channels, channels=[16, 32, 64, 128],
                               layers=[1, 1, 1, 1])
    first = model.layer1[0]
    assert model.conv1.out_channels == model.bn1.num_features == first.conv1.in_channels == channels
    # a projection only where the stem's channels differ from the block's output (16)
    assert (first.downsample is not None) == projected
    if projected:
        assert first.downsample[0].in_channels == channels and first.downsample[0].out_channels == 16
    assert model.eval()(torch.randn(2, 3, 28, 28)).shape == (2, 128)
    default = build_timm_encoder("timm/resnet18", cifar=True, channels=[16, 32, 64, 128], layers=[1, 1, 1, 1])
    assert default.conv1.out_channels == 64  # timm's plain stem, as before
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in default.parameters())


def test_cifar_stem_width_feeds_a_bottleneck():
    model = build_timm_encoder("timm/resnet50", cifar=True, stem_width=32)
    assert model.layer1[0].conv1.in_channels == model.layer1[0].downsample[0].in_channels == 32
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


@pytest.mark.parametrize("encoder, kwargs, message", [
    ("timm/resnet19", {}, r"encoder: 'timm/resnet19' is not a timm model; did you mean timm/resnet1"),
    ("timm/convnext_atto", {"cifar": True}, r"cifar: the CIFAR stem replaces a ResNet's conv1 and maxpool"),
    ("timm/resnet18", {"stem_stride": 2}, r"stem_stride: 1 or 2, and 2 with cifar: true only"),
    ("timm/resnet18", {"stem_width": 16}, r"stem_width: timm's plain stem is 64 channels whatever it says"),
    ("timm/resnet18", {"cifar": True, "stem_width": 0}, r"stem_width: a number of channels >= 1, got 0"),
])
def test_bad_timm_encoders_are_one_line(encoder, kwargs, message):
    with pytest.raises(ValueError, match=message) as err:
        build_timm_encoder(encoder, **kwargs)
    assert "\n" not in str(err.value)


def test_solo_encoders_are_built_as_before(build_method):
    model = build_method("simclr")
    assert model.encoder_name == "resnet18" and not hasattr(model, "timm_encoder")
    assert model.encoder.conv1.padding == (2, 2)  # solo's own CIFAR stem


@pytest.mark.parametrize("override, message", [
    ("backbone.kwargs.foo=1", r"^backbone\.kwargs\.foo: timm/resnet18 does not take it \(ResNet\.__init__\(\) got an "),
    ("backbone.kwargs.stem_stride=3", r"^backbone\.kwargs\.stem_stride: 1 or 2, and 2 with cifar: true only"),
    ("backbone.kwargs.stem_width=0", r"^backbone\.kwargs\.stem_width: a number of channels >= 1, got 0"),
])
def test_timm_backbone_kwargs_are_refused_when_the_recipe_loads(override, message):
    from unmix_ext.recipes import ROOT
    from unmix_ext.runner.config import ConfigError
    from unmix_ext.runner.recipe import load_recipe

    with pytest.raises(ConfigError, match=message) as err:
        load_recipe(ROOT / "demo" / "simclr.yaml", [override])  # a timm/resnet18 recipe
    assert "\n" not in str(err.value)


def test_stem_width_reaches_timms_own_deep_stem():
    model = build_timm_encoder("timm/resnet18", stem_type="deep", stem_width=16)
    assert model.conv1[0].out_channels == 16  # timm's deep stem: 16, 16, then 32 channels
