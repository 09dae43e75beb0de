"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on an expander's output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.distributed import gather
from affssl.heads import bn_mlp
from affssl.methods.base import StepOut
from affssl.precision import fp32
from affssl.spec import VICRegSpec

STD_EPS = 1e-4  # inside the square root of the variance, as the paper


def variance_hinge(z: Tensor) -> Tensor:
    """mean_j max(0, 1 − √(Var(z_j) + ε)) over the D columns of z (N, D), unbiased variance."""
    std = torch.sqrt(z.var(dim=0) + STD_EPS)  # (D,)
    return F.relu(1 - std).mean()


def covariance_penalty(z: Tensor) -> Tensor:
    """Σ_{i≠j} C_ij² / D, C the (D, D) unbiased covariance of z (N, D)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)  # (N, D)
    cov = centred.T @ centred / (n - 1)  # (D, D)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


@fp32
def vicreg_loss(z1: Tensor, z2: Tensor, invariance_weight: float, variance_weight: float,
                covariance_weight: float) -> Tensor:  # fmt: skip
    """λ·MSE(z1, z2) + μ·(v(z1) + v(z2))/2 + ν·(c(z1) + c(z2)); z1, z2: (N, D) paired rows → scalar.

    The variance term is the two views' mean, as in the official code (main_vicreg.py) with which
    the published λ = μ = 25, ν = 1 were tuned; the paper's equation writes the sum.
    """
    invariance = F.mse_loss(z1, z2)
    variance = (variance_hinge(z1) + variance_hinge(z2)) / 2
    covariance = covariance_penalty(z1) + covariance_penalty(z2)
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


class VICReg(nn.Module):
    def __init__(self, spec: VICRegSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.weights = (spec.invariance_weight, spec.variance_weight, spec.covariance_weight)
        self.projector = bn_mlp((feat_dim, spec.proj_hidden, spec.proj_hidden, spec.proj_out))  # the expander

    def embed(self, h: Tensor) -> Tensor:
        """The raw expander output (B, D), as the loss sees it."""
        return self.projector(h)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor) -> StepOut:
        z1, z2 = self.embed(h1), self.embed(h2)  # (B, D) each
        # Variance and covariance are statistics of the global batch: every rank computes the same loss.
        return StepOut(vicreg_loss(gather(z1), gather(z2), *self.weights), z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        pass
