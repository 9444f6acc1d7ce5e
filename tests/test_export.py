"""unmix_ext.tools.export: torchvision / timm / detectron2 exports of a checkpoint's backbone, and its one-line errors."""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import unmix_ext.methods  # noqa: F401  (patches solo-learn before it is imported)
from unmix_ext.export import main
from unmix_ext.tools.export import EXPORT_ADVICE, backbone_from_export, export

BN_LEAVES = ("weight", "bias", "running_mean", "running_var")


def _randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Non-default BatchNorm statistics and affine weights, so that a lost or swapped norm changes the features."""
    g = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=g) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=g) * 0.1)
    return model.eval()


def _lightning_layout(path: Path, state_dict: dict, **extra) -> Path:
    """A file laid out as Lightning's Trainer.save_checkpoint writes one."""
    import pytorch_lightning as pl

    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": pl.__version__,
                "state_dict": state_dict, **extra}, path)
    return path


@pytest.fixture(scope="module")
def byol_ckpt(tmp_path_factory):
    """BYOL, ResNet-18 with the CIFAR stem, after one optimizer step of a real Trainer, saved by the Trainer."""
    import pytorch_lightning as pl
    from solo.methods import METHODS
    from torch.utils.data import DataLoader

    from unmix_ext.runner.solo_kwargs import method_kwargs

    cls = METHODS["byol"]
    torch.manual_seed(0)
    model = cls(**method_kwargs(
        cls, num_classes=4, cifar=True, max_epochs=1, batch_size=8, lars=False, scheduler="warmup_cosine",
        warmup_epochs=1, knn_eval=False, lr=0.05, proj_hidden_dim=64, pred_hidden_dim=64,
    ))
    g = torch.Generator().manual_seed(0)
    data = [(i, [torch.randn(3, 16, 16, generator=g) for _ in range(2)], i % 4) for i in range(8)]
    trainer = pl.Trainer(
        max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    path = tmp_path_factory.mktemp("byol") / "last.ckpt"
    trainer.save_checkpoint(path)
    return SimpleNamespace(path=path, encoder=model.encoder.eval(), arch="resnet18", cifar=True, size=16)


@pytest.fixture(scope="module")
def r50_ckpt(tmp_path_factory):
    """An untrained ImageNet-stem ResNet-50 encoder in the checkpoint layout, beside a projector that is not exported."""
    import torchvision

    torch.manual_seed(0)
    encoder = torchvision.models.resnet50()
    encoder.fc = nn.Identity()
    _randomize_batchnorm(encoder)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["projector.0.weight"] = torch.randn(8, 2048)
    path = _lightning_layout(tmp_path_factory.mktemp("r50") / "r50.ckpt", state,
                             hyper_parameters={"encoder": "resnet50", "backbone_args": {"cifar": False}})
    return SimpleNamespace(path=path, encoder=encoder, arch="resnet50", cifar=False, size=32, state=state)


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory):
    """solo-learn's ViT-Tiny (a timm model) in the checkpoint layout."""
    from solo.utils.backbones import vit_tiny

    torch.manual_seed(0)
    encoder = vit_tiny().eval()
    path = _lightning_layout(tmp_path_factory.mktemp("vit") / "vit.ckpt",
                             {f"encoder.{k}": v for k, v in encoder.state_dict().items()})
    return SimpleNamespace(path=path, encoder=encoder)


def _library_model(fmt: str, arch: str, cifar: bool) -> nn.Module:
    """The model a torchvision or timm user builds by hand, following the sidecar."""
    import timm
    import torchvision

    if fmt == "timm":
        model = timm.create_model(arch, num_classes=0)
    else:
        model = getattr(torchvision.models, arch)()
        model.fc = nn.Identity()
    if cifar:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        model.maxpool = nn.Identity()
    return model.eval()


