"""Barlow Twins (Zbontar et al. 2021): drive the views' cross-correlation matrix towards identity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.distributed import gather
from affssl.heads import mlp
from affssl.methods.base import StepOut
from affssl.precision import fp32
from affssl.spec import BarlowSpec


@fp32
def barlow_loss(z1: Tensor, z2: Tensor, lambda_offdiag: float) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij², C the (D, D) cross-correlation of batch-standardised z1, z2 (N, D).

    Standardisation uses the batch mean and the unbiased standard deviation per dimension.
    """
    n = z1.shape[0]
    a = (z1 - z1.mean(0)) / z1.std(0)  # (N, D)
    b = (z2 - z2.mean(0)) / z2.std(0)  # (N, D)
    c = a.T @ b / n  # (D, D)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


class BarlowTwins(nn.Module):
    def __init__(self, spec: BarlowSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.lambda_offdiag = spec.lambda_offdiag
        self.l2_normalize = spec.l2_normalize
        self.loss_scale = spec.loss_scale
        self.projector = mlp(feat_dim, spec.proj_hidden, spec.proj_out)

    def embed(self, h: Tensor) -> Tensor:
        z = self.projector(h)  # (B, D)
        return F.normalize(z, dim=1) if self.l2_normalize else z

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor) -> StepOut:
        z1, z2 = self.embed(h1), self.embed(h2)
        loss = self.loss_scale * barlow_loss(gather(z1), gather(z2), self.lambda_offdiag)  # × 1.0 is exact
        return StepOut(loss, z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        pass
