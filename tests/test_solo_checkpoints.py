"""solo-learn's checkpoints in, ours out to solo-learn: every release's layout, read as data, exported, evaluated.

The checkpoints here are built the way solo-learn's Trainer saves them: its state_dict names
(``encoder.*`` in 1.0.2, ``backbone.*`` from 1.0.3 on), ``args.json`` beside, and in the scheduler's
state the ``functools.partial(static_lr, get_lr=scheduler.get_lr, ...)`` that SimSiam-like methods
leave there, which pickles the scheduler (solo-learn's own class) and its optimizer (LARS in main).
Pickle writes a class by its module and name, so the classes below are named as solo-learn's while
a checkpoint is written; nothing of solo-learn main is installed or imported.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

import unmix_ext.methods  # noqa: F401  (patches solo-learn before it is imported)
from unmix_ext.export import main as export_main
from unmix_ext.main_knn import main as knn_main
from unmix_ext.main_umap import main as umap_main
from unmix_ext.runner.checkpoints import read_backbone
from unmix_ext.runner.fake_data import write_fake_dataset
from unmix_ext.runner.files import SOLO_LEARN_REFERENCES, read_checkpoint
from unmix_ext.tools.export import SOLO_CHECKPOINT, detectron2_name, export

pytestmark = pytest.mark.filterwarnings("ignore")

PROJ_HIDDEN, PROJ_OUT, PRED_HIDDEN, CLASSES = 32, 16, 8, 4


class _WarmupCosine(LRScheduler):
    """A scheduler with solo-learn's constructor; written into a checkpoint under solo-learn's module name."""

    def __init__(self, optimizer, warmup_epochs, max_epochs, warmup_start_lr=0.0, eta_min=0.0, last_epoch=-1):
        self.warmup_epochs, self.max_epochs = warmup_epochs, max_epochs
        self.warmup_start_lr, self.eta_min = warmup_start_lr, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return list(self.base_lrs)


def _name_as_solo_learn(monkeypatch) -> dict:
    """Classes named as solo-learn's (``solo.utils.lr_scheduler``, ``solo.utils.lars``, ``pl_bolts...``) while
    checkpoints are written; returns ``{layout: (scheduler class, optimizer class)}``."""
    import solo.utils.lars

    main_scheduler = type("LinearWarmupCosineAnnealingLR", (_WarmupCosine,), {"__module__": "solo.utils.lr_scheduler"})
    module = types.ModuleType("solo.utils.lr_scheduler")
    module.LinearWarmupCosineAnnealingLR = main_scheduler
    monkeypatch.setitem(sys.modules, "solo.utils.lr_scheduler", module)
    lars = type("LARS", (torch.optim.SGD,), {"__module__": "solo.utils.lars"})
    monkeypatch.setattr(solo.utils.lars, "LARS", lars, raising=False)
    bolts = type("LinearWarmupCosineAnnealingLR", (_WarmupCosine,),
                 {"__module__": "pl_bolts.optimizers.lr_scheduler"})
    monkeypatch.setattr(sys.modules["pl_bolts.optimizers.lr_scheduler"], "LinearWarmupCosineAnnealingLR", bolts)
    return {"main": (main_scheduler, lars), "1.0.2": (bolts, torch.optim.SGD)}


@pytest.fixture
def solo_names(monkeypatch):
    return _name_as_solo_learn(monkeypatch)


def _resnet18(cifar: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    if cifar:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        model.maxpool = nn.Identity()
    # BatchNorm statistics of images (not the defaults), as training leaves them; a lost or swapped norm shows
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a cumulative average over the batches below
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    return model.eval()


def _args_json(layout: str, dataset: str, cifar: bool) -> dict:
    """args.json as solo-learn's Checkpointer writes it: its config (main) or its argparse namespace (1.0.2)."""
    kwargs = {"proj_hidden_dim": PROJ_HIDDEN, "proj_output_dim": PROJ_OUT, "pred_hidden_dim": PRED_HIDDEN}
    if layout == "main":
        return {"name": "byol-test", "method": "byol", "backbone": {"name": "resnet18", "kwargs": {}},
                "method_kwargs": kwargs, "data": {"dataset": dataset, "num_classes": CLASSES,
                                                  "train_path": "./datasets", "num_large_crops": 2},
                "optimizer": {"name": "lars", "batch_size": 256, "lr": 1.0}, "wandb_run_id": None}
    return {"name": "byol-test", "method": "byol", "encoder": "resnet18", "dataset": dataset,
            "backbone_args": {"cifar": cifar, "zero_init_residual": False}, "data_dir": "./datasets", **kwargs}


