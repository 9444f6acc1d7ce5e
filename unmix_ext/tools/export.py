"""The pretrained backbone of a training checkpoint, exported for torchvision, timm, detectron2 or solo-learn.

As a command::

    python -m unmix_ext.export CKPT --format torchvision|timm|detectron2|solo OUT [--which online|momentum]

``CKPT`` is a pretraining checkpoint of any method of ``solo.methods.METHODS`` (solo-learn's or an
Un-Mix variant), written by ``python -m unmix_ext.run`` or by solo-learn of any release: its
``state_dict`` holds the online backbone under ``encoder.`` (1.0.2, ours) or ``backbone.`` (1.0.3+)
and, for methods with one, the momentum backbone under ``momentum_encoder.`` / ``momentum_backbone.``;
``--which`` picks one (default ``online``). Projector, predictor, classifier and queues are not
exported. The architecture is read as :mod:`unmix_ext.runner.checkpoints` says (``args.json``
beside, our ``config.yaml`` above, the weights), and must agree with the weights.

Formats (every one but ``solo`` also writes ``OUT.json``, a sidecar naming the format,
the architecture, the stem, the source checkpoint and how to build the model):

- ``torchvision`` (ResNet-18/50): a plain ``state_dict`` (``torch.save``) that
  ``torchvision.models.resnet18/50()`` with ``fc = nn.Identity()`` loads with
  ``strict=True``. With the CIFAR stem (sidecar ``"cifar_stem": true``) the
  model also needs solo-learn's stem: ``conv1 = nn.Conv2d(3, 64, 3, 1, 2,
  bias=False)`` and ``maxpool = nn.Identity()``. :func:`backbone_from_export`
  does all this.
- ``timm``: a plain ``state_dict`` for ``timm.create_model(name,
  num_classes=0)``. timm's ResNet names its weights as torchvision does
  (``conv1``, ``bn1``, ``layer1..4``; ``num_classes=0`` makes ``fc`` an
  Identity without weights), so a ResNet export equals the torchvision one
  (CIFAR stem: the same two replacements). ViT and Swin encoders already are
  timm models: their keys pass through, and the sidecar names the timm model
  (e.g. ``vit_small_patch16_224``) and its arguments (``patch_size``,
  ``window_size``). A ``timm/<model>`` encoder's keys pass through too, and the
  sidecar holds ``<model>`` and the arguments it was built with.
- ``detectron2`` (ResNet-18/50 with the ImageNet stem): the pickle
  ``MODEL.WEIGHTS`` reads, ``{"model": {name: float32 ndarray}, "__author__":
  "unmix-ext", "matching_heuristics": True}`` with detectron2's names:
  ``stem.conv1`` (+ ``.norm``) for ``conv1``/``bn1``, ``res2..res5`` for
  ``layer1..4``, in a block ``conv1..3`` with ``.norm`` from ``bn1..3``, and
  ``shortcut`` (+ ``.norm``) from ``downsample.0/1``; ``num_batches_tracked``
  is dropped. The weights are torchvision-style, so the detectron2 config must
  say ``MODEL.RESNETS.STRIDE_IN_1X1 False``, ``INPUT.FORMAT RGB`` and set
  ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` to the pretraining normalisation x 255
  (ImageNet's: ``[123.675, 116.28, 103.53]`` / ``[58.395, 57.12, 57.375]``);
  the sidecar lists these keys. detectron2's C4 head (``Res5ROIHeads``) builds
  bottleneck blocks, so a ResNet-18 export suits FPN configs
  (``MODEL.RESNETS.DEPTH 18``, ``RES2_OUT_CHANNELS 64``), not C4 ones.
- ``solo`` (no sidecar): the folder ``OUT`` with ``backbone.ckpt`` (the backbone as ``backbone.*``,
  plain data) and ``args.json`` in solo-learn main's config layout, which its ``main_linear.py``
  (``pretrained_feature_extractor=OUT/backbone.ckpt``), ``main_knn.py`` and ``main_umap.py``
  (``--pretrained_checkpoint_dir OUT``) load as they load their own, with the projector where solo-learn main
  builds it alike (:func:`write_solo_folder`).

Checkpoints are read as data only (``weights_only=True``: tensors, containers
and numbers, which is all a training run writes), so a checkpoint whose pickle
would import or call anything else is refused before any of it runs. Every
mistake (no such file, not a checkpoint, truncated, corrupt or hostile, no
backbone, a format that cannot hold the architecture) is one line:
:class:`ExportError`, or the :class:`~unmix_ext.runner.guard.CheckpointError` of
:func:`~unmix_ext.runner.files.read_checkpoint` for a file that is not a complete
checkpoint or not only data, which the command prints as ``error: ...`` and
exits with status 2.

Example::

    export("runs/byol/checkpoints/last.ckpt", "detectron2", "byol_r50.pkl")
    backbone = backbone_from_export("byol_r18.pth")   # a torchvision or timm export
"""
from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from torch import nn

