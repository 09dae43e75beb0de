"""Momentum (EMA) target networks, shared by BYOL and MoCo v3: the cosine τ schedule and the update."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def ema_tau(tau_base: float, progress: float) -> float:
    """τ = 1 − (1 − τ_base)·(cos(π·progress) + 1)/2: τ_base at the start, 1 at the end."""
    return 1 - (1 - tau_base) * (math.cos(math.pi * progress) + 1) / 2


@torch.no_grad()
def ema_update(pairs: Iterable[tuple[nn.Module, nn.Module]], tau: float) -> None:
    """For each (online, target): target parameters ← τ·target + (1 − τ)·online; buffers copied."""
    for online, target in pairs:
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), 1 - tau)
        for b_online, b_target in zip(online.buffers(), target.buffers(), strict=True):
            b_target.copy_(b_online)
