"""All4One (Estepa et al., ICCV 2023, arXiv 2308.12302), solo-learn main's ``all4one`` on 1.0.2's base.

Three objectives on two views, from an online encoder, projector and two predictors, a
momentum encoder and projector, a small transformer and a support set (queue) of past
momentum projections:

- nearest-neighbour contrast (NNCLR): the first neighbour in the support set of one view's
  momentum projection against the other view's prediction, with ``temperature``;
- centroid contrast: the transformer summarises a sequence of 5 embeddings (token 0 of
  its output): ``rich``, the 5 nearest neighbours of a view; ``strange``, the view's second
  prediction followed by its 4 nearest neighbours; NNCLR's loss (temperature 0.1) of the
  rich summary of one view against the strange summary of the other;
- feature contrast (redundancy reduction): with each feature normalised over the batch, the
  correlation of one view's momentum projection with the other's projection;
  ``sqrt(mean (diag - 1)^2)`` and ``sqrt(mean off-diagonal^2)``, averaged over both
  orders, scaled by 10.

Each objective averages its two directions; the loss is half the sum of the three. The
support set receives the clean momentum projections of view 0 after the step's lookups.

Sequences get solo-learn main's fixed code before the transformer
(:func:`sequence_code`). solo-learn main's support set asks for a size that is a multiple
of the global batch; here it is a ring buffer like MoCo's queue, so any size works. The
transformer's parameters get their own learning rate, 0.1, as in solo-learn main.
"""
from __future__ import annotations

import argparse
from typing import Any, List, NamedTuple, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from solo.losses.nnclr import nnclr_loss_func
from solo.methods.base import BaseMomentumMethod
from solo.utils.misc import gather
from solo.utils.momentum import initialize_momentum_params

from unmix_ext.methods.base import register_method

#: embeddings in each sequence the transformer reads
SEQUENCE = 5
#: NNCLR temperature of the centroid objective (solo-learn main uses the loss's default)
CENTROID_TEMPERATURE = 0.1
#: learning rate of the transformer's parameter group
TRANSFORMER_LR = 0.1


def sequence_code(tokens: int, dim: int) -> torch.Tensor:
    """The fixed code solo-learn main's All4One adds to a (N, tokens, dim) sequence, as (tokens, dim).

    Its ``PositionalEncodingPermute1D(tokens)`` treats the feature axis as the position:
    token t at feature d gets ``sin(d f_j)`` for even t = 2j and ``cos(d f_j)`` for odd t = 2j+1,
    with ``f_j = 10000^(-2j / c)`` and c the token count rounded up to an even number.
    """
    channels = tokens + tokens % 2
    frequencies = 1.0 / 10000 ** (torch.arange(0, channels, 2, dtype=torch.float32) / channels)
    angles = torch.arange(dim, dtype=torch.float32)[None, :] * frequencies[:, None]  # (channels / 2, dim)
    return torch.stack([angles.sin(), angles.cos()], dim=1).reshape(channels, dim)[:tokens]


def feature_contrast(momentum_z: torch.Tensor, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean (diag - 1)^2, mean off-diagonal^2) of the (D, D) correlation of two (N, D) batches,
    each feature normalised over the batch."""
    correlation = F.normalize(momentum_z, dim=0).T @ F.normalize(z, dim=0)
    diagonal = torch.diagonal(correlation)
    off_diagonal = correlation - torch.diag_embed(diagonal)
    dim = correlation.shape[0]
    return (diagonal - 1).pow(2).mean(), off_diagonal.pow(2).sum() / (dim * (dim - 1))


class All4OneView(NamedTuple):
    """What All4One's loss reads of one view, each (N, D), row i of image i."""

    z: torch.Tensor  # online projection
    p: torch.Tensor  # first predictor
    strange: torch.Tensor  # transformer summary of (second predictor, 4 nearest neighbours)
    momentum_z: torch.Tensor  # momentum projection, normalised
    nn: torch.Tensor  # first nearest neighbour of momentum_z in the support set
    rich: torch.Tensor  # transformer summary of the 5 nearest neighbours


def _head(in_dim: int, hidden_dim: int, out_dim: int, layers: int, last_bn: bool) -> nn.Sequential:
    modules: List[nn.Module] = []
    for i in range(layers):
        last = i == layers - 1
        width = out_dim if last else hidden_dim
        modules.append(nn.Linear(in_dim if i == 0 else hidden_dim, width))
        if not last or last_bn:
            modules.append(nn.BatchNorm1d(width))
        if not last:
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


