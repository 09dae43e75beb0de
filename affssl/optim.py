"""Optimizer factory and the learning rate as a pure function of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from affssl.spec import OptimSpec


def build_optimizer(
    params: list[nn.Parameter] | list[dict], spec: OptimSpec, fused: bool = False
) -> torch.optim.Optimizer:
    """params: tensors, or groups of them (each group may carry its own keys, such as the engine's lr_scale)."""
    extra = {"fused": True} if fused else {}
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, **extra)


def lr_at(step: int, total_steps: int, steps_per_epoch: int, spec: OptimSpec) -> float:
    """Linear warm-up over warmup_epochs, then constant (the paper's effective schedule) or cosine to 0."""
    warmup = int(spec.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    if spec.schedule == "constant":
        return spec.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * progress))