def write_solo_checkpoint(folder: Path, names: dict, layout: str, hyper_parameters: bool, cifar: bool,
                          extra: dict | None = None) -> SimpleNamespace:
    """A BYOL checkpoint in solo-learn ``layout`` ("1.0.2": encoder.*, "main": backbone.*), args.json beside;
    ``extra``: more checkpoint entries."""
    scheduler_cls, optimizer_cls = names[layout]
    online, momentum = _resnet18(cifar, 0), _resnet18(cifar, 1)
    projector = nn.Sequential(nn.Linear(512, PROJ_HIDDEN), nn.BatchNorm1d(PROJ_HIDDEN), nn.ReLU(),
                              nn.Linear(PROJ_HIDDEN, PROJ_OUT))
    predictor = nn.Sequential(nn.Linear(PROJ_OUT, PRED_HIDDEN), nn.ReLU(), nn.Linear(PRED_HIDDEN, PROJ_OUT))
    classifier = nn.Linear(512, CLASSES)
    prefix = ("encoder", "momentum_encoder") if layout == "1.0.2" else ("backbone", "momentum_backbone")
    state = {}
    for name, module in ((prefix[0], online), (prefix[1], momentum), ("projector", projector),
                         ("predictor", predictor), ("classifier", classifier)):
        state.update({f"{name}.{key}": value for key, value in module.state_dict().items()})
    groups = [{"name": "backbone", "params": online.parameters()}, {"name": "projector", "params": projector.parameters()},
              {"name": "predictor", "params": predictor.parameters(), "static_lr": True},
              {"name": "classifier", "params": classifier.parameters(), "lr": 0.1, "weight_decay": 0}]
    optimizer = optimizer_cls(groups, lr=1e-4, momentum=0.9)
    projector(online(torch.randn(2, 3, 32, 32))).sum().backward()
    optimizer.step()  # a momentum buffer per parameter: the optimizer's state is a defaultdict(dict)
    scheduler = scheduler_cls(optimizer, warmup_epochs=10, max_epochs=100)
    # what solo-learn's configure_optimizers does for a static-lr group (SimSiam's, NNSiam's predictor)
    scheduler.get_lr = functools.partial(sys.modules["solo.methods.base"].static_lr, get_lr=scheduler.get_lr,
                                         param_group_indexes=[2], lrs_to_replace=[1e-4])
    checkpoint = {"epoch": 3, "global_step": 30, "pytorch-lightning_version": "1.4.9" if layout == "1.0.2" else "2.0.9",
                  "state_dict": state, "callbacks": {}, "optimizer_states": [optimizer.state_dict()],
                  "lr_schedulers": [scheduler.state_dict()], "loops": {"fit_loop": {"epoch_progress": {"current": 3}}}}
    if hyper_parameters:  # solo-learn 1.0.2's arguments, a path among them
        checkpoint["hyper_parameters"] = {"encoder": "resnet18", "backbone_args": {"cifar": cifar},
                                          "data_dir": Path("/datasets/cifar"), "method": "byol", "lr": 1.0}
    checkpoint.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "byol-abcd1234-ep=3.ckpt"
    torch.save(checkpoint, path)
    dataset = "cifar10" if cifar else "imagenet100"
    (folder / "args.json").write_text(json.dumps(_args_json(layout, dataset, cifar)))
    return SimpleNamespace(path=path, folder=folder, state=state, prefix=prefix, online=online, momentum=momentum,
                           cifar=cifar, layout=layout)


