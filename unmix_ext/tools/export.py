"""The pretrained backbone of a training checkpoint, exported for torchvision, timm or detectron2.

As a command::

    python -m unmix_ext.export CKPT --format torchvision|timm|detectron2 OUT [--which online|momentum]

``CKPT`` is a ``.ckpt`` that ``pytorch_lightning.Trainer`` wrote for any
method of ``solo.methods.METHODS`` (solo-learn's or an Un-Mix variant). Its
``state_dict`` holds the online backbone under ``encoder.`` and, for methods
with one, the momentum backbone under ``momentum_encoder.``; ``--which``
picks one (default ``online``). Projector, predictor, classifier and queues
are not exported. The architecture of solo-learn's own encoders is read from
the weights themselves (solo-learn 1.0.2 does not save hyper-parameters; where a
checkpoint has ``hyper_parameters["encoder"]`` or ``["backbone_args"]["cifar"]``,
they must agree with the weights); a ``timm/<model>`` encoder is named by the
checkpoint itself (``unmix_ext.backbones.CHECKPOINT_ENTRY``).

Formats (every one also writes ``OUT.json``, a sidecar naming the format,
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from torch import nn

from unmix_ext.backbones import CHECKPOINT_ENTRY, is_timm_name, timm_model_name, use_cifar_stem
from unmix_ext.errors import CommandError
from unmix_ext.runner.files import atomic_write, atomic_write_text, read_checkpoint, short_message
from unmix_ext.runner.guard import CheckpointError

#: the state_dict prefix of each backbone a solo-learn method may hold
WHICH = {"online": "encoder.", "momentum": "momentum_encoder."}
SIDECAR_SUFFIX = ".json"
#: solo-learn's resnets, by (bottleneck blocks?, blocks per stage)
RESNET_LAYOUTS = {(False, (2, 2, 2, 2)): "resnet18", (True, (3, 4, 6, 3)): "resnet50"}
#: kernel size of conv1: solo-learn's CIFAR stem (3x3, stride 1, no max-pool) or ImageNet's (7x7, stride 2)
CIFAR_STEM_KERNEL, IMAGENET_STEM_KERNEL = 3, 7
#: solo-learn's ViTs by embedding width, and the timm model each one is
VIT_WIDTHS = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large"}
#: solo-learn's Swins by (embedding width, blocks in stage 3)
SWIN_SHAPES = {(96, 6): "swin_tiny", (96, 18): "swin_small", (128, 18): "swin_base", (192, 18): "swin_large"}
TIMM_NAMES = {
    **{name: f"{name}_patch16_224" for name in VIT_WIDTHS.values()},
    **{name: f"{name}_patch4_window7_224" for name in SWIN_SHAPES.values()},
}


#: what a user can do about a checkpoint that cannot be read
EXPORT_ADVICE = ("give the .ckpt a training run wrote: copy it again from the run, or pick another of its "
                 "checkpoints (RUN_DIR/checkpoints/)")


class ExportError(CommandError):
    """A checkpoint or a request the exporter cannot serve; the message is one line naming the file."""


@dataclass(frozen=True)
class Backbone:
    """One encoder of a checkpoint: solo-learn's name for it, how it is built, its weights.

    Attributes:
        encoder: solo-learn's encoder name, ``"resnet18"``, ``"resnet50"``, ``"vit_small"``, ``"swin_tiny"``...,
            or ``"timm/<model>"``.
        cifar_stem: ResNets only: conv1 is solo-learn's CIFAR stem (3x3, stride 1, padding 2; no max-pool).
        model_kwargs: timm arguments beyond the name (``patch_size`` for ViTs, ``window_size`` for Swins,
            what a ``timm/<model>`` encoder was built with).
        state_dict: the weights, keys without the ``encoder.`` / ``momentum_encoder.`` prefix.
    """

    encoder: str
    cifar_stem: bool
    model_kwargs: dict[str, int]
    state_dict: dict[str, torch.Tensor] = field(repr=False)

    @property
    def is_resnet(self) -> bool:
        return self.encoder.startswith("resnet")


def extract_backbone(checkpoint: dict[str, Any], which: str = "online", source: str | Path = "checkpoint") -> Backbone:
    """The ``which`` encoder of a loaded Lightning checkpoint, its architecture read from its weights.

    Args:
        checkpoint: what :func:`read_checkpoint` returns.
        which: ``"online"`` (``encoder.*``) or ``"momentum"`` (``momentum_encoder.*``).
        source: the checkpoint's path, for error messages.
    """
    if which not in WHICH:
        raise ExportError(f"which: {which!r} is not one of {sorted(WHICH)}")
    prefix = WHICH[which]
    state = {key[len(prefix):]: value for key, value in checkpoint["state_dict"].items() if key.startswith(prefix)}
    if not state:
        hint = "this method has no momentum encoder; export --which online" if which == "momentum" else (
            "is it a solo-learn / unmix-ext pretraining checkpoint?")
        raise ExportError(f"{source}: no '{prefix}*' weights in its state_dict; {hint}")
    declared = checkpoint.get(CHECKPOINT_ENTRY)
    if declared is not None:  # a timm model, named by the run that trained it
        kwargs = dict(declared["kwargs"])
        return Backbone(declared["name"], bool(kwargs.pop("cifar", False)), kwargs, state)
    backbone = _describe(state, source)
    _check_declared(backbone, checkpoint.get("hyper_parameters") or {}, source)
    return backbone


def _describe(state: dict[str, torch.Tensor], source: str | Path) -> Backbone:
    """Names the architecture of an encoder state_dict (solo-learn 1.0.2's ResNets, ViTs and Swins)."""
    if "conv1.weight" in state and "layer4.0.conv1.weight" in state:
        bottleneck = "layer1.0.conv3.weight" in state
        blocks = tuple(
            len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")}) for stage in range(1, 5)
        )
        encoder = RESNET_LAYOUTS.get((bottleneck, blocks))
        kernel = state["conv1.weight"].shape[-1]
        if encoder is None or kernel not in (CIFAR_STEM_KERNEL, IMAGENET_STEM_KERNEL):
            raise ExportError(
                f"{source}: a ResNet with {blocks} blocks per stage (bottleneck: {bottleneck}) and a {kernel}x{kernel} "
                "stem; solo-learn 1.0.2 builds only resnet18 and resnet50 with a 3x3 (CIFAR) or 7x7 stem"
            )
        return Backbone(encoder, kernel == CIFAR_STEM_KERNEL, {}, state)
    if "cls_token" in state and "blocks.0.attn.qkv.weight" in state:
        width = state["cls_token"].shape[-1]
        encoder = VIT_WIDTHS.get(width)
        kwargs = {"patch_size": state["patch_embed.proj.weight"].shape[-1]}
        shape = f"width {width}"
    elif "layers.0.blocks.0.attn.relative_position_bias_table" in state:
        width = state["patch_embed.proj.weight"].shape[0]
        stage3 = len({key.split(".")[3] for key in state if key.startswith("layers.2.blocks.")})
        encoder = SWIN_SHAPES.get((width, stage3))
        # the bias table has one row per relative offset: (2 * window - 1) ** 2
        rows = state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
        kwargs = {"window_size": (round(rows ** 0.5) + 1) // 2}
        shape = f"width {width}, {stage3} blocks in stage 3"
    else:
        raise ExportError(f"{source}: the encoder is neither a ResNet, a ViT nor a Swin of solo-learn 1.0.2")
    if encoder is None:
        raise ExportError(f"{source}: a transformer of {shape}, which is none of solo-learn's {sorted(TIMM_NAMES)}")
    return Backbone(encoder, False, kwargs, state)


def _check_declared(backbone: Backbone, hparams: dict[str, Any], source: str | Path) -> None:
    """Raises if the checkpoint's saved hyper-parameters name another encoder or stem than its weights."""
    declared = hparams.get("encoder")
    if declared is not None and declared != backbone.encoder:
        raise ExportError(f"{source}: hyper_parameters say encoder {declared!r}, the weights are a {backbone.encoder}")
    cifar = (hparams.get("backbone_args") or {}).get("cifar")
    if backbone.is_resnet and cifar is not None and bool(cifar) != backbone.cifar_stem:
        raise ExportError(
            f"{source}: hyper_parameters say backbone_args.cifar={cifar}, but conv1 is "
            f"{'the CIFAR' if backbone.cifar_stem else 'the ImageNet'} stem"
        )


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
    name = timm_model_name(backbone.encoder) if is_timm_name(backbone.encoder) else TIMM_NAMES.get(
        backbone.encoder, backbone.encoder)
    return {**_torchvision_notes(backbone), "timm_name": name}


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


def _build_torchvision(info: dict[str, Any]) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, info["encoder"])()
    model.fc = nn.Identity()
    return model


def _build_timm(info: dict[str, Any]) -> nn.Module:
    import timm

    return timm.create_model(info["timm_name"], num_classes=0, **info["model_kwargs"])


@dataclass(frozen=True)
class Format:
    """How one format converts a backbone, writes it, what its sidecar adds, and (torchvision, timm) its module."""

    convert: Callable[[Backbone, str | Path], Any]
    save: Callable[[Any, BinaryIO], None]
    notes: Callable[[Backbone], dict[str, Any]]
    build: Callable[[dict[str, Any]], nn.Module] | None


FORMATS = {
    "torchvision": Format(_resnet_weights, _save_torch, _torchvision_notes, _build_torchvision),
    "timm": Format(_timm_weights, _save_torch, _timm_notes, _build_timm),
    "detectron2": Format(_detectron2_checkpoint, _save_pickle, _detectron2_notes, None),
}


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
    build = FORMATS[info["format"]].build
    if build is None:
        raise ExportError(f"a {info['format']} export loads in {info['format']} (MODEL.WEIGHTS), not as a torch module")
    model = build(info)
    return use_cifar_stem(model) if info["cifar_stem"] else model


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
    if FORMATS[info["format"]].build is None:
        return
    try:
        # on the meta device the module costs no memory and no initialisation; keys and shapes are still checked
        with torch.device("meta"):
            model = build_backbone(info)
        model.load_state_dict(exported, strict=True, assign=True)
    except RuntimeError as err:
        raise ExportError(f"{source}: the {info['format']} model does not accept the weights ({short_message(err)})") from None


def export(checkpoint: str | Path, fmt: str, out: str | Path, which: str = "online") -> Path:
    """Writes the ``which`` backbone of ``checkpoint`` in format ``fmt`` to ``out``, and the sidecar ``out.json``.

    Both files are written atomically (:mod:`unmix_ext.runner.files`). Returns ``out``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format: {fmt!r} is not one of {sorted(FORMATS)}")
    source, out = Path(checkpoint), Path(out)
    if out.resolve() == source.resolve():
        raise ExportError(f"{out}: the output would overwrite the checkpoint; give another OUT path")
    backbone = extract_backbone(read_checkpoint(source, EXPORT_ADVICE), which, source)
    exported = FORMATS[fmt].convert(backbone, source)
    info = _sidecar(backbone, fmt, which, source)
    _check_loads(info, exported, source)
    atomic_write(out, lambda file: FORMATS[fmt].save(exported, file))
    atomic_write_text(f"{out}{SIDECAR_SUFFIX}", json.dumps(info, indent=2) + "\n")
    return out


def export_command(checkpoint: str, out: str, fmt: str, which: str = "online") -> Path:
    """What ``python -m unmix_ext.export`` does: :func:`export`, then a line saying what it wrote."""
    written = export(checkpoint, fmt, out, which)
    print(f"wrote {written} ({fmt}, {which} encoder) and {written}{SIDECAR_SUFFIX}")
    return written
