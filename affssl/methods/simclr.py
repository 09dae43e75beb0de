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


class SimCLR(nn.Module):
    def __init__(self, spec: SimCLRSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.temperature = spec.temperature
        self.projector = mlp(feat_dim, spec.proj_hidden, spec.proj_out)

    def embed(self, h: Tensor) -> Tensor:
        """Projector output as the loss sees it: L2-normalised (B, D)."""
        return F.normalize(self.projector(h), dim=1)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor) -> StepOut:
        z1, z2 = self.embed(h1), self.embed(h2)  # (B, D) each
        loss = nt_xent(gather(z1), gather(z2), self.temperature)
        return StepOut(loss, z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        pass
