"""timm_backbones: solo-learn 1.0.2 builds only resnet18/50, ViT and Swin encoders.

Symptom: ``encoder`` anything else (a smaller ResNet, a ConvNeXt, any timm model) fails
``assert encoder in BaseMethod._SUPPORTED_ENCODERS`` in every method's constructor.
Cause: ``BaseMethod.__init__`` picks the encoder from a fixed table of ten names.
Fix: ``encoder="timm/<model>"`` builds ``timm.create_model(<model>, num_classes=0,
**backbone_args)`` (``unmix_ext.backbones``; ``backbone_args["cifar"]`` gives a ResNet-style
model solo's CIFAR stem), for the online encoder and, through ``base_model``, for a
momentum method's momentum encoder; heads are built for its ``num_features``. Checkpoints
name the model (``unmix_ext.backbones.CHECKPOINT_ENTRY``) so an export can rebuild it.
Every name of solo's table is built as before.
"""
from __future__ import annotations

import functools
import inspect

from torch import nn

from unmix_ext.backbones import CHECKPOINT_ENTRY, build_timm_encoder, is_timm_name
from unmix_ext.patches._core import Patch, register, replace

TARGET = "solo.methods.base:BaseMethod.__init__"
#: what upstream builds first, replaced before any head is built on it
PLACEHOLDER = "resnet18"


def on_save_checkpoint(self, checkpoint: dict) -> None:
    if getattr(self, "timm_encoder", None) is not None:
        checkpoint[CHECKPOINT_ENTRY] = self.timm_encoder


def timm_aware_init(upstream):
    """``BaseMethod.__init__`` that builds ``timm/<model>`` encoders and leaves every other name to upstream."""
    signature = inspect.signature(upstream)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        encoder = bound.arguments["encoder"]
        if not is_timm_name(encoder):
            return upstream(self, *args, **kwargs)
        backbone_args = dict(bound.arguments["backbone_args"])
        bound.arguments.update(encoder=PLACEHOLDER, backbone_args={})
        upstream(*bound.args, **bound.kwargs)
        cifar = bool(backbone_args.pop("cifar", False))
        # solo's momentum methods build their second encoder as base_model(**backbone_args) and
        # special-case names containing "resnet" or "swin": the stem is in base_model already
        self.base_model = functools.partial(build_timm_encoder, encoder, cifar)
        self.backbone_args, self.encoder_name = backbone_args, "timm"
        self.timm_encoder = {"name": encoder, "kwargs": {"cifar": cifar, **backbone_args}}
        self.encoder = self.base_model(**backbone_args)
        self.features_dim = self.encoder.num_features
        self.classifier = nn.Linear(self.features_dim, self.num_classes)

    return __init__


def _apply() -> None:
    from solo.methods.base import BaseMethod

    replace(BaseMethod, "__init__", timm_aware_init(BaseMethod.__init__))
    # solo-learn's BaseMethod defines no on_save_checkpoint: this one is ours
    replace(BaseMethod, "on_save_checkpoint", on_save_checkpoint)


PATCH = register(Patch(
    name="timm_backbones",
    summary="only resnet18/50, ViT and Swin encoders: timm/<model> builds any timm model",
    upstream={TARGET: "464b1cd4fd871e1c0f851b0169070230e4f7123bde2e77fd80648a9fd54e1bf8"},
    apply=_apply,
))
