"""Optimizer factory and the learning rate as a pure function of the step.

`optim.exclude_bias_norm` (resolved: on for LARS, off for the others) keeps weight decay off every
tensor of fewer than 2 dimensions (biases, normalisation scales), as ViT and LARS recipes train: for
Adam/AdamW/SGD each group is split into its matrices and those tensors at weight_decay 0; LARS also
leaves them out of the trust ratio (affssl.lars).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from affssl.lars import LARS, excluded
from affssl.spec import OptimSpec


def build_optimizer(
    params: list[nn.Parameter] | list[dict], spec: OptimSpec, fused: bool = False
) -> torch.optim.Optimizer:
    """params: tensors, or groups of them (each group may carry its own keys, such as the engine's lr_scale)."""
    if spec.name == "lars":
        return LARS(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, eta=spec.eta,
                    clip_lr=spec.clip_lr, exclude_bias_norm=bool(spec.exclude_bias_norm))  # fmt: skip
    if spec.exclude_bias_norm:
        params = without_decay_on_vectors(params)
    extra = {"fused": True} if fused else {}
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, **extra)
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, **extra)


def without_decay_on_vectors(params: list[nn.Parameter] | list[dict]) -> list[dict]:
    """Each group split in two: its tensors of ≥ 2 dimensions as they were, then the rest at weight_decay 0."""
    groups = params if params and isinstance(params[0], dict) else [{"params": list(params)}]
    out = []
    for group in groups:
        tensors = list(group["params"])
        out.append({**group, "params": [p for p in tensors if not excluded(p)]})
        out.append({**group, "params": [p for p in tensors if excluded(p)], "weight_decay": 0.0})
    return [g for g in out if g["params"]]


def lr_at(step: int, total_steps: int, steps_per_epoch: int, spec: OptimSpec) -> float:
    """Linear warm-up over warmup_epochs, then constant (the paper's effective schedule) or cosine to 0."""
    warmup = int(spec.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return spec.lr * (step + 1) / warmup
    if spec.schedule == "constant":
        return spec.lr
    progress = (step - warmup) / max(1, total_steps - warmup)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * progress))