CASES = [("1.0.2", False, True), ("1.0.2", True, True), ("main", False, False), ("main", True, True)]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each case of CASES written once: {case: checkpoint}."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        names = _name_as_solo_learn(monkeypatch)
        return {case: write_solo_checkpoint(tmp_path_factory.mktemp("trained_models") / "byol" / "abcd1234", names,
                                            *case) for case in CASES}


@pytest.fixture(params=CASES, ids=lambda case: f"{case[0]}-{'hparams' if case[1] else 'no_hparams'}-"
                                                 f"{'cifar' if case[2] else 'imagenet'}")
def solo_ckpt(request, written, tmp_path):
    """A copy of one written case, in a folder of its own (tests may edit its args.json or write beside it)."""
    import shutil

    source = written[request.param]
    folder = tmp_path / "trained_models" / "byol" / "abcd1234"
    shutil.copytree(source.folder, folder)
    return SimpleNamespace(**{**vars(source), "folder": folder, "path": folder / source.path.name})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Class folders as solo-learn's scripts name them: .../train/<class>/ and .../val/<class>/, 32 px."""
    root = write_fake_dataset("image_folder", tmp_path_factory.mktemp("images"), num_per_class=6,
                              num_classes=CLASSES, image_size=32)
    return root


def test_genuine_checkpoint_refers_to_exactly_the_allow_listed_names(solo_ckpt):
    refers_to = set(torch.serialization.get_unsafe_globals_in_checkpoint(solo_ckpt.path))
    # torch's own loader would refuse it; ours reads it, and every name it needs is on our list
    assert "functools.partial" in refers_to and "solo.methods.base.static_lr" in refers_to
    assert refers_to <= set(SOLO_LEARN_REFERENCES)
    checkpoint = read_checkpoint(solo_ckpt.path, "advice")
    static = checkpoint["lr_schedulers"][0]["get_lr"]
    assert static.reference == "functools.partial"  # an inert record, not the real partial
    assert not callable(getattr(static, "func", None))


def test_every_layout_exports_the_checkpoints_tensors_in_every_format(solo_ckpt, tmp_path):
    import pickle

    for which, expected, prefix in (("online", solo_ckpt.online, solo_ckpt.prefix[0]),
                                    ("momentum", solo_ckpt.momentum, solo_ckpt.prefix[1])):
        weights = expected.state_dict()
        assert all(torch.equal(value, solo_ckpt.state[f"{prefix}.{key}"]) for key, value in weights.items())
        for fmt in ("torchvision", "timm", "detectron2", "solo"):
            out = tmp_path / f"{which}-{fmt}"
            if fmt == "detectron2" and solo_ckpt.cifar:
                with pytest.raises(Exception, match="CIFAR-stem"):
                    export(solo_ckpt.path, fmt, out, which)
                continue
            export(solo_ckpt.path, fmt, out, which)
            if fmt == "detectron2":
                exported = {name: torch.from_numpy(array) for name, array in pickle.loads(out.read_bytes())["model"].items()}
                source = {detectron2_name(key): value for key, value in weights.items()
                          if not key.endswith("num_batches_tracked")}
            elif fmt == "solo":
                exported = torch.load(out / SOLO_CHECKPOINT, weights_only=True)["state_dict"]
                source = {f"backbone.{key}": value for key, value in weights.items()}
                # the projector of the same side goes along (this BYOL keeps none for its momentum side)
                head = "projector." if which == "online" else "momentum_projector."
                source.update({f"projector.{key[len(head):]}": value for key, value in solo_ckpt.state.items()
                               if key.startswith(head)})
            else:
                exported, source = torch.load(out, weights_only=True), weights
                sidecar = json.loads(Path(f"{out}.json").read_text())
                assert (sidecar["encoder"], sidecar["cifar_stem"]) == ("resnet18", solo_ckpt.cifar)
            assert exported.keys() == source.keys(), (which, fmt)
            assert all(torch.equal(exported[key], source[key]) for key in source), (which, fmt)


