"""wmse_cholesky: W-MSE's whitening calls functions torch removed.

Symptom: W-MSE fails in its first step with
"torch.cholesky is deprecated in favor of torch.linalg.cholesky" (an error, not a
warning, on torch 2.x) and, after that, ``torch.triangular_solve`` is deprecated.
Cause: ``Whitening2d.forward`` computes the inverse square root of the covariance
with ``torch.triangular_solve(eye, torch.cholesky(cov), upper=False)``.
Fix: the same whitening with ``torch.linalg.cholesky`` and
``torch.linalg.solve_triangular``, computed in float32 with autocast off (as the
upstream ``custom_fwd(cast_inputs=torch.float32)`` intended, on any device).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unmix_ext.patches._core import function_patch

TARGET = "solo.utils.whitening:Whitening2d.forward"


def forward(self, x: torch.Tensor) -> torch.Tensor:
    """(N, D) features -> (N, D) whitened features (zero mean, identity covariance)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        centred = x - x.mean(dim=0, keepdim=True)
        cov = centred.T @ centred / (x.shape[0] - 1)
        eye = torch.eye(self.output_dim, device=x.device, dtype=x.dtype)
        cov = (1 - self.eps) * cov + self.eps * eye
        # W = L^-1 with cov = L L^T, so W cov W^T = I
        inv_sqrt = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), eye, upper=False)
        return F.linear(centred, inv_sqrt)


PATCH = function_patch(
    name="wmse_cholesky",
    summary="W-MSE fails: torch.cholesky / torch.triangular_solve removed from torch 2.x",
    upstream={TARGET: "e80c1d42df832eb4297f2d26e46417194f26552198677867e4b876265f76c609"},
    replacements={TARGET: forward},
)
