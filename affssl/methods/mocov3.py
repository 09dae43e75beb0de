"""MoCo v3 (Chen et al. 2021, ResNet variant): queries from an online predictor, keys from a momentum encoder.

The keys of a step are the momentum encoder's projections of the whole global batch; each query's
positive is the key of the same image's other view, every other key is a negative. No queue.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl import distributed
from affssl.heads import bn_mlp
from affssl.methods.base import StepOut
from affssl.methods.momentum import ema_tau, ema_update
from affssl.precision import fp32
from affssl.spec import MoCoV3Spec


def info_nce(q: Tensor, k: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """2τ · cross-entropy of cos(q_i, k_j)/τ with positive j = offset + i; q (n, D), k (N, D) → scalar.

    q are this process's queries, k the keys of the global batch (no gradient); offset is the position
    of this process's first image in it. The 2τ factor is the official code's, which keeps the gradient
    scale independent of τ.
    """
    q = F.normalize(q, dim=1)  # (n, D)
    k = F.normalize(k.detach(), dim=1)  # (N, D)
    logits = q @ k.T / temperature  # (n, N)
    labels = torch.arange(offset, offset + q.shape[0], device=q.device)  # (n,)
    return F.cross_entropy(logits, labels) * (2 * temperature)


@fp32
def mocov3_loss(q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """Symmetrised: each view's queries against the other view's keys."""
    return info_nce(q1, k2, temperature, offset) + info_nce(q2, k1, temperature, offset)


class MoCoV3(nn.Module):
    def __init__(self, spec: MoCoV3Spec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.temperature = spec.temperature
        self.momentum_base = spec.momentum_base
        self.projector = bn_mlp((feat_dim, spec.proj_hidden, spec.proj_out), last_bn=True)
        self.predictor = bn_mlp((spec.proj_out, spec.pred_hidden, spec.proj_out))
        # The momentum encoder is a separate copy (never the online tensors: safetensors refuses sharing).
        self.momentum_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    def embed(self, h: Tensor) -> Tensor:
        """The online projection (B, D), before the predictor."""
        return self.projector(h)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor) -> StepOut:
        z1, z2 = self.embed(h1), self.embed(h2)  # (b, D) each
        with torch.no_grad():
            k1 = distributed.gather(self.momentum_projector(self.momentum_backbone(v1)))  # (world·b, D)
            k2 = distributed.gather(self.momentum_projector(self.momentum_backbone(v2)))
        offset = distributed.rank() * h1.shape[0]  # this process's rows in the global batch of keys
        loss = mocov3_loss(self.predictor(z1), self.predictor(z2), k1, k2, self.temperature, offset)
        return StepOut(loss, z1, z2)

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        """EMA update of the momentum encoder towards the online backbone and projector."""
        pairs = ((backbone, self.momentum_backbone), (self.projector, self.momentum_projector))
        ema_update(pairs, ema_tau(self.momentum_base, progress))