from unmix_ext.backbones import is_timm_name
from unmix_ext.errors import CommandError
from unmix_ext.runner.checkpoints import (ARGS_FILE, CHECKPOINT_ADVICE, PREFIXES, Backbone, build_network,
                                          read_backbone)
from unmix_ext.runner.files import atomic_write, atomic_write_text, read_checkpoint, short_message

#: the backbones a checkpoint may hold (:data:`unmix_ext.runner.checkpoints.PREFIXES`)
WHICH = tuple(PREFIXES)
SIDECAR_SUFFIX = ".json"
#: what a user can do about a checkpoint that cannot be read
EXPORT_ADVICE = CHECKPOINT_ADVICE


class ExportError(CommandError):
    """A checkpoint or a request the exporter cannot serve; the message is one line naming the file."""


# ---- formats ---------------------------------------------------------------------------------------------------


def _resnet_weights(backbone: Backbone, source: str | Path) -> dict[str, torch.Tensor]:
    if not backbone.is_resnet:
        raise ExportError(
            f"{source}: the torchvision format holds ResNets; {backbone.encoder} is a timm model: use --format timm"
        )
    return dict(backbone.state_dict)


def _timm_weights(backbone: Backbone, source: str | Path) -> dict[str, torch.Tensor]:
    # timm's ResNet keys equal torchvision's, and solo's transformers are timm models: names pass through
    return dict(backbone.state_dict)


_BLOCK_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)")
#: detectron2 attaches each BatchNorm to its conv as `.norm`
_BLOCK_LAYERS = {"downsample.0": "shortcut", "downsample.1": "shortcut.norm", "bn1": "conv1.norm",
                 "bn2": "conv2.norm", "bn3": "conv3.norm"}


def detectron2_name(name: str) -> str | None:
    """detectron2's name for a torchvision ResNet weight (``layer4.2.bn3.weight`` -> ``res5.2.conv3.norm.weight``).

    None for ``num_batches_tracked``, which detectron2's frozen or synced BatchNorms do not keep; raises
    KeyError for a name that is not part of a torchvision ResNet backbone.
    """
    if name.endswith(".num_batches_tracked"):
        return None
    layer, _, leaf = name.partition(".")
    if layer in ("conv1", "bn1") and "." not in leaf:
        return f"stem.conv1.{leaf}" if layer == "conv1" else f"stem.conv1.norm.{leaf}"
    match = _BLOCK_KEY.fullmatch(name)
    if match is None:
        raise KeyError(name)
    stage, block, layer, leaf = match.groups()
    return f"res{int(stage) + 1}.{block}.{_BLOCK_LAYERS.get(layer, layer)}.{leaf}"


def _detectron2_checkpoint(backbone: Backbone, source: str | Path) -> dict[str, Any]:
    if not backbone.is_resnet:
        raise ExportError(f"{source}: the detectron2 format holds ResNets, not {backbone.encoder}")
    if backbone.cifar_stem:
        raise ExportError(
            f"{source}: a CIFAR-stem ResNet (3x3 stride-1 conv1, no max-pool) has no detectron2 counterpart "
            "(its BasicStem is a 7x7 stride-2 conv and a max-pool); detection transfer needs an ImageNet-stem run"
        )
    model = {}
    for name, tensor in backbone.state_dict.items():
        try:
            target = detectron2_name(name)
        except KeyError:
            raise ExportError(f"{source}: encoder weight {name!r} has no detectron2 counterpart") from None
        if target is not None:
            model[target] = tensor.detach().to(torch.float32).numpy()
    return {"model": model, "__author__": "unmix-ext", "matching_heuristics": True}


def _torchvision_notes(backbone: Backbone) -> dict[str, Any]:
    return {"build": "unmix_ext.tools.export.backbone_from_export(PATH)"}


def _timm_notes(backbone: Backbone) -> dict[str, Any]:
    return {**_torchvision_notes(backbone), "timm_name": backbone.timm_name}


