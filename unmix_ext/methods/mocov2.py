"""MoCo v2 as published, the base method of the paper's Table 1.

solo-learn 1.0.2 ships MoCo V2+ only (symmetric loss, a queue per view, a 2-layer head
with a large hidden layer). The Un-Mix paper's ImageNet table is MoCo v2 (Chen et al.,
2020, arXiv 2003.04297): an asymmetric loss (queries of view 0 against keys of view 1),
one queue of keys, a 2-layer MLP head 2048-128 and temperature 0.2. ``mlp=False`` with
``temperature=0.07`` is MoCo v1 (He et al., 2020). ``symmetric=True`` adds the swapped
term and enqueues both keys, as the MoCo authors' CIFAR demo does.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from solo.losses.moco import moco_loss_func
from solo.methods.base import BaseMomentumMethod
from solo.utils.misc import gather
from solo.utils.momentum import initialize_momentum_params

from unmix_ext.methods.base import register_method


def _head(in_dim: int, hidden_dim: int, out_dim: int, mlp: bool) -> nn.Module:
    if not mlp:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


@register_method("mocov2")
class MoCoV2(BaseMomentumMethod):
    """MoCo v2 (v1 with ``mlp=False, temperature=0.07``) on solo-learn's momentum base.

    Args:
        proj_output_dim: key/query dimension (128).
        proj_hidden_dim: hidden width of the MLP head (2048).
        temperature: softmax temperature T (0.2 for v2, 0.07 for v1).
        queue_size: number of negative keys kept (65536 on ImageNet, 4096 on CIFAR).
        mlp: 2-layer MLP head (v2) or a linear head (v1).
        symmetric: also contrast queries of view 1 with keys of view 0.
    """

    queue: torch.Tensor

    def __init__(self, proj_output_dim: int = 128, proj_hidden_dim: int = 2048,
                 temperature: float = 0.2, queue_size: int = 65536, mlp: bool = True,
                 symmetric: bool = False, **kwargs):
        super().__init__(**kwargs)
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1 for mocov2, got {queue_size}")
        self.temperature = temperature
        self.queue_size = queue_size
        self.symmetric = symmetric
        self.projector = _head(self.features_dim, proj_hidden_dim, proj_output_dim, mlp)
        self.momentum_projector = _head(self.features_dim, proj_hidden_dim, proj_output_dim, mlp)
        initialize_momentum_params(self.projector, self.momentum_projector)
        self.register_buffer("queue", F.normalize(torch.randn(proj_output_dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMomentumMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("mocov2")
        parser.add_argument("--proj_output_dim", type=int, default=128)
        parser.add_argument("--proj_hidden_dim", type=int, default=2048)
        parser.add_argument("--temperature", type=float, default=0.2)
        parser.add_argument("--queue_size", type=int, default=65536)
        parser.add_argument("--mlp", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
        parser.add_argument("--symmetric", action="store_true")
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [{"params": self.projector.parameters()}]

    @property
    def momentum_pairs(self) -> List[Tuple[Any, Any]]:
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    def forward(self, X: torch.Tensor, *args, **kwargs) -> Dict[str, Any]:
        out = super().forward(X, *args, **kwargs)
        return {**out, "z": F.normalize(self.projector(out["feats"]), dim=-1)}

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Writes (N, D) keys into the ring buffer of negatives, wrapping at its end."""
        keys = gather(keys)
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.queue_size

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        q = [F.normalize(self.projector(f), dim=-1) for f in out["feats"][:2]]
        with torch.no_grad():
            k = [F.normalize(self.momentum_projector(f), dim=-1) for f in out["momentum_feats"][:2]]
        queue = self.queue.clone().detach()
        nce_loss = moco_loss_func(q[0], k[1], queue, self.temperature)
        if self.symmetric:
            nce_loss = nce_loss + moco_loss_func(q[1], k[0], queue, self.temperature)
        self.enqueue(torch.cat([k[1], k[0]]) if self.symmetric else k[1])
        self.log("train_nce_loss", nce_loss, on_epoch=True, sync_dist=True)
        return nce_loss + out["loss"]