@register_method("all4one")
class All4One(BaseMomentumMethod):
    """All4One on solo-learn 1.0.2's momentum base, with solo-learn main's ``method_kwargs``.

    Args:
        proj_output_dim: embedding dimension D (256).
        proj_hidden_dim: hidden width of the projectors (2048).
        pred_hidden_dim: hidden width of the predictors (4096).
        temperature: of the nearest-neighbour contrast (0.2).
        queue_size: support-set size (65536).
    """

    queue: torch.Tensor

    def __init__(self, proj_output_dim: int = 256, proj_hidden_dim: int = 2048, pred_hidden_dim: int = 4096,
                 temperature: float = 0.2, queue_size: int = 65536, **kwargs):
        super().__init__(**kwargs)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1 for all4one, got {queue_size}")
        self.temperature = temperature
        self.queue_size = queue_size
        self.projector = _head(self.features_dim, proj_hidden_dim, proj_output_dim, 3, last_bn=True)
        self.momentum_projector = _head(self.features_dim, proj_hidden_dim, proj_output_dim, 3, last_bn=True)
        initialize_momentum_params(self.projector, self.momentum_projector)
        self.predictor = _head(proj_output_dim, pred_hidden_dim, proj_output_dim, 2, last_bn=False)
        self.predictor2 = _head(proj_output_dim, pred_hidden_dim, proj_output_dim, 2, last_bn=False)
        layer = nn.TransformerEncoderLayer(d_model=proj_output_dim, nhead=8, dim_feedforward=2 * proj_output_dim,
                                           dropout=0.1, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
        self.register_buffer("sequence_code", sequence_code(SEQUENCE, proj_output_dim))
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_output_dim), dim=1))
        self.register_buffer("queue_y", -torch.ones(queue_size, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMomentumMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("all4one")
        parser.add_argument("--proj_output_dim", type=int, default=256)
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--pred_hidden_dim", type=int, default=4096)
        parser.add_argument("--temperature", type=float, default=0.2)
        parser.add_argument("--queue_size", type=int, default=65536)
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [
            {"params": self.projector.parameters()},
            {"params": self.predictor.parameters()},
            {"params": self.predictor2.parameters()},
            {"params": self.transformer_encoder.parameters(), "lr": TRANSFORMER_LR},
        ]

    @property
    def momentum_pairs(self) -> List[Tuple[Any, Any]]:
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    @torch.no_grad()
    def find_nn(self, momentum_z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(N,) index of the nearest support-set entry and (N, 5, D) the 5 nearest, by dot product."""
        nearest = (momentum_z @ self.queue.T).topk(SEQUENCE, dim=1).indices
        return nearest[:, 0], self.queue[nearest]

    @torch.no_grad()
    def enqueue(self, momentum_z: torch.Tensor, labels: torch.Tensor) -> None:
        """Writes (N, D) projections (and their labels, for the logged neighbour accuracy) into the support set."""
        momentum_z, labels = gather(momentum_z), gather(labels)
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(len(momentum_z), device=momentum_z.device)) % self.queue_size
        self.queue[slots] = momentum_z.to(self.queue.dtype)
        self.queue_y[slots] = labels
        self.queue_ptr[0] = (ptr + len(momentum_z)) % self.queue_size

    def summarise(self, sequence: torch.Tensor) -> torch.Tensor:
        """(N, 5, D) -> (N, D): token 0 of the transformer's output on the coded sequence."""
        return self.transformer_encoder(sequence + self.sequence_code)[:, 0]

    def view_outputs(self, feats: torch.Tensor, momentum_feats: torch.Tensor) -> All4OneView:
        """Everything the loss reads of one view, from its online and momentum features (N, F)."""
        z = self.projector(feats)
        with torch.no_grad():
            momentum_z = F.normalize(self.momentum_projector(momentum_feats), dim=-1)
        _, neighbours = self.find_nn(momentum_z)
        p2 = self.predictor2(z)
        strange = torch.cat([p2.unsqueeze(1), neighbours[:, : SEQUENCE - 1]], dim=1)
        return All4OneView(z=z, p=self.predictor(z), strange=self.summarise(strange), momentum_z=momentum_z,
                           nn=neighbours[:, 0], rich=self.summarise(neighbours))

    def all4one_loss(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, dict]:
        """The loss of a pair of views given as :class:`All4OneView` (or tuples in its order): (loss, terms)."""
        z_a, p_a, strange_a, mz_a, nn_a, rich_a = a
        z_b, p_b, strange_b, mz_b, nn_b, rich_b = b
        nn_loss = (nnclr_loss_func(nn_a, p_b, temperature=self.temperature)
                   + nnclr_loss_func(nn_b, p_a, temperature=self.temperature)) / 2
        centroid = (nnclr_loss_func(rich_a, strange_b, temperature=CENTROID_TEMPERATURE)
                    + nnclr_loss_func(rich_b, strange_a, temperature=CENTROID_TEMPERATURE)) / 2
        on_ab, off_ab = feature_contrast(mz_a, z_b)
        on_ba, off_ba = feature_contrast(mz_b, z_a)
        feature = 10 * (0.5 * ((on_ab + on_ba) / 2).sqrt() + 0.5 * ((off_ab + off_ba) / 2).sqrt())
        loss = 0.5 * (centroid + nn_loss + feature)
        return loss, {"train_nnclr_loss": nn_loss, "train_att_nnclr_loss": centroid, "train_feature_loss": feature}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        targets = batch[-1]
        out = super().training_step(batch, batch_idx)
        views = [self.view_outputs(f, mf) for f, mf in zip(out["feats"][:2], out["momentum_feats"][:2])]
        loss, terms = self.all4one_loss(*views)
        nearest_label = self.queue_y[self.find_nn(views[0].momentum_z)[0]]
        self.enqueue(views[0].momentum_z, targets)
        self.log_dict({"train_comb_loss": loss, **terms,
                       "train_nn_acc": (nearest_label == targets).float().mean()}, on_epoch=True, sync_dist=True)
        return loss + out["loss"]
