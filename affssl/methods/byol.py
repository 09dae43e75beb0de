"""BYOL (Grill et al. 2020): predict an EMA target network's projection of the other view."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.heads import mlp
from affssl.methods.base import StepOut
from affssl.methods.momentum import ema_tau, ema_update
from affssl.precision import fp32
from affssl.spec import BYOLSpec


@fp32
def byol_loss(p1: Tensor, p2: Tensor, t1: Tensor, t2: Tensor) -> Tensor:
    """Symmetrised 2 − 2·cos(p, t): online predictions p (N, D) against the other view's targets t."""
    term = lambda p, t: (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()  # noqa: E731
    return term(p1, t2) + term(p2, t1)


@fp32
def multicrop_byol_loss(p: Tensor, t: Tensor) -> Tensor:
    """2 · the mean over pairs (target global view i, prediction of crop j ≠ i) of mean 2 − 2·cos(p_j, t_i).

    p: (V, N, D) online predictions of every crop, the first two the global views; t: (2, N, D) targets of
    the global views. The factor 2 keeps the two-view loss's scale (V = 2 gives byol_loss), so one λ fits.
    """
    cos = F.cosine_similarity(p[None], t.detach()[:, None], dim=-1).mean(-1)  # (2, V) mean cosine of each pair
    pairs = ~torch.eye(2, p.shape[0], dtype=torch.bool, device=p.device)  # (2, V) j ≠ i
    return 2 * (2 - 2 * cos[pairs]).mean()


class BYOL(nn.Module):
    def __init__(self, spec: BYOLSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.tau_base = spec.tau_base
        self.lr_scales = {"predictor": spec.pred_lr_scale}  # submodule → multiple of the scheduled rate
        self.projector = mlp(feat_dim, spec.proj_hidden, spec.proj_out)
        self.predictor = mlp(spec.proj_out, spec.pred_hidden, spec.proj_out)
        # The target is a separate copy (never the online tensors: safetensors refuses sharing).
        self.target_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def embed(self, h: Tensor) -> Tensor:
        """The raw online projection (paper §1.4, location 'g' for BYOL)."""
        return self.projector(h)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor, local: Tensor | None = None) -> StepOut:
        """h1, h2: (B, F) global views' features; local: (M·B, F) local views' features (their targets: none)."""
        z1, z2 = self.embed(h1), self.embed(h2)  # (B, D)
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(v1))  # (B, D)
            t2 = self.target_projector(self.target_backbone(v2))
        if local is None:
            return StepOut(byol_loss(self.predictor(z1), self.predictor(z2), t1, t2), z1, z2)
        crops = (z1, z2, self.embed(local))  # each set through the heads on its own, as the two views
        p = torch.cat([self.predictor(z) for z in crops]).view(-1, *z1.shape)  # (V, B, D)
        return StepOut(multicrop_byol_loss(p, torch.stack([t1, t2])), z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        """EMA update of the target towards the online backbone and projector."""
        pairs = ((backbone, self.target_backbone), (self.projector, self.target_projector))
        ema_update(pairs, ema_tau(self.tau_base, progress))
