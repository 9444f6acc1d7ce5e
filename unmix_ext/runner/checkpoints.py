"""The backbones of a pretraining checkpoint of any solo-learn release or of ours, and their architecture.

Where the weights are (``state_dict`` prefixes, :data:`PREFIXES`):

- solo-learn 1.0.2 and unmix-ext: ``encoder.*`` and, for methods with one, ``momentum_encoder.*``;
- solo-learn 1.0.3 and later: ``backbone.*`` and ``momentum_backbone.*``.

What the backbone is (:func:`read_backbone`), first found first: ``args.json`` beside the
checkpoint (solo-learn's ``Checkpointer`` writes it: ``backbone.name``, ``backbone.kwargs``,
``data.dataset`` since 1.0.6; ``encoder`` or ``backbone``, ``backbone_args``, ``dataset``
before), our run's ``config.yaml`` in a folder above it, the ``timm/<model>`` entry our runs
add to the checkpoint (:data:`unmix_ext.backbones.CHECKPOINT_ENTRY`), and last the tensors'
shapes (solo-learn's ResNet-18/50 with the CIFAR or ImageNet stem, its ViTs and Swins). A
declared architecture must agree with the weights, and so must solo-learn 1.0.2's
``hyper_parameters`` (``encoder``, ``backbone_args.cifar``) where a checkpoint has them.
The stem of a solo-learn ResNet is the CIFAR one exactly when ``data.dataset`` is
``cifar10`` or ``cifar100`` (solo-learn's rule), which conv1's kernel confirms.

Every file is read as data only (:func:`unmix_ext.runner.files.read_checkpoint`). Every
mistake is one :class:`~unmix_ext.runner.guard.CheckpointError` line naming the file.

Example::

    backbone = read_backbone("trained_models/byol/abcd1234/byol-abcd1234-ep=99.ckpt", which="momentum")
    backbone.encoder, backbone.cifar_stem, backbone.source      # 'resnet18', True, 'args.json'
    network = backbone.network()                                  # its weights loaded strictly
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unmix_ext.backbones import CHECKPOINT_ENTRY, build_timm_encoder, is_timm_name, use_cifar_stem
from unmix_ext.runner.files import read_checkpoint, short_message
from unmix_ext.runner.guard import CheckpointError
from unmix_ext.runner.solo_format import args_json_recipe, find

#: the state_dict prefixes of each backbone, newest solo-learn naming first
PREFIXES = {"online": ("backbone.", "encoder."), "momentum": ("momentum_backbone.", "momentum_encoder.")}
#: the file solo-learn's Checkpointer writes beside its checkpoints: the run's whole config
ARGS_FILE = "args.json"
#: solo-learn gives its ResNets the CIFAR stem for these datasets, and only these
CIFAR_DATASETS = ("cifar10", "cifar100")
#: what a user can do about a checkpoint that cannot be read
CHECKPOINT_ADVICE = "give a .ckpt that a solo-learn or unmix-ext pretraining run wrote"

#: solo-learn's resnets, by (bottleneck blocks?, blocks per stage)
RESNET_LAYOUTS = {(False, (2, 2, 2, 2)): "resnet18", (True, (3, 4, 6, 3)): "resnet50"}
#: kernel size of conv1: solo-learn's CIFAR stem (3x3, stride 1, no max-pool) or ImageNet's (7x7, stride 2)
CIFAR_STEM_KERNEL, IMAGENET_STEM_KERNEL = 3, 7
#: solo-learn's ViTs by embedding width
VIT_WIDTHS = {192: "vit_tiny", 384: "vit_small", 768: "vit_base", 1024: "vit_large"}
#: solo-learn's Swins by (embedding width, blocks in stage 3)
SWIN_SHAPES = {(96, 6): "swin_tiny", (96, 18): "swin_small", (128, 18): "swin_base", (192, 18): "swin_large"}
#: the timm model each of solo-learn's transformers is
TIMM_NAMES = {
    **{name: f"{name}_patch16_224" for name in VIT_WIDTHS.values()},
    **{name: f"{name}_patch4_window7_224" for name in SWIN_SHAPES.values()},
}


@dataclass(frozen=True)
class Backbone:
    """One backbone of a checkpoint: solo-learn's name for it, how it is built, its weights.

    Attributes:
        encoder: solo-learn's backbone name, ``"resnet18"``, ``"resnet50"``, ``"vit_small"``, ``"swin_tiny"``...,
            or ``"timm/<model>"``.
        cifar_stem: ResNets only: conv1 is solo-learn's CIFAR stem (3x3, stride 1, padding 2; no max-pool).
        model_kwargs: timm arguments beyond the name (``patch_size`` for ViTs, ``window_size`` for Swins,
            what a ``timm/<model>`` backbone was built with).
        state_dict: the weights, keys without their prefix (``conv1.weight``...).
        source: where the architecture was read: ``args.json``, ``config.yaml``, ``checkpoint`` or ``weights``.
    """

    encoder: str
    cifar_stem: bool
    model_kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    source: str = "weights"

    @property
    def is_resnet(self) -> bool:
        return self.encoder.startswith("resnet")

    @property
    def timm_name(self) -> str:
        """The name ``timm.create_model`` builds it by (a ResNet's is timm's ResNet of the same name)."""
        if is_timm_name(self.encoder):
            return self.encoder.split("/", 1)[1]
        return TIMM_NAMES.get(self.encoder, self.encoder)

    def untrained(self) -> nn.Module:
        """The architecture, untrained; ``forward`` maps images (B, 3, S, S) to features (B, D)."""
        return build_network(self.encoder, self.cifar_stem, self.model_kwargs)

    def network(self) -> nn.Module:
        """The architecture with these weights, loaded strictly (every tensor filled), in eval mode."""
        model = self.untrained()
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"checkpoint: the {self.encoder} backbone (from {self.source}) does not accept its "
                                  f"weights ({short_message(err, limit=200)})") from None
        return model.eval()


def build_network(encoder: str, cifar_stem: bool, model_kwargs: dict[str, Any]) -> nn.Module:
    """An untrained backbone by solo-learn's name: a torchvision ResNet without ``fc`` (CIFAR stem when asked),
    one of solo-learn's timm transformers, or ``timm/<model>``; ``forward`` gives (B, D) features."""
    if is_timm_name(encoder):
        return build_timm_encoder(encoder, cifar=cifar_stem, **model_kwargs)
    if encoder.startswith("resnet"):
        import torchvision

        model = getattr(torchvision.models, encoder)()
        model.fc = nn.Identity()
        return use_cifar_stem(model) if cifar_stem else model
    import timm

    return timm.create_model(TIMM_NAMES[encoder], num_classes=0, **model_kwargs)