def _detectron2_notes(backbone: Backbone) -> dict[str, Any]:
    depth = int(backbone.encoder[len("resnet"):])
    note = "PIXEL_MEAN/STD are ImageNet's x 255: use the pretraining normalisation x 255 if it differed"
    if depth < 50:
        note += "; ResNet-18 needs an FPN config (detectron2's C4 head builds bottleneck blocks)"
    return {
        "build": "detectron2: MODEL.WEIGHTS PATH, with detectron2_config",
        "detectron2_config": {
            "MODEL.RESNETS.DEPTH": depth, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64 if depth < 50 else 256,
            "MODEL.RESNETS.STRIDE_IN_1X1": False, "INPUT.FORMAT": "RGB",
            "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53], "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
        },
        "note": note,
    }


def _save_torch(obj: Any, file: BinaryIO) -> None:
    torch.save(obj, file)


def _save_pickle(obj: Any, file: BinaryIO) -> None:
    pickle.dump(obj, file)


@dataclass(frozen=True)
class Format:
    """How one file format converts a backbone, writes it, what its sidecar adds, and whether it is a torch module's
    ``state_dict`` (torchvision, timm: :func:`backbone_from_export` rebuilds it)."""

    convert: Callable[[Backbone, str | Path], Any]
    save: Callable[[Any, BinaryIO], None]
    notes: Callable[[Backbone], dict[str, Any]]
    is_module: bool


FORMATS = {
    "torchvision": Format(_resnet_weights, _save_torch, _torchvision_notes, True),
    "timm": Format(_timm_weights, _save_torch, _timm_notes, True),
    "detectron2": Format(_detectron2_checkpoint, _save_pickle, _detectron2_notes, False),
}
#: the format that writes a folder (a checkpoint and its args.json) rather than one file: :func:`write_solo_folder`
SOLO_FORMAT = "solo"
#: every format ``--format`` takes
FORMAT_NAMES = (*FORMATS, SOLO_FORMAT)


# ---- solo-learn's layout ------------------------------------------------------------------------------------------

#: the checkpoint's name inside a ``--format solo`` folder (solo-learn's commands take the folder's first ``.ckpt``)
SOLO_CHECKPOINT = "backbone.ckpt"
#: method_kwargs that solo-learn main's methods require (they assert them; the rest have defaults there)
SOLO_REQUIRED_METHOD_KWARGS = ("proj_hidden_dim", "proj_output_dim", "pred_hidden_dim", "temperature",
                               "temperature_q", "temperature_k", "num_prototypes")
#: our methods solo-learn main does not have, and the one of its methods whose backbone is the same network
SOLO_METHOD_STAND_INS = {"mocov2": "mocov2plus"}
SOLO_MAIN_DATASETS = ("cifar10", "cifar100", "stl10", "imagenet", "imagenet100", "custom")


def _trained_method(checkpoint: dict[str, Any], source: Path) -> tuple[str, dict[str, Any]]:
    """The method that trained ``source`` and its ``method_kwargs``: from solo-learn's ``args.json`` beside it, our
    ``config.yaml`` above it; raises ExportError when neither says."""
    from omegaconf import OmegaConf

    from unmix_ext.runner.checkpoints import solo_args
    from unmix_ext.runner.rundir import RunDir
    from unmix_ext.runner.solo_format import args_json_recipe

    args = solo_args(source)
    found = args_json_recipe(args) if args is not None else {}
    if isinstance(found.get("method"), str):
        kwargs = found.get("method_kwargs")
        if not isinstance(kwargs, dict):  # before 1.0.6: the method's arguments sit among all the others
            kwargs = {key: args[key] for key in SOLO_REQUIRED_METHOD_KWARGS if key in args}
        return found["method"], dict(kwargs)
    run_dir = RunDir.find(source)
    if run_dir is None:
        raise ExportError(f"{source}: no {ARGS_FILE} beside it and no config.yaml above it says which method trained "
                          "it; solo-learn's commands build the method named in args.json")
    saved = OmegaConf.to_container(OmegaConf.load(run_dir.config))
    return saved["method"], dict(saved.get("method_kwargs") or {})


