"""In-batch contrastive family + Un-Mix (SimCLR, NNCLR, SupCon): the method's own NT-Xent.

docs/unmix.md section 2: ``L = L_base + lam * l(other, mixed) + (1 - lam) * l(other, flip(mixed))``
with ``l`` the method's NT-Xent on the pair (clean other view, mixture). NNCLR's
nearest neighbours come from the support set as it was before the base step added
this batch's clean embeddings; mixed embeddings are looked up, never stored.

SupCon (labels known): the mixed rows are anchors only; their positives are the clean rows
(every crop the base loss uses) of the source's class with weight lam and of the partner's
class with weight 1 - lam (``unmix_ext.losses.class_mix_loss``).

Weighting (base:mixture 1:1): SimCLR's base loss is one NT-Xent over its pair of views
(weight 1), NNCLR's averages its two directions, and so does each mixture term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from solo.losses.nnclr import nnclr_loss_func
from solo.losses.simclr import simclr_loss_func
from solo.methods.nnclr import NNCLR
from solo.methods.simclr import SimCLR

from unmix_ext.losses import class_mix_loss, reversed_pair_loss
from unmix_ext.methods.base import UnMixVariant, register_variant
from unmix_ext.methods.supcon import SupCon, supcon_loss_rows


@register_variant
class SimCLRUnMix(UnMixVariant, SimCLR):
    """SimCLR + Un-Mix: NT-Xent between the clean other view and the mixture."""

    unmix_recorded = ("projector",)

    def forward_mixed(self, images):
        return {"z": self.projector(self.encoder(images))}

    def mixture_loss(self, clean, mixed, lam, batch):
        def nt_xent(other, mix):
            return simclr_loss_func(other, mix, temperature=self.temperature)

        return reversed_pair_loss(nt_xent, clean["projector"][self.unmix_other_view],
                                  mixed["z"], lam)


@register_variant
class NNCLRUnMix(UnMixVariant, NNCLR):
    """NNCLR + Un-Mix: both directions of NNCLR's loss between (nn, p) of other and mixture."""

    unmix_recorded = ("predictor", "find_nn")

    def forward_mixed(self, images):
        z = self.projector(self.encoder(images))
        _, nn = self.find_nn(F.normalize(z, dim=-1))
        return {"nn": nn, "p": self.predictor(z)}

    def mixture_loss(self, clean, mixed, lam, batch):
        other = self.unmix_other_view
        nn_other = clean["find_nn"][other][1]
        p_other = clean["predictor"][other]

        def nnclr_pair(o, m):  # o, m: (nearest neighbour, prediction), as the base pairs them
            return (nnclr_loss_func(o[0], m[1], temperature=self.temperature)
                    + nnclr_loss_func(m[0], o[1], temperature=self.temperature)) / 2

        return reversed_pair_loss(nnclr_pair, (nn_other, p_other), (mixed["nn"], mixed["p"]), lam)


@register_variant
class SupConUnMix(UnMixVariant, SupCon):
    """SupCon + Un-Mix: each mixture against the clean rows of its two sources' classes."""

    unmix_recorded = ("projector",)
    unmix_per_sample_supported = True

    def forward_mixed(self, images):
        return {"z": self.projector(self.encoder(images))}

    def mixture_loss(self, clean, mixed, lam, batch):
        labels = batch[-1]
        candidates = torch.cat(clean["projector"])  # every clean crop, as the base loss has them
        candidate_labels = labels.repeat(self.num_crops)

        def anchored(anchors, anchor_labels):
            return supcon_loss_rows(anchors, anchor_labels, candidates, candidate_labels, self.temperature)

        return class_mix_loss(anchored, mixed["z"], labels, lam)
