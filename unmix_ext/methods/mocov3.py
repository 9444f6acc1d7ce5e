"""MoCo V3 (Chen, Xie and He, 2021, arXiv 2104.02057), solo-learn main's ``mocov3`` on 1.0.2's base.

solo-learn 1.0.2 has no MoCo V3. As solo-learn main builds it: an online encoder, projector
and predictor, a momentum encoder and projector, and a loss symmetric over the two views in
which each query (the predictor's output on one view) is contrasted with the momentum keys
of the other view in the batch (no queue): ``c(q, k) = 2T * CE(q k^T / T, i)`` for row i,
with q and k normalised, the keys gathered from every process.

Heads: on a ResNet, a 2-layer projector ending in BatchNorm without affine and a 2-layer
predictor without it; on any other encoder (ViT), a 3-layer projector and a 2-layer
predictor, both ending in that BatchNorm. Linear layers have no bias.

What 1.0.2's base lacks and this file adds (solo-learn main builds MoCo V3's ViT as
``vit_mocov3``): on a ViT, the position embedding is the fixed 2-D sine-cosine one
(:func:`unmix_ext.backbones.fix_position_embedding`) and the weights are initialised as
MoCo v3 does (:func:`init_mocov3_vit`). Not added: MoCo v3's ViT-S has 12 attention heads
where 1.0.2's ``vit_small`` has 6; the width and weights are the same, and keeping 1.0.2's
head count keeps the network that the linear evaluation and export rebuild by name equal to
the one trained.

The momentum coefficient follows solo-learn's cosine schedule from ``momentum.base_tau``
(0.99) to ``momentum.final_tau`` (1.0) over the run's optimizer steps; the temperature is
constant.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, List, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from solo.methods.base import BaseMomentumMethod
from solo.utils.misc import gather
from solo.utils.momentum import initialize_momentum_params

from unmix_ext.backbones import fix_position_embedding, is_resnet, is_vit
from unmix_ext.methods.base import register_method


def mocov3_loss_rows(query: torch.Tensor, key: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo V3's contrastive loss of each query against the batch's keys: ``2T * CE(q k^T / T, i)``.

    Args:
        query: (N, D) predictor outputs on one view (normalised here).
        key: (N, D) momentum keys of the other view (normalised here, gathered from every process).
        temperature: T.

    Returns:
        (N,) one value per query; their mean is solo-learn main's ``mocov3_loss_func``.
    """
    query = F.normalize(query, dim=1)
    key = gather(F.normalize(key, dim=1).detach())
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    # the positive of query i is key i of this process's slice of the gathered keys
    labels = torch.arange(query.shape[0], device=query.device) + query.shape[0] * rank
    return F.cross_entropy(query @ key.T / temperature, labels, reduction="none") * (2 * temperature)


def mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, last_bn: bool = True) -> nn.Sequential:
    """MoCo V3's heads: Linear (no bias) + BatchNorm + ReLU between layers; ``last_bn``: a BatchNorm
    without affine after the last layer (as SimCLR)."""
    layers: List[nn.Module] = []
    for i in range(num_layers):
        last = i == num_layers - 1
        layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, out_dim if last else hidden_dim, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


@torch.no_grad()
def init_mocov3_vit(vit: nn.Module) -> None:
    """MoCo v3's ViT initialisation, in place: Xavier-uniform linear layers (q, k and v each as its
    own matrix), zero biases, the patch projection as a linear layer, a near-zero class token."""
    for name, module in vit.named_modules():
        if isinstance(module, nn.Linear):
            fan_out = module.weight.shape[0] // 3 if "qkv" in name else module.weight.shape[0]
            bound = math.sqrt(6.0 / (fan_out + module.weight.shape[1]))
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(vit.cls_token, std=1e-6)
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / (proj.weight[0].numel() + proj.weight.shape[0]))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)


@register_method("mocov3")
class MoCoV3(BaseMomentumMethod):
    """MoCo V3 on solo-learn 1.0.2's momentum base, with solo-learn main's ``method_kwargs``.

    Args:
        proj_output_dim: key/query dimension (256).
        proj_hidden_dim: hidden width of the projectors (4096).
        pred_hidden_dim: hidden width of the predictor (4096).
        temperature: softmax temperature T (0.2).
    """

    def __init__(self, proj_output_dim: int = 256, proj_hidden_dim: int = 4096, pred_hidden_dim: int = 4096,
                 temperature: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        resnet = is_resnet(self.encoder)
        proj_layers = 2 if resnet else 3
        self.projector = mlp(proj_layers, self.features_dim, proj_hidden_dim, proj_output_dim)
        self.momentum_projector = mlp(proj_layers, self.features_dim, proj_hidden_dim, proj_output_dim)
        self.predictor = mlp(2, proj_output_dim, pred_hidden_dim, proj_output_dim, last_bn=not resnet)
        if is_vit(self.encoder):
            for vit in (self.encoder, self.momentum_encoder):
                fix_position_embedding(vit)
            init_mocov3_vit(self.encoder)
            initialize_momentum_params(self.encoder, self.momentum_encoder)
        initialize_momentum_params(self.projector, self.momentum_projector)

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMomentumMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("mocov3")
        parser.add_argument("--proj_output_dim", type=int, default=256)
        parser.add_argument("--proj_hidden_dim", type=int, default=4096)
        parser.add_argument("--pred_hidden_dim", type=int, default=4096)
        parser.add_argument("--temperature", type=float, default=0.2)
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [{"params": self.projector.parameters()},
                                           {"params": self.predictor.parameters()}]

    @property
    def momentum_pairs(self) -> List[Tuple[Any, Any]]:
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        q = [self.predictor(self.projector(f)) for f in out["feats"][:2]]
        with torch.no_grad():
            k = [self.momentum_projector(f) for f in out["momentum_feats"][:2]]
        contrastive = (mocov3_loss_rows(q[0], k[1], self.temperature).mean()
                       + mocov3_loss_rows(q[1], k[0], self.temperature).mean())
        self.log("train_contrastive_loss", contrastive, on_epoch=True, sync_dist=True)
        return contrastive + out["loss"]
