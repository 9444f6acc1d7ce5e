"""MAE (He et al., 2022, arXiv 2111.06377), solo-learn main's ``mae`` on 1.0.2's base.

A masked autoencoder on a ViT: each large crop's patches are shuffled per image, the
first ``1 - mask_ratio`` of them (and the class token) go through the encoder, a light
transformer decoder fills the others with a learned mask token and predicts their pixels.
The loss is the mean squared error on the masked patches only, against the pixels of
each patch normalised by their own mean and variance when ``norm_pix_loss``, averaged over
the large crops. The online classifier and kNN read the class token of the masked pass in
training (as solo-learn main's do) and of the full image in validation.

What 1.0.2's base lacks and this file adds (solo-learn main builds MAE's ViT as
``vit_mae``): patch masking on 1.0.2's timm ViT (:func:`masked_encode`), the decoder
(:class:`MAEDecoder`), and the fixed 2-D sine-cosine position embedding of MAE's encoder
and decoder. The encoder keeps timm's initialisation.

No Un-Mix variant: a reconstruction loss has no pair of views to assign a mixture to.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from unmix_ext.backbones import fix_position_embedding, is_vit, sincos_position_embedding
from unmix_ext.methods.base import NO_UNMIX_VARIANT, register_method
from solo.methods.base import BaseMethod

NO_UNMIX_VARIANT["mae"] = "a reconstruction loss has no pair of views to assign a mixture to"


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, patches, patch_size^2 * C), patches in row-major order, pixels (row, col, channel)."""
    n, c, h, w = images.shape
    rows, cols = h // patch_size, w // patch_size
    x = images.reshape(n, c, rows, patch_size, cols, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, rows * cols, patch_size * patch_size * c)


def mae_loss(images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, patch_size: int,
             norm_pix_loss: bool = True) -> torch.Tensor:
    """Mean squared error of the predicted pixels on the masked patches.

    Args:
        images: (N, C, H, W) the crop the encoder saw (masked).
        pred: (N, patches, patch_size^2 * C) the decoder's predictions (layout of :func:`patchify`).
        mask: (N, patches), 1 where a patch was masked.
        norm_pix_loss: targets are each patch's pixels less their mean, over their std (+1e-6 in the variance).
    """
    target = patchify(images, patch_size)
    if norm_pix_loss:
        target = (target - target.mean(dim=-1, keepdim=True)) / (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def masked_encode(vit: nn.Module, images: torch.Tensor, mask_ratio: float
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A timm ViT's pass over a random ``1 - mask_ratio`` of each image's patches.

    Returns:
        tokens (N, 1 + kept, D) after the final norm, class token first; mask (N, patches),
        1 where a patch was left out; restore (N, patches): where each patch went in the
        shuffled order (the decoder puts the tokens back with it).
    """
    x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
    n, patches, dim = x.shape
    kept = int(patches * (1 - mask_ratio))
    shuffle = torch.rand(n, patches, device=x.device).argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    x = torch.gather(x, 1, shuffle[:, :kept, None].expand(-1, -1, dim))
    mask = torch.ones(n, patches, device=x.device)
    mask[:, :kept] = 0
    mask = torch.gather(mask, 1, restore)
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(n, -1, -1)
    tokens = vit.norm(vit.blocks(torch.cat([cls, x], dim=1)))
    return tokens, mask, restore


class MAEDecoder(nn.Module):
    """MAE's decoder: encoder tokens and mask tokens back in patch order, transformer blocks, pixels.

    Args:
        in_dim: width of the encoder's tokens.
        embed_dim, depth, num_heads: the decoder's width, blocks and attention heads.
        grid_size: (rows, cols) of the patch grid.
        patch_size: side of a patch in pixels; 3 channels are predicted.
    """

    def __init__(self, in_dim: int, embed_dim: int, depth: int, num_heads: int, grid_size: Tuple[int, int],
                 patch_size: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sincos_position_embedding(grid_size, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.pred = nn.Linear(embed_dim, patch_size * patch_size * 3)
        for module in self.modules():  # MAE's initialisation
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """tokens (N, 1 + kept, in_dim), restore (N, patches) -> (N, patches, patch_size^2 * 3)."""
        x = self.embed(tokens)
        n, patches, dim = x.shape[0], restore.shape[1], x.shape[2]
        filled = torch.cat([x[:, 1:], self.mask_token.expand(n, patches + 1 - x.shape[1], -1)], dim=1)
        filled = torch.gather(filled, 1, restore[:, :, None].expand(-1, -1, dim))
        x = torch.cat([x[:, :1], filled], dim=1) + self.pos_embed
        return self.pred(self.norm(self.blocks(x)))[:, 1:]


@register_method("mae")
class MAE(BaseMethod):
    """MAE on solo-learn 1.0.2's base (ViT encoders only), with solo-learn main's ``method_kwargs``.

    Args:
        mask_ratio: share of each crop's patches left out (0.75).
        decoder_embed_dim, decoder_depth, decoder_num_heads: the decoder (512, 8, 16).
        norm_pix_loss: per-patch normalised pixel targets (False, as solo-learn main's default).

    Raises:
        ValueError: the encoder is not a ViT.
    """

    #: builds on ViT encoders only (the runner refuses any other backbone.name)
    needs_vit = True

    def __init__(self, mask_ratio: float = 0.75, decoder_embed_dim: int = 512, decoder_depth: int = 8,
                 decoder_num_heads: int = 16, norm_pix_loss: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not is_vit(self.encoder):
            raise ValueError(f"mae needs a ViT encoder (vit_tiny, vit_small, ... or timm/vit_*), got "
                             f"{type(self.encoder).__name__}")
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        fix_position_embedding(self.encoder)
        self.patch_size = self.encoder.patch_embed.patch_size[0]
        self.decoder = MAEDecoder(self.features_dim, decoder_embed_dim, decoder_depth, decoder_num_heads,
                                  tuple(self.encoder.patch_embed.grid_size), self.patch_size)

    @staticmethod
    def add_model_specific_args(parent_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parent_parser = BaseMethod.add_model_specific_args(parent_parser)
        parser = parent_parser.add_argument_group("mae")
        parser.add_argument("--mask_ratio", type=float, default=0.75)
        parser.add_argument("--decoder_embed_dim", type=int, default=512)
        parser.add_argument("--decoder_depth", type=int, default=8)
        parser.add_argument("--decoder_num_heads", type=int, default=16)
        parser.add_argument("--norm_pix_loss", type=lambda s: s.lower() in ("1", "true", "yes"), default=False)
        return parent_parser

    @property
    def learnable_params(self) -> List[dict]:
        return super().learnable_params + [{"params": self.decoder.parameters()}]

    def base_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """Training: the masked pass and the decoder's predictions; evaluation: the full image."""
        if not self.training:
            return super().base_forward(X)
        tokens, mask, restore = masked_encode(self.encoder, X, self.mask_ratio)
        feats = self.encoder.forward_head(tokens)
        return {"logits": self.classifier(feats.detach()), "feats": feats, "mask": mask,
                "pred": self.decoder(tokens, restore)}

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        out = super().training_step(batch, batch_idx)
        images = batch[1]
        reconstruction = sum(
            mae_loss(images[i], out["pred"][i], out["mask"][i], self.patch_size, self.norm_pix_loss)
            for i in range(self.num_large_crops)) / self.num_large_crops
        self.log("train_reconstruction_loss", reconstruction, on_epoch=True, sync_dist=True)
        return reconstruction + out["loss"]