@dataclass(frozen=True)
class Declared:
    """What a file beside or above a checkpoint says the backbone is; ``source`` names that file."""

    encoder: str
    cifar_stem: bool | None
    kwargs: dict[str, Any]
    source: str


def solo_args(checkpoint: Path) -> dict[str, Any] | None:
    """The ``args.json`` beside ``checkpoint`` (solo-learn's saved config), or None when there is none."""
    path = Path(checkpoint).parent / ARGS_FILE
    if not path.is_file():
        return None
    try:
        args = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint: {path} cannot be read ({short_message(err)}); it should be the "
                              "args.json solo-learn wrote beside the checkpoint") from None
    if not isinstance(args, dict):
        raise CheckpointError(f"checkpoint: {path} is not a mapping of solo-learn's arguments")
    return args


def _declared_by_args(args: dict[str, Any], path: Path) -> Declared | None:
    """The backbone ``args.json`` names, in the layout of any solo-learn release (read through
    :data:`~unmix_ext.runner.solo_format.ARGS_JSON`), or None if it names none."""
    found = args_json_recipe(args)
    name, kwargs = find(found, "backbone.name"), dict(find(found, "backbone.kwargs") or {})
    if not isinstance(name, str):
        return None
    cifar = kwargs.pop("cifar", None)
    dataset = find(found, "data.dataset")
    if cifar is None and dataset is not None:
        cifar = dataset in CIFAR_DATASETS
    return Declared(name, None if cifar is None else bool(cifar), kwargs, str(path))