def solo_args_for(backbone: Backbone, checkpoint: dict[str, Any], source: Path) -> dict[str, Any]:
    """The ``args.json`` solo-learn main's ``main_knn.py`` / ``main_umap.py`` build the method from (its config
    layout since 1.0.6), for a checkpoint that holds only ``backbone``'s weights."""
    from solo.methods import METHODS

    from unmix_ext.methods.base import UNMIX_SUFFIX
    from unmix_ext.runner.solo_format import MAIN_DEFAULTS, args_json_of
    from unmix_ext.runner.solo_kwargs import solo_defaults

    method, given = _trained_method(checkpoint, source)
    method = method[: -len(UNMIX_SUFFIX)] if method.endswith(UNMIX_SUFFIX) else method
    defaults = solo_defaults(METHODS[method]) if method in METHODS else {}
    method_kwargs = {key: defaults[key] for key in SOLO_REQUIRED_METHOD_KWARGS if key in defaults}
    method_kwargs.update(given)
    classifier = checkpoint["state_dict"].get("classifier.weight")
    # what the backbone is, in main's keys (ARGS_JSON); solo-learn gives a ResNet the CIFAR stem exactly for its CIFAR
    # datasets, so the dataset is the stem's
    described = args_json_of({"method": SOLO_METHOD_STAND_INS.get(method, method), "backbone.name": backbone.encoder,
                              "backbone.kwargs": dict(backbone.model_kwargs),
                              "data.dataset": "cifar10" if backbone.cifar_stem else "imagenet"})
    # the rest are placeholders, not the run's settings: main's commands build the method from a complete config
    # and use only its backbone (and projector) from it
    return {
        "name": f"{method}-unmix-ext", **described,
        "method_kwargs": method_kwargs,
        "data": {**described["data"], "num_classes": int(classifier.shape[0]) if classifier is not None else 10,
                 "num_large_crops": 2, "num_small_crops": 0, "train_path": None, "val_path": None,
                 "format": "image_folder", "fraction": -1.0, "no_labels": False},
        "optimizer": {"name": "sgd", "batch_size": 256, "lr": 0.3, "classifier_lr": 0.1, "weight_decay": 1e-4,
                      "kwargs": {}, "exclude_bias_n_norm_wd": False},
        "scheduler": {"name": "none", "lr_decay_steps": None, "min_lr": 0.0,
                      "warmup_start_lr": MAIN_DEFAULTS["scheduler.warmup_start_lr"], "warmup_epochs": 0,
                      "interval": "step"},
        "momentum": {"base_tau": 0.99, "final_tau": 1.0, "classifier": False},
        "knn_eval": {"enabled": False, "k": 20, "distance_func": "euclidean"},
        "performance": {"disable_channel_last": False},
        "max_epochs": 1, "accumulate_grad_batches": 1,
        "unmix_ext": {"exported_from": str(source.resolve()), "trained_method": method,
                      "note": "data.dataset only decides solo-learn's ResNet stem (cifar10: the CIFAR stem)"},
    }


