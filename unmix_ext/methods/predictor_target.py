"""Predictor/target family + Un-Mix (BYOL, SimSiam, NNBYOL, NNSiam).

docs/unmix.md section 2: ``l(other, mixed)`` is the method's own loss between the predictor of
one side and the target of the other, both ways, so the mixture also goes through the
target (momentum network for BYOL/NNBYOL, stop-gradient projection for SimSiam/NNSiam,
a nearest neighbour from the support set for NNBYOL/NNSiam). ``unmix_target_side=
"online"`` keeps the mixture out of the target branch (no momentum pass over it).
Support sets are read as they were before the base step updated them.

Weighting (base:mixture 1:1): BYOL and NNBYOL sum their two terms (weight 1 each),
SimSiam and NNSiam average them (1/2 each); each mixture term weighs what one base
term weighs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from solo.losses.byol import byol_loss_func
from solo.losses.simsiam import simsiam_loss_func
from solo.methods.byol import BYOL
from solo.methods.nnbyol import NNBYOL
from solo.methods.nnsiam import NNSiam
from solo.methods.simsiam import SimSiam

from unmix_ext.losses import predictor_target_mix_loss
from unmix_ext.methods.base import UnMixVariant, register_variant


class _PredictorTargetUnMix(UnMixVariant):
    """Subclasses say where the clean target was recorded and how the mixture's is made."""

    base_loss_fn = staticmethod(byol_loss_func)
    target_record = "momentum_projector"

    def forward_mixed(self, images):
        z = self.projector(self.encoder(images))
        target = None if self.unmix_target_side == "online" else self.mixed_target(images, z)
        return {"p": self.predictor(z), "target": target}

    def clean_target(self, clean, view):
        return clean[self.target_record][view]

    def mixture_loss(self, clean, mixed, lam, batch):
        other = self.unmix_other_view
        return predictor_target_mix_loss(
            self.base_loss_fn, clean["predictor"][other], self.clean_target(clean, other),
            mixed["p"], mixed["target"], lam, target_side=self.unmix_target_side,
        )


@register_variant
class BYOLUnMix(_PredictorTargetUnMix, BYOL):
    """BYOL + Un-Mix: the mixture's target is the momentum network's projection of it."""

    unmix_recorded = ("predictor", "momentum_projector")

    @torch.no_grad()
    def mixed_target(self, images, z):
        return self.momentum_projector(self.momentum_encoder(images))


@register_variant
class SimSiamUnMix(_PredictorTargetUnMix, SimSiam):
    """SimSiam + Un-Mix: the mixture's target is its own projection (stop-gradient in the loss)."""

    unmix_recorded = ("predictor", "projector")
    base_loss_fn = staticmethod(simsiam_loss_func)
    base_term_weight = 0.5
    target_record = "projector"

    def mixed_target(self, images, z):
        return z


class _NearestNeighbourTarget:
    """NNBYOL/NNSiam: the target is the support set's nearest neighbour of a projection."""

    def clean_target(self, clean, view):
        return clean["find_nn"][view][1]


@register_variant
class NNBYOLUnMix(_NearestNeighbourTarget, _PredictorTargetUnMix, NNBYOL):
    """NNBYOL + Un-Mix: the mixture's target is the nearest neighbour of its momentum projection."""

    unmix_recorded = ("predictor", "find_nn")

    @torch.no_grad()
    def mixed_target(self, images, z):
        z_momentum = self.momentum_projector(self.momentum_encoder(images))
        return self.find_nn(F.normalize(z_momentum, dim=-1))[1]


@register_variant
class NNSiamUnMix(_NearestNeighbourTarget, _PredictorTargetUnMix, NNSiam):
    """NNSiam + Un-Mix: the mixture's target is the nearest neighbour of its own projection."""

    unmix_recorded = ("predictor", "find_nn")
    base_loss_fn = staticmethod(simsiam_loss_func)
    base_term_weight = 0.5

    def mixed_target(self, images, z):
        return self.find_nn(F.normalize(z, dim=-1))[1]
