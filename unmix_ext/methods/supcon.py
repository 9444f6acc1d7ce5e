"""SupCon (Khosla et al., 2020, arXiv 2004.11362), solo-learn main's ``supcon`` on 1.0.2's base.

Supervised contrastive learning: the labels say which rows are positives. With z the
normalised projections of every crop (large and small) of the batch and y their images'
labels, anchor a's loss is ``-log(P_a / (P_a + N_a))``, where ``P_a`` sums
``exp(z_a . z_b / T)`` over the other rows b of a's class and ``N_a`` over the rows of
other classes (solo-learn main's ``simclr_loss_func`` given labels as indexes); the loss is
the mean over anchors. Labels are used there only (and by the online classifier, as in
every method).

Multi-crop: small crops are projected and enter the loss like large ones, as in
solo-learn main.
"""
from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.misc import gather

from unmix_ext.methods.base import register_method


def supcon_loss_rows(anchors: torch.Tensor, anchor_labels: torch.Tensor, candidates: Optional[torch.Tensor],
                     candidate_labels: Optional[torch.Tensor], temperature: float) -> torch.Tensor:
    """Per-anchor supervised contrastive loss ``-log(P_a / (P_a + N_a))``.

    Args:
        anchors: (A, D) projections (normalised here).
        anchor_labels: (A,) their classes.
        candidates, candidate_labels: (C, D) and (C,) rows the anchors are compared with; None:
            the anchors themselves, each anchor's own row left out (the base loss).
        temperature: T.

    Returns:
        (A,) one value per anchor; candidates are gathered from every process.
    """
    anchors = F.normalize(anchors, dim=-1)
    own_rows = candidates is None
    if own_rows:
        candidates, candidate_labels = anchors, anchor_labels
    candidates = gather(F.normalize(candidates, dim=-1))
    candidate_labels = gather(candidate_labels)
    logits = anchors @ candidates.T / temperature
    compared = torch.ones_like(logits, dtype=torch.bool)
    if own_rows:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        own = torch.arange(len(anchors), device=anchors.device)
        compared[own, own + len(anchors) * rank] = False
    positive = compared & (anchor_labels[:, None] == candidate_labels[None, :])
    return logits.masked_fill(~compared, -torch.inf).logsumexp(1) - logits.masked_fill(~positive, -torch.inf).logsumexp(1)


@register_method("supcon")
class SupCon(BaseMethod):
    """SupCon on solo-learn 1.0.2's base, with solo-learn main's ``method_kwargs``.

    Args:
        proj_output_dim: projection dimension (256).
        proj_hidden_dim: hidden width of the projector (2048).
        temperature: softmax temperature T (0.2).
    """

    def __init__(self, proj_output_dim: int = 256, proj_hidden_dim: int = 2048, temperature: float = 0.2,
                 **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.projector = nn.Sequential(nn.Linear(self.features_dim, proj_hidden_dim), nn.ReLU(),
                                       nn.Linear(proj_hidden_dim, proj_output_dim))

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("supcon")
        parser.add_argument("--proj_output_dim", type=int, default=256)
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--temperature", type=float, default=0.2)
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [{"params": self.projector.parameters()}]

    def training_step(self, batch: Sequence, batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        z = torch.cat([self.projector(f) for f in out["feats"]])  # every crop, large then small
        labels = batch[-1].repeat(self.num_crops)
        loss = supcon_loss_rows(z, labels, None, None, self.temperature).mean()
        self.log("train_nce_loss", loss, on_epoch=True, sync_dist=True)
        return loss + out["loss"]
