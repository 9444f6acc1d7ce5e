"""VIbCReg (Lee and Aune, 2021, arXiv 2109.00783), solo-learn main's ``vibcreg`` on 1.0.2's base.

VICReg with a GELU projector that may end in Iterative Normalization (whitening), and a
covariance term on feature-normalised embeddings: ``sim * MSE(z1, z2) + var * V(z1, z2) +
cov * C(z1, z2)``, with VICReg's invariance and variance terms (solo-learn's functions) and
``C`` below.

What 1.0.2 lacks and this file adds: the ``IterNorm`` layer (solo-learn main's
``solo.utils.whitening.IterNorm``, written here with autograd instead of a hand-written
backward; the same forward).
"""
from __future__ import annotations

import argparse
from typing import List, Sequence

import solo.losses.vicreg as vicreg_losses
import torch
import torch.nn as nn
import torch.nn.functional as F
from solo.methods.base import BaseMethod
from solo.utils.misc import gather

from unmix_ext.methods.base import register_method


def vibcreg_covariance_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """VIbCReg's covariance term: mean squared off-diagonal correlation of each view's features.

    Each (N, D) batch is centred and each feature scaled to unit norm over the batch, so the
    (D, D) matrix ``z^T z`` holds correlations; its diagonal is left out.
    """
    loss = 0.0
    for z in (z1, z2):
        z = F.normalize(z - z.mean(dim=0), dim=0)
        correlation = z.T @ z
        off_diagonal = correlation - torch.diag_embed(torch.diagonal(correlation))
        loss = loss + off_diagonal.pow(2).mean()
    return loss


def vibcreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_loss_weight: float = 25.0,
                 var_loss_weight: float = 25.0, cov_loss_weight: float = 200.0) -> torch.Tensor:
    """VIbCReg's loss on (N, D) projections of two views; variance and covariance see every process's rows."""
    invariance = vicreg_losses.invariance_loss(z1, z2)
    z1, z2 = gather(z1), gather(z2)
    return (sim_loss_weight * invariance + var_loss_weight * vicreg_losses.variance_loss(z1, z2)
            + cov_loss_weight * vibcreg_covariance_loss(z1, z2))


class IterNorm(nn.Module):
    """Iterative Normalization (Huang et al., CVPR 2019): whitening by Newton's iterations, per group.

    The D features are split into groups of ``channels`` features (``ceil(D / num_groups)``,
    halved until it divides D). In training, per group: centre the (N, channels) batch,
    ``S = eps I + x^T x / N``, ``S_n = S / tr(S)``, ``P_0 = I``, ``P_{k+1} = 1.5 P_k - 0.5 P_k^3 S_n``
    for ``iterations`` steps, and output ``x P_T^T / sqrt(tr(S))`` (about ``x S^{-1/2}``); the
    running mean and whitening matrix (momentum ``momentum``) serve evaluation. Then a
    per-feature affine. Computed in at least float32, also under autocast.

    Args:
        num_features: D.
        num_groups: groups of features whitened separately (64).
        iterations: Newton steps T (5).
        eps: added to the covariance's diagonal.
        momentum: of the running statistics.
    """

    def __init__(self, num_features: int, num_groups: int = 64, iterations: int = 5, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__()
        channels = -(-num_features // num_groups)
        while num_features % channels:
            channels //= 2
        self.groups, self.channels = num_features // channels, channels
        self.iterations, self.eps, self.momentum = iterations, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(self.groups, 1, channels))
        self.register_buffer("running_whitening", torch.eye(channels).repeat(self.groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, D)."""
        n = x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            work = x.to(torch.promote_types(x.dtype, torch.float32))  # half precision is upcast
            grouped = work.view(n, self.groups, self.channels).transpose(0, 1)  # (G, N, c)
            if self.training:
                mean = grouped.mean(dim=1, keepdim=True)
                centred = grouped - mean
                eye = torch.eye(self.channels, device=x.device, dtype=work.dtype).expand(self.groups, -1, -1)
                covariance = self.eps * eye + centred.transpose(1, 2) @ centred / n
                trace = covariance.diagonal(dim1=1, dim2=2).sum(dim=1).view(-1, 1, 1)
                normalised = covariance / trace
                p = eye
                for _ in range(self.iterations):
                    p = 1.5 * p - 0.5 * torch.linalg.matrix_power(p, 3) @ normalised
                whitening = p / trace.sqrt()
                with torch.no_grad():
                    self.running_mean.lerp_(mean.to(self.running_mean), self.momentum)
                    self.running_whitening.lerp_(whitening.to(self.running_whitening), self.momentum)
            else:
                centred, whitening = grouped - self.running_mean.to(work), self.running_whitening.to(work)
            white = (centred @ whitening.transpose(1, 2)).transpose(0, 1).reshape(n, -1)
        return white.to(x.dtype) * self.weight + self.bias


@register_method("vibcreg")
class VIbCReg(BaseMethod):
    """VIbCReg on solo-learn 1.0.2's base, with solo-learn main's ``method_kwargs``.

    Args:
        proj_output_dim, proj_hidden_dim: projector widths (2048, 2048).
        sim_loss_weight, var_loss_weight, cov_loss_weight: weights of the three terms (25, 25, 200).
        iternorm: end the projector in :class:`IterNorm` (64 groups, 5 iterations).
    """

    def __init__(self, proj_output_dim: int = 2048, proj_hidden_dim: int = 2048, sim_loss_weight: float = 25.0,
                 var_loss_weight: float = 25.0, cov_loss_weight: float = 200.0, iternorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sim_loss_weight = sim_loss_weight
        self.var_loss_weight = var_loss_weight
        self.cov_loss_weight = cov_loss_weight
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, proj_hidden_dim), nn.BatchNorm1d(proj_hidden_dim), nn.GELU(),
            nn.Linear(proj_hidden_dim, proj_hidden_dim), nn.BatchNorm1d(proj_hidden_dim), nn.GELU(),
            nn.Linear(proj_hidden_dim, proj_output_dim),
            IterNorm(proj_output_dim) if iternorm else nn.Identity(),
        )

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("vibcreg")
        parser.add_argument("--proj_output_dim", type=int, default=2048)
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--sim_loss_weight", type=float, default=25.0)
        parser.add_argument("--var_loss_weight", type=float, default=25.0)
        parser.add_argument("--cov_loss_weight", type=float, default=200.0)
        parser.add_argument("--iternorm", type=lambda s: s.lower() in ("1", "true", "yes"), default=False)
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [{"params": self.projector.parameters()}]

    def training_step(self, batch: Sequence, batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        z1, z2 = (self.projector(f) for f in out["feats"][:2])
        loss = vibcreg_loss(z1, z2, self.sim_loss_weight, self.var_loss_weight, self.cov_loss_weight)
        self.log("train_vibcreg_loss", loss, on_epoch=True, sync_dist=True)
        return loss + out["loss"]
