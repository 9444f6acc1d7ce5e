"""offdiagonal_mask: Barlow Twins' and VICReg's losses index a D x D matrix with a boolean mask.

Symptom: at small batches Barlow Twins and VICReg steps are much slower than the
other methods' (on 2 CPU cores, batch 16: 22% of a Barlow Twins step is
``aten::nonzero`` and the index ops around it), and on a GPU every loss call
waits for the device: a boolean index has a data-dependent size, so torch
copies the mask's count back to the host.
Cause: ``barlow_loss_func`` scales the off-diagonal entries of the (D, D)
cross-correlation with ``cdif[~diag.bool()] *= lamb``, and ``covariance_loss``
sums the off-diagonal squares with ``cov[~diag.bool()]``; with solo's D = 2048
each is a 4M-element ``nonzero`` forward and an index-put backward, per call.
The Un-Mix variants call the loss three times a step, so they pay it three times.
Fix: the same sums with a dense (D, D) weight (1 or ``lamb`` on the diagonal, 1
or 0 off it): elementwise products, no data-dependent shapes, the same values
up to float summation order.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from unmix_ext.patches._core import function_patch

BARLOW = "solo.losses.barlow:barlow_loss_func"
COVARIANCE = "solo.losses.vicreg:covariance_loss"


def barlow_loss_func(z1: torch.Tensor, z2: torch.Tensor, lamb: float = 5e-3,
                     scale_loss: float = 0.025) -> torch.Tensor:
    """(N, D) projections of two views -> scalar: sum_i (C_ii - 1)^2 + lamb * sum_{i != j} C_ij^2, scaled.

    C is the (D, D) cross-correlation of the batch-normalised projections,
    averaged over processes when distributed (as upstream).
    """
    n, d = z1.shape
    bn = torch.nn.BatchNorm1d(d, affine=False).to(z1.device)  # upstream's normalisation, kept for equal values
    corr = torch.einsum("bi, bj -> ij", bn(z1), bn(z2)) / n
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(corr)
        corr = corr / dist.get_world_size()
    eye = torch.eye(d, device=corr.device, dtype=corr.dtype)
    weight = lamb + (1.0 - lamb) * eye
    return scale_loss * ((corr - eye).pow(2) * weight).sum()


def covariance_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """(N, D) projections of two views -> scalar: the sum of squared off-diagonal covariances of each, / D."""
    n, d = z1.shape
    off_diagonal = 1.0 - torch.eye(d, device=z1.device, dtype=z1.dtype)
    loss = z1.new_zeros(())
    for z in (z1, z2):
        centred = z - z.mean(dim=0)
        cov = centred.T @ centred / (n - 1)
        loss = loss + (cov.pow(2) * off_diagonal).sum() / d
    return loss


PATCH = function_patch(
    name="offdiagonal_mask",
    summary="Barlow Twins / VICReg losses: boolean-mask indexing of D x D (nonzero, a GPU sync, each call)",
    upstream={
        BARLOW: "50168e71122d5f6f9ad29798c49d5911b8af2a0a7194177340d5a05270b7088f",
        COVARIANCE: "c474af397665c32b677c28ceb31a37caef807c5ad2f0bd9886760292fa263139",
    },
    # every binding of barlow_loss_func: its module, the package's re-export and the method
    # module that imported it by name; vicreg_loss_func looks covariance_loss up in its module
    replacements={
        BARLOW: barlow_loss_func,
        "solo.losses:barlow_loss_func": barlow_loss_func,
        "solo.methods.barlow_twins:barlow_loss_func": barlow_loss_func,
        COVARIANCE: covariance_loss,
    },
)
