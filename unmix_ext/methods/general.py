"""The general rule + Un-Mix for W-MSE, Barlow Twins, VICReg, VIbCReg, ReSSL and All4One.

docs/unmix.md section 2: ``L = L_base + lam * l(other, mixed) + (1 - lam) * l(other, flip(mixed))``
with ``l`` the method's own loss on the pair (clean other view, mixture). W-MSE whitens
the pair as the method already does (random slices of ``whitening_size`` rows). ReSSL's
loss is asymmetric (online query of view 0, momentum key of view 1), so it mixes view 0:
the mixture is a query, its target the clean key, its negatives the queue as it was
before the base step enqueued this batch's keys.

All4One: each of its three objectives on (other, mixture), as its base loss combines them
on its two views: the mixture needs what a clean view gives (projection, predictions,
transformer summaries, and a momentum projection whose nearest neighbours are looked up in
the support set as it was before the base step added this batch), so it takes one online
and one momentum pass; only clean projections enter the support set.

Weighting (base:mixture 1:1): each base loss is one term over its pair of views (W-MSE
averages its whitening iterations, and so does its mixture term), weight 1.
"""
from __future__ import annotations

import solo.losses.vicreg as vicreg_losses
import torch
import torch.nn.functional as F
from solo.losses.barlow import barlow_loss_func
from solo.losses.ressl import ressl_loss_func
from solo.losses.wmse import wmse_loss_func
from solo.methods.barlow_twins import BarlowTwins
from solo.methods.ressl import ReSSL
from solo.methods.vicreg import VICReg
from solo.methods.wmse import WMSE

from unmix_ext.losses import reversed_pair_loss
from unmix_ext.methods.all4one import All4One
from unmix_ext.methods.base import UnMixVariant, register_variant
from unmix_ext.methods.vibcreg import VIbCReg, vibcreg_covariance_loss


class _ProjectorPairUnMix(UnMixVariant):
    """The mixture goes through encoder and projector; ``pair_loss`` is the method's loss."""

    unmix_recorded = ("projector",)

    def forward_mixed(self, images):
        return {"z": self.projector(self.encoder(images))}

    def mixture_loss(self, clean, mixed, lam, batch):
        return reversed_pair_loss(self.pair_loss, clean["projector"][self.unmix_other_view],
                                  mixed["z"], lam)


@register_variant
class BarlowTwinsUnMix(_ProjectorPairUnMix, BarlowTwins):
    """Barlow Twins + Un-Mix."""

    def pair_loss(self, z_other, z_mixed):
        return barlow_loss_func(z_other, z_mixed, lamb=self.lamb, scale_loss=self.scale_loss)


class _VarianceCovarianceUnMix(_ProjectorPairUnMix):
    """VICReg and VIbCReg: the general rule with the method's loss, computed in fewer passes.

    Variance and covariance ignore row order, so those of (other, flip(mixed)) equal those
    of (other, mixed) and the lam-weighted sum keeps them once; only the invariance term
    (row i against row i) is taken for both partners. This saves two (D, D) covariance
    matrices and their backward per step (D = 2048 in solo).
    """

    def mixture_loss(self, clean, mixed, lam, batch):
        z_other, z_mixed = clean["projector"][self.unmix_other_view], mixed["z"]
        # looked up in solo's module at call time, like its loss functions do (patches apply)
        invariance = reversed_pair_loss(vicreg_losses.invariance_loss, z_other, z_mixed, lam)
        return (self.sim_loss_weight * invariance
                + self.var_loss_weight * vicreg_losses.variance_loss(z_other, z_mixed)
                + self.cov_loss_weight * self.covariance_term(z_other, z_mixed))


@register_variant
class VICRegUnMix(_VarianceCovarianceUnMix, VICReg):
    """VICReg + Un-Mix."""

    def covariance_term(self, z_other, z_mixed):
        return vicreg_losses.covariance_loss(z_other, z_mixed)


@register_variant
class VIbCRegUnMix(_VarianceCovarianceUnMix, VIbCReg):
    """VIbCReg + Un-Mix (the mixture goes through the projector's IterNorm as a batch of its own)."""

    covariance_term = staticmethod(vibcreg_covariance_loss)


@register_variant
class WMSEUnMix(_ProjectorPairUnMix, WMSE):
    """W-MSE + Un-Mix: the pair is whitened slice by slice, as W-MSE whitens its views."""

    def pair_loss(self, v_other, v_mixed):
        loss = 0.0
        for _ in range(self.whitening_iters):
            slices = torch.randperm(v_other.shape[0]).view(-1, self.whitening_size)
            white = [torch.empty_like(v_other), torch.empty_like(v_mixed)]
            for idx in slices:
                for w, v in zip(white, (v_other, v_mixed)):
                    w[idx] = self.whitening(v[idx]).type_as(w)
            # solo's W-MSE loss stops the gradient of its second argument: the mixture goes
            # first, so it is the side that learns
            loss = loss + wmse_loss_func(white[1], white[0])
        return loss / self.whitening_iters


@register_variant
class ReSSLUnMix(UnMixVariant, ReSSL):
    """ReSSL + Un-Mix (view 0 only: the mixture is a query against the clean key of view 1)."""

    unmix_recorded = ("momentum_projector",)
    unmix_views_supported = (0,)

    def forward_mixed(self, images):
        query = F.normalize(self.projector(self.encoder(images)), dim=-1)
        return {"q": query, "queue": self.queue.clone().detach()}

    def mixture_loss(self, clean, mixed, lam, batch):
        key = F.normalize(clean["momentum_projector"][0], dim=-1)

        def relational(k, q):
            return ressl_loss_func(q, k, mixed["queue"], self.temperature_q, self.temperature_k)

        return reversed_pair_loss(relational, key, mixed["q"], lam)


@register_variant
class All4OneUnMix(UnMixVariant, All4One):
    """All4One + Un-Mix: its whole loss on (other view, mixture), every objective in it."""

    unmix_recorded = ("view_outputs",)

    def forward_mixed(self, images):
        with torch.no_grad():
            momentum_feats = self.momentum_encoder(images)
        return {"view": self.view_outputs(self.encoder(images), momentum_feats)}

    def mixture_loss(self, clean, mixed, lam, batch):
        def pair_loss(other, mix):
            return self.all4one_loss(other, mix)[0]

        return reversed_pair_loss(pair_loss, tuple(clean["view_outputs"][self.unmix_other_view]),
                                  tuple(mixed["view"]), lam)