@pytest.mark.parametrize("fmt", ["torchvision", "timm"])
@pytest.mark.parametrize("case", ["byol_ckpt", "r50_ckpt"])
def test_resnet_export_loads_strictly_and_gives_the_encoders_features(case, fmt, tmp_path, request):
    ckpt = request.getfixturevalue(case)
    out = export(ckpt.path, fmt, tmp_path / "backbone.pth")
    sidecar = json.loads((tmp_path / "backbone.pth.json").read_text())
    assert (sidecar["format"], sidecar["encoder"], sidecar["cifar_stem"]) == (fmt, ckpt.arch, ckpt.cifar)

    state = torch.load(out, map_location="cpu", weights_only=True)
    assert not any(key.startswith(("projector", "encoder.", "momentum")) for key in state)
    model = _library_model(fmt, ckpt.arch, ckpt.cifar)
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, ckpt.size, ckpt.size)
    with torch.no_grad():
        expected = ckpt.encoder(x)
        assert torch.allclose(model(x), expected, atol=1e-5)
        assert torch.allclose(backbone_from_export(out).eval()(x), expected, atol=1e-5)


def test_momentum_export_holds_the_momentum_encoder(byol_ckpt, tmp_path):
    saved = torch.load(byol_ckpt.path, map_location="cpu", weights_only=True)["state_dict"]
    online = torch.load(export(byol_ckpt.path, "torchvision", tmp_path / "online.pth"), weights_only=True)
    momentum = torch.load(export(byol_ckpt.path, "torchvision", tmp_path / "m.pth", which="momentum"),
                          weights_only=True)
    assert all(torch.equal(value, saved[f"momentum_encoder.{key}"]) for key, value in momentum.items())
    # one step of training moved the online weights away from the (EMA) momentum ones
    assert any(not torch.equal(online[key], momentum[key]) for key in online if key.endswith("conv1.weight"))


def _detectron2_names_resnet50() -> dict[str, str]:
    """detectron2 name -> torchvision name for a ResNet-50, generated from the architecture (3, 4, 6, 3 blocks)."""
    names = {"stem.conv1.weight": "conv1.weight", **{f"stem.conv1.norm.{p}": f"bn1.{p}" for p in BN_LEAVES}}
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        for block in range(blocks):
            convs = [(f"conv{k}", f"conv{k}", f"bn{k}") for k in (1, 2, 3)]
            if block == 0:
                convs.append(("shortcut", "downsample.0", "downsample.1"))
            for d2, conv, norm in convs:
                prefix, source = f"res{stage + 1}.{block}", f"layer{stage}.{block}"
                names[f"{prefix}.{d2}.weight"] = f"{source}.{conv}.weight"
                names.update({f"{prefix}.{d2}.norm.{p}": f"{source}.{norm}.{p}" for p in BN_LEAVES})
    return names


class _ArraysOnly(pickle.Unpickler):
    """pickle's reader, refusing every global but numpy's: a detectron2 export is arrays, names and flags."""

    def find_class(self, module, name):
        if module.partition(".")[0] != "numpy":
            raise pickle.UnpicklingError(f"a detectron2 export refers to {module}.{name}")
        return super().find_class(module, name)


def test_detectron2_export_has_detectron2s_names_and_the_source_values(r50_ckpt, tmp_path):
    with open(export(r50_ckpt.path, "detectron2", tmp_path / "r50.pkl"), "rb") as file:
        data = _ArraysOnly(file, encoding="latin1").load()  # as detectron2's checkpointer reads it
    assert data["__author__"] == "unmix-ext" and data["matching_heuristics"] is True
    names = _detectron2_names_resnet50()
    assert set(data["model"]) == set(names)
    assert sum(name.endswith("weight") and ".norm." not in name for name in names) == 53  # conv weights
    for d2, tv in names.items():
        assert torch.equal(torch.from_numpy(data["model"][d2]), r50_ckpt.state[f"encoder.{tv}"]), d2
    sidecar = json.loads((tmp_path / "r50.pkl.json").read_text())
    assert sidecar["detectron2_config"]["MODEL.RESNETS.STRIDE_IN_1X1"] is False


