"""SimSiam (Chen & He 2021): predict the other view's projection, with a stop-gradient and no momentum encoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from affssl.heads import bn_mlp
from affssl.methods.base import StepOut
from affssl.precision import fp32
from affssl.spec import SimSiamSpec


@fp32
def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """D(p1, z2)/2 + D(p2, z1)/2 with D(p, z) = −mean cos(p, stopgrad(z)); p, z: (N, D) → scalar in [−1, 1]."""
    term = lambda p, z: -F.cosine_similarity(p, z.detach(), dim=1).mean()  # noqa: E731
    return term(p1, z2) / 2 + term(p2, z1) / 2


class SimSiam(nn.Module):
    def __init__(self, spec: SimSiamSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.projector = bn_mlp((feat_dim, spec.proj_hidden, spec.proj_hidden, spec.proj_out), last_bn=True)
        self.predictor = bn_mlp((spec.proj_out, spec.pred_hidden, spec.proj_out))

    def embed(self, h: Tensor) -> Tensor:
        """The projection z (B, D), before the predictor."""
        return self.projector(h)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor) -> StepOut:
        z1, z2 = self.embed(h1), self.embed(h2)  # (B, D) each
        # Per-sample loss: each process averages its own rows and DDP's gradient average makes the global mean.
        return StepOut(simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2), z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        pass
