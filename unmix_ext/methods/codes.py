"""Codes/teacher family + Un-Mix (SwAV, DeepCluster v2, DINO).

docs/unmix.md section 2: with z the prototype scores (student logits for DINO), q the codes
(Sinkhorn, or the teacher's softmax) and ``l(z, q) = -sum_k q_k log softmax(z / tau)_k``:
``lam*[l(z_m, q_s) + l(z_s, q_m)] + (1-lam)*[l(flip(z_m), q_s) + l(z_s, flip(q_m))]``
is added to the base loss, with q_m computed from the scores of M (the teacher sees M
for DINO: one momentum pass). Queues, memory banks and DINO's centre are fed by the
base step from clean views only; the mixture reads them as they were before it.

Multi-crop (SwAV, DINO): the first large crop (``unmix_view``) is mixed, against the
other large crop; small crops enter the base loss only.

Weighting (base:mixture 1:1): solo-learn's SwAV and DINO losses are the mean over their
(codes of large crop i, scores of crop v != i) terms, 2 with two crops, 2 * (crops - 1)
with small crops; DeepCluster v2's is the mean over its large crops. Each mixture term
weighs what one of those base terms weighs (the authors' SwAV code halves both its base
and its mixture swaps).

DeepCluster v2's targets are k-means assignments of the images in a memory bank, not
codes computed from a batch's scores, so a mixture has no codes of its own: its loss is
the direction ``lam * l(z_m, q_s) + (1 - lam) * l(flip(z_m), q_s)`` alone, with q_s the
one-hot assignment, averaged over all N rows (rows not yet assigned, in epoch 0,
contribute zero to that mean).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from solo.methods.deepclusterv2 import DeepClusterV2
from solo.methods.dino import DINO
from solo.methods.swav import SwAV

from unmix_ext.losses import codes_mix_loss, reversed_pair_loss, soft_cross_entropy
from unmix_ext.methods.base import UnMixVariant, register_variant


class _CodesUnMix(UnMixVariant):
    unmix_per_sample_supported = True

    @property
    def base_term_weight(self):
        # SwAV and DINO: codes of each large crop against the scores of every other crop
        return 1.0 / (self.num_large_crops * (self.num_crops - 1))


@register_variant
class SwAVUnMix(_CodesUnMix, SwAV):
    """SwAV + Un-Mix. The mixture's codes are Sinkhorn codes of its scores (with the queue
    of view 0 when the queue is active)."""

    unmix_recorded = ("prototypes", "get_assignments")

    def forward_mixed(self, images):
        scores = self.prototypes(F.normalize(self.projector(self.encoder(images))))
        return {"scores": scores, "codes": self.get_assignments([scores])[0]}

    def mixture_loss(self, clean, mixed, lam, batch):
        other = self.unmix_other_view
        # the first two prototype calls of the base step score the two clean views;
        # later ones score the queue
        scores_other = clean["prototypes"][other]
        codes_other = clean["get_assignments"][0][other]
        return codes_mix_loss(
            mixed["scores"], mixed["codes"], scores_other, codes_other, self.temperature, lam)


@register_variant
class DINOUnMix(_CodesUnMix, DINO):
    """DINO + Un-Mix. Codes are the teacher's centred, sharpened softmax; the mixture's come
    from the teacher's pass over M, with the centre the base step used."""

    unmix_recorded = ("head", "momentum_head")

    def teacher_codes(self, teacher_logits, center):
        loss = self.dino_loss_func
        temperature = loss.teacher_temp_schedule[loss.epoch]
        return F.softmax((teacher_logits - center) / temperature, dim=-1)

    def forward_mixed(self, images):
        center = self.dino_loss_func.center.clone()
        with torch.no_grad():
            teacher = self.momentum_head(self.momentum_encoder(images))
        return {"scores": self.head(self.encoder(images)), "center": center,
                "codes": self.teacher_codes(teacher, center)}

    def mixture_loss(self, clean, mixed, lam, batch):
        other = self.unmix_other_view
        codes_other = self.teacher_codes(clean["momentum_head"][other], mixed["center"])
        return codes_mix_loss(
            mixed["scores"], mixed["codes"], clean["head"][other], codes_other,
            self.dino_loss_func.student_temp, lam)


@register_variant
class DeepClusterV2UnMix(_CodesUnMix, DeepClusterV2):
    """DeepCluster v2 + Un-Mix: mixture scores against the clean images' k-means assignments."""

    @property
    def base_term_weight(self):
        # its base loss is the mean over the large crops' scores against the assignments
        return 1.0 / self.num_large_crops

    def forward_mixed(self, images):
        z = F.normalize(self.projector(self.encoder(images)))
        return {"scores": torch.stack([proto(z) for proto in self.prototypes], dim=1)}

    def mixture_loss(self, clean, mixed, lam, batch):
        scores = mixed["scores"]  # (N, heads, prototypes)
        assignments = self.assignments[:, batch[0]].T  # (N, heads), -1 = not assigned yet
        codes = F.one_hot(assignments.clamp(min=0), scores.shape[-1]).to(scores.dtype)
        codes = codes * (assignments >= 0).unsqueeze(-1)

        def per_row(codes_, scores_):
            rows = soft_cross_entropy(scores_.flatten(0, 1), codes_.flatten(0, 1), self.temperature)
            return rows.view(scores_.shape[:2]).mean(dim=1)

        return reversed_pair_loss(per_row, codes, scores, lam)
