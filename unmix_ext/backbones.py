"""Encoders beyond solo-learn 1.0.2's table: any timm model, named ``timm/<model>``.

solo-learn 1.0.2 builds resnet18/50, ViTs and Swins only. The ``timm_backbones`` patch
lets every method (and every Un-Mix variant) take ``encoder="timm/<model>"``, built here
as ``timm.create_model(<model>, num_classes=0, **kwargs)``: features are what the model
gives before its classifier, ``(B, model.num_features)``, and solo-learn's heads are
built for that width.

``cifar=True`` gives a ResNet-style model (a ``conv1`` and a ``maxpool``) the stem that
solo-learn gives its own ResNets for small images: a 3x3 stride-1 ``conv1`` (padding 2,
as solo's) and no max-pool, so a 32 px image is not cut to 8 px before the first block.

Example::

    model = METHODS["simclr_unmix"](encoder="timm/resnet18",
                                    backbone_args={"cifar": True, "channels": [32, 64, 128, 256]}, ...)
"""
from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

TIMM_PREFIX = "timm/"


def is_timm_name(encoder: str) -> bool:
    return encoder.startswith(TIMM_PREFIX)


def timm_model_name(encoder: str) -> str:
    """``"timm/resnet18"`` -> ``"resnet18"``, the name ``timm.create_model`` takes."""
    return encoder[len(TIMM_PREFIX):]


def unknown_timm_model(encoder: str) -> str | None:
    """Why ``encoder`` (``timm/<model>``) cannot be built, with close names; None when timm knows it."""
    import timm

    name = timm_model_name(encoder)
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
    return f"{encoder!r} is not a timm model{hint}"


def use_cifar_stem(model: nn.Module, stride: int = 1, width: int | None = None) -> nn.Module:
    """Replaces a ResNet-style stem by solo-learn's CIFAR stem, in place; returns ``model``.

    ``stride`` 2 (``stem_stride: 2``) halves the side instead, still without max-pool: a 28 px
    image gives the first stage 14x14 maps (the standard stem gives 7x7, solo's 30x30).
    ``width`` (``stem_width``): the stem's output channels, else the model's (64 for timm's plain
    stem, whatever its ``stem_width``); the first block then takes that many channels, with a
    1x1 projection only where they differ from its output's. At stride 1 the stem's maps are the
    largest in the network, so a narrow network spends most of its step there unless it is narrowed too.

    Raises:
        ValueError: the model has no plain ``conv1`` convolution and ``maxpool`` to replace.
    """
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ValueError(f"cifar: the CIFAR stem replaces a ResNet's conv1 and maxpool; {type(model).__name__} "
                         "has no such stem (set backbone.kwargs.cifar: false, or size the model for small "
                         "images through its own arguments, e.g. img_size and patch_size for a ViT)")
    width = width or conv.out_channels
    model.conv1 = nn.Conv2d(conv.in_channels, width, kernel_size=3, stride=stride,
                            padding=2 if stride == 1 else 1, bias=False)
    model.maxpool = nn.Identity()
    if width != conv.out_channels:
        model.bn1 = nn.BatchNorm2d(width)
        _first_block_takes(model.layer1[0], width)
    return model


def _first_block_takes(block: nn.Module, channels: int) -> None:
    """Rebuilds a ResNet block's input side (``conv1``, ``downsample``) for ``channels`` input channels."""
    first = block.conv1
    block.conv1 = nn.Conv2d(channels, first.out_channels, kernel_size=first.kernel_size, stride=first.stride,
                            padding=first.padding, bias=False)
    out_channels = block.downsample[0].out_channels if block.downsample is not None else channels
    block.downsample = None if channels == out_channels and first.stride == (1, 1) else nn.Sequential(
        nn.Conv2d(channels, out_channels, kernel_size=1, stride=first.stride, bias=False), nn.BatchNorm2d(out_channels))