def _declared_by_run(checkpoint: Path) -> Declared | None:
    """The backbone our run's ``config.yaml`` (in a folder above ``checkpoint``) names, or None.

    Its stem is left to the weights: our runs give the CIFAR stem to every dataset of small images.
    """
    from omegaconf import OmegaConf

    from unmix_ext.runner.rundir import RunDir

    run_dir = RunDir.find(checkpoint)
    if run_dir is None:
        return None
    backbone = OmegaConf.to_container(OmegaConf.load(run_dir.config)).get("backbone") or {}
    kwargs = dict(backbone.get("kwargs") or {})
    cifar = kwargs.pop("cifar", None)
    return Declared(backbone.get("name", ""), cifar, kwargs, str(run_dir.config))


def backbone_weights(state_dict: dict[str, Any], which: str, source: str | Path) -> dict[str, torch.Tensor]:
    """The ``which`` backbone's tensors of a checkpoint's ``state_dict``, keys without their prefix."""
    if which not in PREFIXES:
        raise CheckpointError(f"which: {which!r} is not one of {sorted(PREFIXES)}")
    for prefix in PREFIXES[which]:
        state = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
        if state:
            return state
    names = " or ".join(f"'{prefix}*'" for prefix in PREFIXES[which])
    if which == "momentum" and any(key.startswith(PREFIXES["online"]) for key in state_dict):
        raise CheckpointError(f"{source}: no {names} weights in its state_dict: this method has no momentum "
                              "backbone; use --which online")
    raise CheckpointError(f"{source}: no {names} weights in its state_dict; is it a solo-learn or unmix-ext "
                          "pretraining checkpoint?")


def read_backbone(path: str | Path, which: str = "online", checkpoint: dict[str, Any] | None = None) -> Backbone:
    """The ``which`` backbone (``online`` or ``momentum``) of the checkpoint at ``path``, its architecture found as
    the module docstring says. ``checkpoint``: the file already read by :func:`read_checkpoint`, if it was."""
    path = Path(path)
    if checkpoint is None:
        checkpoint = read_checkpoint(path, CHECKPOINT_ADVICE)
    state = backbone_weights(checkpoint["state_dict"], which, path)
    args = solo_args(path)
    declared = _declared_by_args(args, path.parent / ARGS_FILE) if args is not None else _declared_by_run(path)
    entry = checkpoint.get(CHECKPOINT_ENTRY)
    if entry is not None and (declared is None or declared.encoder != entry["name"]):
        kwargs = dict(entry["kwargs"])  # a timm model, named by the run that trained it
        declared = Declared(entry["name"], bool(kwargs.pop("cifar", False)), kwargs, "checkpoint")
    if declared is not None and is_timm_name(declared.encoder):
        backbone = Backbone(declared.encoder, bool(declared.cifar_stem), declared.kwargs, state, declared.source)
    elif declared is not None and declared.encoder not in (*RESNET_LAYOUTS.values(), *TIMM_NAMES):
        raise CheckpointError(f"{path}: {declared.source} names backbone {declared.encoder!r}, which unmix-ext does "
                              f"not rebuild; it rebuilds {', '.join([*RESNET_LAYOUTS.values(), *TIMM_NAMES])} "
                              "and timm/<model>")
    else:
        backbone = _describe(state, path)
        if declared is not None:
            backbone = _agreed(declared, backbone, path)
    _check_hyper_parameters(backbone, checkpoint.get("hyper_parameters"), path)
    return backbone