def test_architecture_comes_from_args_json_then_the_weights(solo_ckpt):
    assert read_backbone(solo_ckpt.path).source == "args.json"
    (solo_ckpt.folder / "args.json").unlink()
    backbone = read_backbone(solo_ckpt.path, "momentum")
    assert (backbone.encoder, backbone.cifar_stem, backbone.source) == ("resnet18", solo_ckpt.cifar, "weights")
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert torch.allclose(backbone.network()(x), solo_ckpt.momentum(x), atol=1e-5)


def test_args_json_that_contradicts_the_weights_is_one_line(solo_ckpt, capsys, tmp_path):
    args = json.loads((solo_ckpt.folder / "args.json").read_text())
    if "backbone" in args:
        args["backbone"]["name"] = "resnet50"
    else:
        args["encoder"] = "resnet50"
    (solo_ckpt.folder / "args.json").write_text(json.dumps(args))
    assert export_main([str(solo_ckpt.path), "--format", "timm", str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "names backbone 'resnet50', but the weights are a resnet18" in err


def test_hostile_reference_beside_solo_learns_is_named_and_never_run(solo_names, tmp_path, hostile_checkpoint, capsys):
    ckpt = write_solo_checkpoint(tmp_path / "solo", solo_names, "main", False, True,
                                 extra={"hyper_parameters": hostile_checkpoint.payload()})
    # builtins.dict and the rest of solo-learn's names sort before io.open: the message names io.open
    assert sorted(torch.serialization.get_unsafe_globals_in_checkpoint(ckpt.path))[0] == "builtins.dict"
    assert export_main([str(ckpt.path), "--format", "solo", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: checkpoint: {ckpt.path} {hostile_checkpoint.refusal}give a .ckpt that a solo-learn or " \
                  "unmix-ext pretraining run wrote\n"
    assert not hostile_checkpoint.victim.exists() and not (tmp_path / "out").exists()


def test_solo_export_loads_as_solo_learn_mains_linear_knn_and_umap_load_it(solo_ckpt, tmp_path):
    out = export(solo_ckpt.path, "solo", tmp_path / "for-solo", "momentum")
    expected = solo_ckpt.momentum
    backbone, loaded = _main_linear_backbone(out / SOLO_CHECKPOINT, "resnet18", "cifar10" if solo_ckpt.cifar else "imagenet100")
    assert loaded.missing_keys == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.eval()(x), expected(x), atol=1e-5)
    model_backbone, cfg = _main_knn_backbone(out)
    assert cfg.method == "byol" and cfg.method_kwargs.pred_hidden_dim == PRED_HIDDEN
    with torch.no_grad():
        assert torch.allclose(model_backbone.eval()(x), expected(x), atol=1e-5)


# ---- solo-learn main's loading, written from its main_linear.py and main_knn.py ----------------------------------


def _solo_main_backbone(name: str, dataset: str) -> nn.Module:
    """The backbone solo-learn main builds for a ResNet: torchvision's, fc removed, the CIFAR stem for its CIFAR sets."""
    backbone = getattr(torchvision.models, name)()
    backbone.fc = nn.Identity()
    if dataset in ("cifar10", "cifar100"):
        backbone.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        backbone.maxpool = nn.Identity()
    return backbone


def _main_linear_backbone(ckpt_path: Path, name: str, dataset: str):
    """main_linear.py: torch.load(...)["state_dict"], encoder -> backbone renamed, the prefix dropped, strict=False."""
    assert str(ckpt_path).endswith((".ckpt", ".pth", ".pt"))
    backbone = _solo_main_backbone(name, dataset)
    state = torch.load(ckpt_path, map_location="cpu")["state_dict"]  # torch's default: weights_only
    for key in list(state.keys()):
        if "encoder" in key:
            state[key.replace("encoder", "backbone")] = state[key]
        if "backbone" in key:
            state[key.replace("backbone.", "")] = state[key]
        del state[key]
    return backbone, backbone.load_state_dict(state, strict=False)


#: method_kwargs solo-learn main's methods assert (read from its solo/methods/*.py)
_MAIN_REQUIRED = {"byol": ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim"),
                  "simclr": ("proj_hidden_dim", "proj_output_dim", "temperature")}


def _main_knn_backbone(folder: Path):
    """main_knn.py / main_umap.py: args.json and the folder's first .ckpt, then Lightning's
    ``METHODS[method].load_from_checkpoint(ckpt, strict=False, cfg=cfg)``: the method built from cfg alone (no
    hyper_parameters), its state_dict loaded with strict=False; here its backbone, and what it needs of cfg."""
    from omegaconf import OmegaConf

    ckpt_path = [folder / name for name in os.listdir(folder) if name.endswith(".ckpt")][0]
    cfg = OmegaConf.create(json.loads((folder / "args.json").read_text()))
    checkpoint = torch.load(ckpt_path, map_location="cpu")
    assert "pytorch-lightning_version" in checkpoint and "hyper_parameters" not in checkpoint
    for key in _MAIN_REQUIRED[cfg.method]:
        assert not OmegaConf.is_missing(cfg, f"method_kwargs.{key}") and key in cfg.method_kwargs
    for key in ("data.num_classes", "max_epochs", "optimizer.name", "optimizer.batch_size", "optimizer.lr",
                "optimizer.classifier_lr", "optimizer.weight_decay", "scheduler.name"):
        assert OmegaConf.select(cfg, key) is not None, key
    backbone = _solo_main_backbone(cfg.backbone.name, cfg.data.dataset)
    state = {key[len("backbone."):]: value for key, value in checkpoint["state_dict"].items()
             if key.startswith("backbone.")}
    assert backbone.load_state_dict(state, strict=False).missing_keys == []
    if cfg.unmix_ext.holds == "backbone":  # no projector went along: nothing else to load
        assert not any(key.startswith("projector.") for key in checkpoint["state_dict"])
    elif cfg.method == "byol":  # solo-learn main's BYOL projector, sized by method_kwargs
        kwargs = cfg.method_kwargs
        projector = nn.Sequential(nn.Linear(512, kwargs.proj_hidden_dim), nn.BatchNorm1d(kwargs.proj_hidden_dim),
                                  nn.ReLU(), nn.Linear(kwargs.proj_hidden_dim, kwargs.proj_output_dim))
        state = {key[len("projector."):]: value for key, value in checkpoint["state_dict"].items()
                 if key.startswith("projector.")}
        assert projector.load_state_dict(state, strict=False).missing_keys == []
    return backbone, cfg


# ---- solo-learn's evaluation commands -----------------------------------------------------------------------------


def _knn_flags(folder: Path, images: Path, *extra: str) -> list[str]:
    """scripts/knn/imagenet-100/knn.sh's flags, its split folders replaced by small ones."""
    return ["--dataset", "imagenet100", "--train_data_path", str(images / "train"), "--val_data_path", str(images / "val"),
            "--batch_size", "16", "--num_workers", "0", "--pretrained_checkpoint_dir", str(folder),
            "--k", "1", "2", "5", "--temperature", "0.07", "0.1", "--feature_type", "backbone", "projector",
            "--distance_function", "euclidean", "cosine", *extra]


def test_main_knn_prints_and_writes_the_whole_grid_on_a_solo_folder_and_its_export(solo_ckpt, images, tmp_path,
                                                                                  capsys):
    assert knn_main(_knn_flags(solo_ckpt.folder, images, "--scale", "smoke")) == 0
    printed = capsys.readouterr().out
    record = json.loads((solo_ckpt.folder / "knn.json").read_text())
    # 2 feature types x 3 k x (1 euclidean + 2 cosine temperatures)
    assert len(record["rows"]) == 2 * 3 * 3 and record["val_images"] == 12
    assert {(row["distance"], row["temperature"]) for row in record["rows"]} == {
        ("euclidean", None), ("cosine", 0.07), ("cosine", 0.1)}
    assert all(0 <= row["acc1"] <= row["acc5"] <= 100 for row in record["rows"])
    assert (solo_ckpt.folder / "knn.md").read_text().count("\n| backbone |") == 9 and "| projector | 5 | cosine | 0.1 |" in printed
    # the export holds the backbone and the projector: every row is the source's
    out = export(solo_ckpt.path, "solo", tmp_path / "for-solo")
    assert knn_main(_knn_flags(out, images, "--scale", "smoke")) == 0
    assert json.loads((out / "knn.json").read_text())["rows"] == record["rows"]


class _Reducer:
    """Stands in for umap.UMAP (whose first fit compiles for 40 s): keeps what it was given, returns 2 columns."""

    seen: list = []

    def __init__(self, n_components, n_neighbors, random_state):
        assert n_components == 2 and n_neighbors < 30

    def fit_transform(self, points):
        _Reducer.seen.append(points.shape)
        return points[:, :2]


@pytest.fixture
def fake_umap(monkeypatch):
    _Reducer.seen = []
    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=_Reducer))
    return _Reducer


def _umap_flags(folder: Path, images: Path) -> list[str]:
    """scripts/umap/imagenet-100/umap.sh's flags, on small class folders."""
    return ["--dataset", "custom", "--train_data_path", str(images / "train"), "--val_data_path", str(images / "val"),
            "--batch_size", "16", "--num_workers", "0", "--pretrained_checkpoint_dir", str(folder), "--scale", "smoke"]


def test_main_umap_writes_a_png_per_split_of_the_backbone_features(solo_names, images, tmp_path, capsys, fake_umap):
    ckpt = write_solo_checkpoint(tmp_path / "solo", solo_names, "main", False, True)
    assert umap_main(_umap_flags(ckpt.folder, images)) == 0
    printed = capsys.readouterr().out
    for split in ("train", "val"):
        png = ckpt.folder / f"umap_{split}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in printed
    assert fake_umap.seen == [(24, 512), (12, 512)]


@pytest.fixture(scope="module")
def our_run(tmp_path_factory):
    """A smoke run of python -m unmix_ext.run (BYOL with Un-Mix, fake CIFAR-10): its run directory."""
    from unmix_ext.runner.builder import ssl_methods
    from unmix_ext.runner.config import load_config
    from unmix_ext.runner.run import run

    folder = tmp_path_factory.mktemp("run")
    recipe = folder / "byol.yaml"
    recipe.write_text(json.dumps({
        "method": "byol", "backbone": {"name": "resnet18"},
        "method_kwargs": {"proj_hidden_dim": 32, "proj_output_dim": 16, "pred_hidden_dim": 8},
        "data": {"dataset": "cifar10", "train_path": str(folder / "absent"), "num_workers": 0},
        "augmentations": [{"crop_size": 8, "num_crops": 2}], "optimizer": {"name": "sgd", "batch_size": 4, "lr": 0.1},
        "checkpoint": {"dir": str(folder / "runs")}, "unmix": {"enabled": True},
        "eval": {"knn": {"enabled": False}, "linear": {"enabled": False}},
    }))
    cfg = load_config(recipe, ["scale=smoke", "max_epochs=1"], known_methods=ssl_methods())
    return Path(run(cfg, recipe)["run_dir"])


def test_main_knn_and_umap_take_one_of_our_run_directories_and_its_data(our_run, capsys, fake_umap, tmp_path):
    flags = ["--pretrained_checkpoint_dir", str(our_run), "--scale", "smoke", "--num_workers", "0", "--k", "3",
             "--feature_type", "backbone", "projector", "--distance_function", "cosine"]
    assert knn_main(flags) == 0
    record = json.loads((our_run / "knn.json").read_text())
    assert record["dataset"] == "cifar10" and [row["feature_type"] for row in record["rows"]] == ["backbone",
                                                                                               "projector"]
    assert "| projector | 3 | cosine | 0.07 |" in capsys.readouterr().out
    assert umap_main(["--pretrained_checkpoint_dir", str(our_run), "--scale", "smoke", "--num_workers", "0",
                      "--output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "umap_val.png").is_file() and fake_umap.seen[0][1] == 512
    # and its export is a solo-learn folder that main_knn reads as solo-learn's
    out = export(our_run / "checkpoints" / "last.ckpt", "solo", tmp_path / "for-solo")
    args = json.loads((out / "args.json").read_text())
    assert args["method"] == "byol" and args["method_kwargs"]["pred_hidden_dim"] == 8
    _main_knn_backbone(out)


def test_solo_learn_folder_without_data_flags_is_one_line(written, images, capsys):
    folder = str(written[CASES[0]].folder)
    assert knn_main(["--pretrained_checkpoint_dir", folder]) == 2
    assert capsys.readouterr().err == ("error: --dataset: required for a solo-learn checkpoint folder; one of cifar10, "
                                       "cifar100, stl10, imagenet, imagenet100, custom\n")
    # no validation folder: the training images are not scored as if they were held out
    assert knn_main(["--pretrained_checkpoint_dir", folder, "--dataset", "custom", "--train_data_path",
                     str(images / "train")]) == 2
    assert "--val_data_path: required here" in capsys.readouterr().err


def test_linear_takes_a_solo_learn_checkpoint_its_data_from_args_json_or_overrides(solo_ckpt, images, capsys):
    from unmix_ext.linear import main as linear_main

    data = ["data.dataset=custom", f"data.train_path={images / 'train'}", f"data.val_path={images / 'val'}"]
    if solo_ckpt.layout == "1.0.2":  # its argparse flags name the data
        args = json.loads((solo_ckpt.folder / "args.json").read_text())
        args.update(dataset="custom", data_dir=str(images), train_dir="train", val_dir="val")
        (solo_ckpt.folder / "args.json").write_text(json.dumps(args))
        data = []
    assert linear_main([str(solo_ckpt.path), "--scale", "smoke", "eval.linear.max_epochs=1",
                        "eval.linear.batch_size=8", "data.num_workers=0", *data]) == 0
    result = json.loads((solo_ckpt.folder / "linear.json").read_text())
    assert 0 <= result["linear_top1"] <= result["linear_top5"] <= 100
    assert f"linear_top1 {result['linear_top1']:.2f}" in capsys.readouterr().out


def _linear_yaml(folder: Path, dataset: str) -> Path:
    """A linear config in solo-learn main's layout (scripts/linear/<dataset>/<method>.yaml): defaults with a wandb
    group beside it and Hydra's own entries, then its keys."""
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "private.yaml").write_text("enabled: False\nentity: null\nproject: solo-learn\n")
    (folder / "byol.yaml").write_text(
        "defaults:\n  - _self_\n  - wandb: private.yaml\n  - override hydra/hydra_logging: disabled\n"
        "  - override hydra/job_logging: disabled\n\nhydra:\n  output_subdir: null\n  run:\n    dir: .\n\n"
        "name: \"byol-linear\"\npretrained_feature_extractor: None\nbackbone:\n  name: \"resnet18\"\n"
        f"pretrain_method: \"byol\"\ndata:\n  dataset: {dataset}\n  train_path: \"./datasets\"\n"
        "  val_path: \"./datasets\"\n  format: \"image_folder\"\n  num_workers: 0\noptimizer:\n  name: \"sgd\"\n"
        "  batch_size: 256\n  lr: 0.1\n  weight_decay: 0\nscheduler:\n  name: \"step\"\n  lr_decay_steps: [60, 80]\n"
        f"checkpoint:\n  enabled: True\n  dir: \"{folder / 'trained_models'}\"\n  frequency: 1\nauto_resume:\n"
        "  enabled: True\n\nmax_epochs: 100\ndevices: [0]\nsync_batchnorm: True\naccelerator: \"gpu\"\n"
        "strategy: \"ddp\"\nprecision: 16\n")
    return folder / "byol.yaml"


def test_main_linear_takes_solo_learns_command_line_on_its_checkpoint_and_ours(written, our_run, tmp_path, capsys):
    from unmix_ext.main_linear import main as linear_main

    # solo-learn's CIFAR-stem checkpoint with a CIFAR config; our smoke run's ImageNet stem with an ImageNet one,
    # fine-tuned with mixup, cutmix and label smoothing (solo-learn main's options, through Lightning)
    for checkpoint, dataset, options in (
            (written[("main", True, True)].path, "cifar10", []),
            (our_run / "checkpoints" / "last.ckpt", "imagenet100",
             ["finetune=true", "mixup=0.8", "cutmix=1.0", "label_smoothing=0.1"])):
        yaml_file = _linear_yaml(tmp_path / "scripts" / "linear" / dataset, dataset)
        assert linear_main(["--config-path", str(yaml_file.parent), "--config-name", "byol.yaml",
                            f"pretrained_feature_extractor={checkpoint}", "max_epochs=1", "optimizer.batch_size=8",
                            f"data.train_path={tmp_path / 'absent'}", "--scale", "smoke", *options]) == 0
        printed = capsys.readouterr().out
        results = json.loads(Path(printed.rsplit("wrote ", 1)[1].strip()).read_text())
        assert results["pretrained_feature_extractor"] == str(checkpoint.resolve())
        # ResNet-18 without fc: 60 weights and biases, 60 BatchNorm statistics and step counters
        assert results["backbone_tensors_loaded"] == results["backbone_tensors_expected"] == 120
        assert 0 <= results["linear_top1"] <= results["linear_top5"] <= 100
        # solo-learn's rule: lr x batch_size x devices x num_nodes / 256 (smoke keeps one device)
        assert results["linear_lr"] == pytest.approx(0.1 * 8 / 256)


def _partial_copy(checkpoint: Path, tmp_path: Path) -> Path:
    """``checkpoint`` without one backbone tensor (a BatchNorm's running variance), no args.json beside it."""
    state = read_checkpoint(checkpoint, "advice")["state_dict"]
    del state["backbone.layer3.0.bn1.running_var"]
    path = tmp_path / "partial" / "partial.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.0.9"}, path)
    return path


