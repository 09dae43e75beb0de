"""SimCLR (Chen et al. 2020): NT-Xent over the two views' L2-normalised projections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl.distributed import gather
from affssl.heads import mlp
from affssl.methods.base import StepOut
from affssl.precision import fp32
from affssl.spec import SimCLRSpec


@fp32
def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Normalised-temperature cross entropy. z1, z2: (N, D) paired rows → scalar, mean over 2N anchors.

    Each of the 2N embeddings is an anchor whose positive is its pair and whose negatives are
    the other 2N − 2 embeddings; similarities are cosines divided by the temperature.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, D)
    n = z1.shape[0]
    logits = z @ z.T / temperature  # (2N, 2N)
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, positives)


@fp32
def multicrop_nt_xent(z: Tensor, temperature: float) -> Tensor:
    """NT-Xent with local views as extra positives (SwAV's multi-crop, solo-learn's multi-positive form).

    z: (V, N, D), crops 0 and 1 the global views. Every crop is an anchor; its positives are the other crops
    of its image that pair with it (a global view pairs with every other crop, a local view with the two
    global views only), its negatives every crop of the other images. Loss of an anchor:
    −log(Σ_pos e^s / (Σ_pos e^s + Σ_neg e^s)), s the cosine ÷ temperature; mean over the V·N anchors.
    With V = 2 it is nt_xent.
    """
    V, N, D = z.shape
    z = F.normalize(z.reshape(V * N, D), dim=1)  # (V·N, D), crop c of image i in row c·N + i
    logits = z @ z.T / temperature  # (V·N, V·N)
    crop = torch.arange(V, device=z.device).repeat_interleave(N)  # (V·N,)
    image = torch.arange(N, device=z.device).repeat(V)  # (V·N,)
    same = image[:, None] == image[None, :]  # (V·N, V·N)
    is_global = crop < 2
    positive = same & (is_global[:, None] | is_global[None, :]) & (crop[:, None] != crop[None, :])
    counted = positive | ~same  # positives and negatives; unpaired local crops of the same image are left out
    log_pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)  # (V·N,)
    log_all = torch.logsumexp(logits.masked_fill(~counted, float("-inf")), dim=1)
    return (log_all - log_pos).mean()


class SimCLR(nn.Module):
    def __init__(self, spec: SimCLRSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.temperature = spec.temperature
        self.projector = mlp(feat_dim, spec.proj_hidden, spec.proj_out)

    def embed(self, h: Tensor) -> Tensor:
        """Projector output as the loss sees it: L2-normalised (B, D)."""
        return F.normalize(self.projector(h), dim=1)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor, local: Tensor | None = None) -> StepOut:
        """h1, h2: (B, F) global views' features; local: (M·B, F) local views' features, view c in rows c·B…"""
        z1, z2 = self.embed(h1), self.embed(h2)  # (B, D) each
        if local is None:
            return StepOut(nt_xent(gather(z1), gather(z2), self.temperature), z1, z2)
        z = torch.cat([z1, z2, self.embed(local)]).view(-1, *z1.shape)  # (V, B, D)
        V, B, D = z.shape
        z = gather(z.transpose(0, 1).reshape(B, V * D)).view(-1, V, D).transpose(0, 1)  # (V, world·B, D)
        return StepOut(multicrop_nt_xent(z, self.temperature), z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        pass