def _agreed(declared: Declared, weights: Backbone, path: Path) -> Backbone:
    """The declared solo-learn backbone, once its name and stem agree with what the weights are."""
    if declared.encoder != weights.encoder:
        raise CheckpointError(f"{path}: {declared.source} names backbone {declared.encoder!r}, but the weights are a "
                              f"{weights.encoder}")
    if weights.is_resnet and declared.cifar_stem is not None and declared.cifar_stem != weights.cifar_stem:
        said = "the CIFAR stem" if declared.cifar_stem else "the ImageNet stem"
        raise CheckpointError(f"{path}: {declared.source} implies {said}, but conv1 is "
                              f"{'the CIFAR' if weights.cifar_stem else 'the ImageNet'} stem")
    # a ResNet's keywords (zero_init_residual) change how it starts, not what it is
    kwargs = {} if weights.is_resnet else {**weights.model_kwargs, **declared.kwargs}
    source = ARGS_FILE if declared.source.endswith(ARGS_FILE) else "config.yaml"
    return Backbone(weights.encoder, weights.cifar_stem, kwargs, weights.state_dict, source)


def _describe(state: dict[str, torch.Tensor], source: str | Path) -> Backbone:
    """Names the architecture of a backbone state_dict (solo-learn's ResNets, ViTs and Swins)."""
    if "conv1.weight" in state and "layer4.0.conv1.weight" in state:
        bottleneck = "layer1.0.conv3.weight" in state
        blocks = tuple(
            len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")}) for stage in range(1, 5)
        )
        encoder = RESNET_LAYOUTS.get((bottleneck, blocks))
        kernel = state["conv1.weight"].shape[-1]
        if encoder is None or kernel not in (CIFAR_STEM_KERNEL, IMAGENET_STEM_KERNEL):
            raise CheckpointError(
                f"{source}: a ResNet with {blocks} blocks per stage (bottleneck: {bottleneck}) and a {kernel}x{kernel} "
                "stem; solo-learn builds only resnet18 and resnet50 with a 3x3 (CIFAR) or 7x7 stem"
            )
        return Backbone(encoder, kernel == CIFAR_STEM_KERNEL, {}, state)
    if "cls_token" in state and "blocks.0.attn.qkv.weight" in state:
        width = state["cls_token"].shape[-1]
        encoder = VIT_WIDTHS.get(width)
        patch = state["patch_embed.proj.weight"].shape[-1]
        # one position per patch of the input side, plus the class token's
        side = round((state["pos_embed"].shape[1] - 1) ** 0.5) * patch
        kwargs = {"patch_size": patch, "img_size": side}
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
        raise CheckpointError(f"{source}: the backbone is neither a ResNet, a ViT nor a Swin of solo-learn, and no "
                              f"{ARGS_FILE} beside it or config.yaml above it names it")
    if encoder is None:
        raise CheckpointError(f"{source}: a transformer of {shape}, which is none of solo-learn's {sorted(TIMM_NAMES)}")
    return Backbone(encoder, False, kwargs, state)


def _check_hyper_parameters(backbone: Backbone, hparams: Any, source: str | Path) -> None:
    """Raises if solo-learn 1.0.2's saved hyper-parameters name another backbone or stem than the weights."""
    if not isinstance(hparams, dict):
        return
    declared = hparams.get("encoder")
    if isinstance(declared, str) and declared != backbone.encoder:
        raise CheckpointError(f"{source}: hyper_parameters say encoder {declared!r}, the weights are a "
                              f"{backbone.encoder}")
    backbone_args = hparams.get("backbone_args")
    cifar = backbone_args.get("cifar") if isinstance(backbone_args, dict) else None
    if backbone.is_resnet and cifar is not None and bool(cifar) != backbone.cifar_stem:
        raise CheckpointError(
            f"{source}: hyper_parameters say backbone_args.cifar={cifar}, but conv1 is "
            f"{'the CIFAR' if backbone.cifar_stem else 'the ImageNet'} stem"
        )