def test_vit_timm_export_passes_timm_keys_through(vit_ckpt, tmp_path):
    out = export(vit_ckpt.path, "timm", tmp_path / "vit.pth")
    assert json.loads((tmp_path / "vit.pth.json").read_text())["timm_name"] == "vit_tiny_patch16_224"
    assert set(torch.load(out, weights_only=True)) == set(vit_ckpt.encoder.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(backbone_from_export(out).eval()(x), vit_ckpt.encoder(x), atol=1e-5)


def _truncated(tmp_path, request):
    data = request.getfixturevalue("byol_ckpt").path.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path, ["--format", "torchvision"], "truncated"


def _corrupt(tmp_path, request):
    data = bytearray(request.getfixturevalue("byol_ckpt").path.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 64] = bytes(64)
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(data))
    return path, ["--format", "torchvision"], "checksum"


def _text_file(tmp_path, request):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint\n")
    return path, ["--format", "timm"], "not a PyTorch checkpoint"


def _plain_state_dict(tmp_path, request):
    path = tmp_path / "plain.pth"
    torch.save(request.getfixturevalue("byol_ckpt").encoder.state_dict(), path)
    return path, ["--format", "timm"], "not a Lightning checkpoint"


def _no_encoder(tmp_path, request):
    path = _lightning_layout(tmp_path / "head.ckpt", {"projector.0.weight": torch.zeros(2, 2)})
    return path, ["--format", "timm"], "no 'backbone.*' or 'encoder.*' weights"


def _cifar_to_detectron2(tmp_path, request):
    return request.getfixturevalue("byol_ckpt").path, ["--format", "detectron2"], "CIFAR-stem"


def _no_momentum_encoder(tmp_path, request):
    return request.getfixturevalue("r50_ckpt").path, ["--format", "timm", "--which", "momentum"], "no momentum backbone"


def _hparams_disagree(tmp_path, request):
    state = request.getfixturevalue("r50_ckpt").state
    path = _lightning_layout(tmp_path / "mislabelled.ckpt", state, hyper_parameters={"encoder": "resnet18"})
    return path, ["--format", "torchvision"], "'resnet18'"


def _vit_to_torchvision(tmp_path, request):
    return request.getfixturevalue("vit_ckpt").path, ["--format", "torchvision"], "use --format timm"


def _newer_pickle_protocol(tmp_path, request):
    # torch.save writes protocol 2; torch's restricted loader reads nothing newer, so such a file is refused
    path = tmp_path / "protocol4.ckpt"
    with zipfile.ZipFile(request.getfixturevalue("byol_ckpt").path) as source, zipfile.ZipFile(path, "w") as archive:
        for entry in source.infolist():
            data = source.read(entry)
            if entry.filename.endswith("/data.pkl"):
                data = pickle.dumps({"state_dict": {}}, protocol=4)
            archive.writestr(entry, data)
    return path, ["--format", "timm"], "cannot be read safely: it uses the pickle instruction FRAME, which"


def _missing(tmp_path, request):
    return tmp_path / "nowhere.ckpt", ["--format", "timm"], "no such file"


@pytest.mark.parametrize("make", [
    _truncated, _corrupt, _text_file, _plain_state_dict, _no_encoder, _cifar_to_detectron2,
    _no_momentum_encoder, _hparams_disagree, _vit_to_torchvision, _newer_pickle_protocol, _missing,
], ids=lambda make: make.__name__.strip("_"))
def test_bad_input_is_one_line_naming_the_file_and_exit_2(make, tmp_path, request, capsys):
    path, options, expected = make(tmp_path, request)
    out = tmp_path / "out" / "backbone.pth"
    assert main([str(path), *options, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err and expected in err, err
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_hostile_checkpoint_is_refused_in_one_line_and_never_run(hostile_checkpoint, tmp_path, capsys):
    path = hostile_checkpoint.write(tmp_path / "evil.ckpt")
    out = tmp_path / "backbone.pth"

    assert main([str(path), "--format", "torchvision", str(out)]) == 2

    assert capsys.readouterr().err == f"error: checkpoint: {path} {hostile_checkpoint.refusal}{EXPORT_ADVICE}\n"
    assert not hostile_checkpoint.victim.exists() and not out.exists()