def build_timm_encoder(encoder: str, cifar: bool = False, stem_stride: int = 1, stem_width: int | None = None,
                       **kwargs: Any) -> nn.Module:
    """The timm model ``encoder`` names, without its classifier (forward gives (B, num_features)).

    ``stem_stride`` (1 or 2): the stride of the CIFAR stem's convolution, with ``cifar`` only.
    ``stem_width``: the CIFAR stem's channels (:func:`use_cifar_stem`); without ``cifar``, timm's own
    argument, which only its deep stems (``stem_type``) read: a plain stem is refused rather than left at 64.

    Raises:
        ValueError: timm has no such model, ``cifar`` on a model without a ResNet stem, a bad ``stem_stride``,
            or ``stem_width`` where nothing would read it.
    """
    import timm

    reason = unknown_timm_model(encoder)
    if reason is not None:
        raise ValueError(f"encoder: {reason}")
    if stem_stride not in (1, 2) or (stem_stride != 1 and not cifar):
        raise ValueError(f"stem_stride: 1 or 2, and 2 with cifar: true only (the CIFAR stem's stride); got "
                         f"{stem_stride!r} with cifar: {cifar}")
    if stem_width is not None and (not isinstance(stem_width, int) or stem_width < 1):
        raise ValueError(f"stem_width: a number of channels >= 1, got {stem_width!r}")
    if stem_width is not None and not cifar:
        if not kwargs.get("stem_type"):
            raise ValueError("stem_width: timm's plain stem is 64 channels whatever it says; set cifar: true (the "
                             "CIFAR stem takes it) or a deep stem_type")
        kwargs["stem_width"] = stem_width
    model = timm.create_model(timm_model_name(encoder), pretrained=False, num_classes=0, **kwargs)
    return use_cifar_stem(model, stem_stride, stem_width) if cifar else model


#: the entry of a training checkpoint that names its timm encoder, ``{"name": "timm/<model>", "kwargs": {...}}``
#: (solo-learn saves no hyper-parameters, and a timm model cannot be told from its weights alone)
CHECKPOINT_ENTRY = "unmix_ext_encoder"


# ---- Vision Transformers: what MoCo V3 and MAE need of solo-learn 1.0.2's timm ViTs -------------
def is_vit_name(encoder: str) -> bool:
    """Whether a ``backbone.name`` names a ViT: solo's ``vit_*`` or ``timm/vit_*``."""
    return (timm_model_name(encoder) if is_timm_name(encoder) else encoder).startswith("vit")


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a timm VisionTransformer (solo's ``vit_*`` and ``timm/vit_*`` both are)."""
    from timm.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def is_resnet(model: nn.Module) -> bool:
    """Whether ``model`` is a ResNet, torchvision's (solo's ``resnet*``) or timm's (``timm/resnet*``)."""
    return type(model).__name__ == "ResNet"


def sincos_position_embedding(grid_size: tuple[int, int], dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes of a ViT's patch grid, a zero row first for the class token.

    A patch at row ``h``, column ``w`` gets ``[sin(w o), cos(w o), sin(h o), cos(h o)]`` with
    frequencies ``o_k = 10000^(-k / (dim / 4))``, k < dim / 4 (MoCo v3 and MAE use such codes
    instead of learned ones).

    Returns:
        (1, 1 + rows * cols, dim) tensor, patches in row-major order (as ``PatchEmbed`` flattens them).

    Raises:
        ValueError: ``dim`` is not a multiple of 4.
    """

    if dim % 4:
        raise ValueError(f"a 2-D sine-cosine position embedding needs a width that is a multiple of 4, got {dim}")
    rows, cols = grid_size
    h, w = torch.meshgrid(torch.arange(rows, dtype=torch.float32), torch.arange(cols, dtype=torch.float32),
                          indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    angles_w, angles_h = w.flatten()[:, None] * omega, h.flatten()[:, None] * omega
    codes = torch.cat([angles_w.sin(), angles_w.cos(), angles_h.sin(), angles_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), codes])[None]


def fix_position_embedding(vit: nn.Module) -> None:
    """Replaces a timm ViT's learned position embedding by :func:`sincos_position_embedding`, frozen.

    It stays a parameter (``requires_grad=False``), so checkpoints and the encoders that the
    linear evaluation and export rebuild by name hold it like any other weight.

    Raises:
        ValueError: the ViT has prefix tokens other than one class token, or no position embedding.
    """
    if getattr(vit, "num_prefix_tokens", 1) != 1 or getattr(vit, "pos_embed", None) is None:
        raise ValueError("a fixed sine-cosine position embedding needs a ViT with one class token and a "
                         "position embedding")
    codes = sincos_position_embedding(tuple(vit.patch_embed.grid_size), vit.pos_embed.shape[-1])
    vit.pos_embed = nn.Parameter(codes.to(vit.pos_embed), requires_grad=False)
