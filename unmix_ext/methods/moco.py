"""MoCo family + Un-Mix: each mixture contrasts with the clean keys, the queue (or the batch) as negatives.

docs/unmix.md section 2 (MoCo): ``q_m`` is the query of the mixed view; the keys are the
momentum encoder's outputs on the clean views, already computed by the base step. The
mixture of sample i has two softmaxes, against key i (weight lam) and key N-1-i
(weight 1 - lam), each with the queue as it was before this step's keys entered it.
Asymmetric: keys of the other view; symmetric: keys of both views.

MoCo V3 has no queue: its negatives are the other keys of the batch. ``q_m`` is then the
predictor's output on M, and with MoCo V3's own loss ``c(q, k)`` the mixture adds
``lam * c(q_m, k_j) + (1 - lam) * c(flip(q_m), k_j)`` for both clean key sets j (its base
loss is symmetric); keys stay clean, and the momentum network never sees M.

Weighting (base:mixture 1:1): MoCo v2 and MoCo V3 sum their terms (weight 1 each), MoCo V2+
averages its two (1/2 each); each mixture term weighs what one base term weighs.
"""
from __future__ import annotations

import torch.nn.functional as F
from solo.methods.mocov2plus import MoCoV2Plus

from unmix_ext.losses import moco_mix_loss, reversed_pair_loss
from unmix_ext.methods.base import UnMixVariant, register_variant
from unmix_ext.methods.mocov2 import MoCoV2
from unmix_ext.methods.mocov3 import MoCoV3, mocov3_loss_rows


class _MoCoUnMix(UnMixVariant):
    unmix_recorded = ("momentum_projector",)
    unmix_per_sample_supported = True

    def forward_mixed(self, images):
        query = F.normalize(self.projector(self.encoder(images)), dim=-1)
        # the base step enqueues this step's keys: contrast with the queue before that
        return {"q": query, "queue": self.queue.clone().detach()}

    def key_views(self):
        """The clean key sets a mixture meets: the other view's, and its own view's when symmetric."""
        symmetric = self.base_symmetric if self.unmix_symmetric is None else self.unmix_symmetric
        return [self.unmix_other_view] + ([self.unmix_view] if symmetric else [])

    def mixture_loss(self, clean, mixed, lam, batch):
        keys = [F.normalize(k, dim=-1) for k in clean["momentum_projector"][:2]]
        return sum(
            moco_mix_loss(mixed["q"], keys[v], self.negatives(mixed["queue"], v),
                          self.temperature, lam)
            for v in self.key_views()
        )


@register_variant
class MoCoV2PlusUnMix(_MoCoUnMix, MoCoV2Plus):
    """MoCo V2+ (symmetric, one queue per view) + Un-Mix."""

    base_symmetric = True
    base_term_weight = 0.5

    def negatives(self, queue, key_view):
        # solo pairs keys of view j with queue[j] (the past keys of view j)
        return queue[key_view]


@register_variant
class MoCoV2UnMix(_MoCoUnMix, MoCoV2):
    """MoCo v2 (asymmetric by default, one queue) + Un-Mix: the paper's Table 1 method."""

    @property
    def base_symmetric(self):
        return self.symmetric

    def negatives(self, queue, key_view):
        return queue


@register_variant
class MoCoV3UnMix(_MoCoUnMix, MoCoV3):
    """MoCo V3 (symmetric, in-batch negatives) + Un-Mix: the mixture's prediction against both clean key sets."""

    base_symmetric = True

    def forward_mixed(self, images):
        return {"q": self.predictor(self.projector(self.encoder(images)))}

    def mixture_loss(self, clean, mixed, lam, batch):
        def contrast(keys, queries):
            return mocov3_loss_rows(queries, keys, self.temperature)

        keys = clean["momentum_projector"]
        return sum(reversed_pair_loss(contrast, keys[v], mixed["q"], lam) for v in self.key_views())