def test_main_linear_refuses_what_it_cannot_do_in_one_line(written, tmp_path, capsys):
    from unmix_ext.main_linear import main as linear_main

    yaml_file = _linear_yaml(tmp_path / "linear", "cifar100")
    checkpoint = written[("main", False, False)].path
    base = ["--config-path", str(yaml_file.parent), "--config-name", "byol", f"pretrained_feature_extractor={checkpoint}"]
    for extra, expected in (([], "data.dataset: solo-learn gives a ResNet the CIFAR stem exactly for cifar10"),
                            (["auto_augment=true"], "auto_augment: True is not done by this linear probe"),
                            (["label_smoothing=1.0"], "label_smoothing (eval.linear.label_smoothing here): must be "
                                                      "below 1, got 1"),
                            (["cutmix=-1"], "cutmix (eval.linear.cutmix here): must be >= 0"),
                            (["optimizer.lrr=1"], "optimizer.lrr: not a key of solo-learn's linear config; did you "
                                                  "mean lr?"),
                            (["pretrained_feature_extractor=None"], "pretrained_feature_extractor: 'None' is not"),
                            ([f"pretrained_feature_extractor={_partial_copy(checkpoint, tmp_path)}", "data.dataset=stl10"],
                             "fills 119 of the 120 backbone tensors")):
        assert linear_main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err


def test_main_linear_says_which_keys_it_accepts_and_does_not_use(tmp_path):
    from omegaconf import OmegaConf

    from unmix_ext.runner.config import compose
    from unmix_ext.tools.solo_eval import _ignored_keys

    raw = OmegaConf.to_container(compose(_linear_yaml(tmp_path / "linear", "cifar10"), []))
    assert _ignored_keys(raw) == {
        "checkpoint.enabled": "the probe writes no checkpoint, only results.json",
        "checkpoint.frequency": "the probe writes no checkpoint",
        "auto_resume": "a probe is not resumed; rerunning it trains it again",
        "data.format": "the images are read by torchvision's readers (dali: the same folders)"}