def _solo_projector(state_dict: dict[str, Any], which: str, args: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``which`` projector's tensors (keys without prefix) where solo-learn main builds the method's projector as
    the same ``nn.Sequential`` (positions ``<i>.<leaf>``); else nothing: main_knn's projector rows then need it."""
    if args["method"] != args["unmix_ext"]["trained_method"]:  # a stand-in method's head is another network
        return {}
    head = "projector." if which == "online" else "momentum_projector."
    projector = {key[len(head):]: value for key, value in state_dict.items() if key.startswith(head)}
    if not all(key.split(".")[0].isdigit() and key.count(".") == 1 for key in projector):
        return {}
    return projector


def write_solo_folder(backbone: Backbone, checkpoint: dict[str, Any], source: Path, out: Path, which: str) -> Path:
    """``out/backbone.ckpt`` and ``out/args.json`` in solo-learn main's layout; returns ``out``.

    The checkpoint holds the ``which`` backbone as solo-learn's ``backbone.*`` (every tensor) and, where solo-learn
    main builds the method's projector as the same Sequential, its projector as ``projector.*``; the backbone is what
    ``main_linear.py`` loads as its ``pretrained_feature_extractor``, and ``main_knn.py`` / ``main_umap.py``
    load from the folder (the method ``args.json`` names, then ``load_from_checkpoint(strict=False)``).
    """
    if is_timm_name(backbone.encoder):
        raise ExportError(f"{source}: solo-learn builds only its own backbones ({backbone.encoder} is a timm model "
                          "it does not know); export --format timm instead")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a folder; --format solo writes a folder")
    args = solo_args_for(backbone, checkpoint, source)
    import pytorch_lightning as pl

    state = {f"backbone.{key}": value for key, value in backbone.state_dict.items()}
    projector = _solo_projector(checkpoint["state_dict"], which, args)
    if projector:  # solo-learn builds the same Sequential; the dims main's method asserts follow the weights
        state.update({f"projector.{key}": value for key, value in projector.items()})
        linears = sorted(int(key.split(".")[0]) for key, value in projector.items() if value.dim() == 2)
        args["method_kwargs"].update(proj_hidden_dim=int(projector[f"{linears[0]}.weight"].shape[0]),
                                     proj_output_dim=int(projector[f"{linears[-1]}.weight"].shape[0]))
    args["unmix_ext"]["holds"] = "backbone and projector" if projector else "backbone"
    saved = {"state_dict": state, "epoch": checkpoint.get("epoch", 0), "global_step": checkpoint.get("global_step", 0),
             "pytorch-lightning_version": pl.__version__}
    atomic_write(out / SOLO_CHECKPOINT, lambda file: torch.save(saved, file))
    atomic_write_text(out / ARGS_FILE, json.dumps(args, indent=2) + "\n")
    return out


def _sidecar(backbone: Backbone, fmt: str, which: str, source: Path) -> dict[str, Any]:
    """What a user needs to build the model an export fits."""
    info = {
        "format": fmt, "encoder": backbone.encoder, "cifar_stem": backbone.cifar_stem,
        "model_kwargs": backbone.model_kwargs, "which": which, "checkpoint": str(source.resolve()),
    }
    info.update(FORMATS[fmt].notes(backbone))
    return info


def build_backbone(info: dict[str, Any]) -> nn.Module:
    """An untrained module with the architecture a sidecar (``OUT.json``) describes; its ``forward`` gives (B, D) features."""
    if not FORMATS[info["format"]].is_module:
        raise ExportError(f"a {info['format']} export loads in {info['format']} (MODEL.WEIGHTS), not as a torch module")
    return build_network(info["encoder"], info["cifar_stem"], info["model_kwargs"])


def backbone_from_export(path: str | Path) -> nn.Module:
    """The backbone of a torchvision or timm export, rebuilt from its sidecar ``PATH.json`` and loaded strictly."""
    path = Path(path)
    sidecar = Path(f"{path}{SIDECAR_SUFFIX}")
    if not sidecar.is_file():
        raise ExportError(f"{path}: no sidecar {sidecar.name} next to it; was it written by python -m unmix_ext.export?")
    model = build_backbone(json.loads(sidecar.read_text()))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model


def _check_loads(info: dict[str, Any], exported: Any, source: str | Path) -> None:
    """Raises unless the model the sidecar describes accepts the exported weights strictly."""
    if not FORMATS[info["format"]].is_module:
        return
    try:
        # on the meta device the module costs no memory and no initialisation; keys and shapes are still checked
        with torch.device("meta"):
            model = build_backbone(info)
        model.load_state_dict(exported, strict=True, assign=True)
    except RuntimeError as err:
        raise ExportError(f"{source}: the {info['format']} model does not accept the weights ({short_message(err)})") from None


def export(checkpoint: str | Path, fmt: str, out: str | Path, which: str = "online") -> Path:
    """Writes the ``which`` backbone of ``checkpoint`` in format ``fmt`` to ``out``, and the sidecar ``out.json``
    (``solo``: the folder ``out`` holding a ``.ckpt`` and its ``args.json``, :func:`write_solo_folder`).

    Every file is written atomically (:mod:`unmix_ext.runner.files`). Returns ``out``.
    """
    if fmt not in FORMAT_NAMES:
        raise ExportError(f"format: {fmt!r} is not one of {sorted(FORMAT_NAMES)}")
    if which not in WHICH:
        raise ExportError(f"which: {which!r} is not one of {sorted(WHICH)}")
    source, out = Path(checkpoint), Path(out)
    if out.resolve() == source.resolve() or out.resolve() == source.resolve().parent:
        raise ExportError(f"{out}: the output would overwrite the checkpoint or its folder; give another OUT path")
    checkpoint_data = read_checkpoint(source, EXPORT_ADVICE)
    backbone = read_backbone(source, which, checkpoint_data)
    if fmt == SOLO_FORMAT:
        return write_solo_folder(backbone, checkpoint_data, source, out, which)
    exported = FORMATS[fmt].convert(backbone, source)
    info = _sidecar(backbone, fmt, which, source)
    _check_loads(info, exported, source)
    atomic_write(out, lambda file: FORMATS[fmt].save(exported, file))
    atomic_write_text(f"{out}{SIDECAR_SUFFIX}", json.dumps(info, indent=2) + "\n")
    return out


def export_command(checkpoint: str, out: str, fmt: str, which: str = "online") -> Path:
    """What ``python -m unmix_ext.export`` does: :func:`export`, then a line saying what it wrote."""
    written = export(checkpoint, fmt, out, which)
    if fmt == SOLO_FORMAT:
        print(f"wrote {written}/{SOLO_CHECKPOINT} and {written}/{ARGS_FILE} (solo-learn's layout, {which} backbone)")
    else:
        print(f"wrote {written} ({fmt}, {which} backbone) and {written}{SIDECAR_SUFFIX}")
    return written
