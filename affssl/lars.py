"""LARS (You et al. 2017, "Large batch training of convolutional networks"): SGD with momentum whose
step for each tensor is scaled by a layer-wise trust ratio.

For a tensor w with gradient g, at the scheduled rate lr, weight decay λ, trust coefficient η and
momentum μ (the form solo-learn, lightly and DINO train with; You et al.'s eq. 6 with weight decay):

    d = g + λ·w
    r = η·‖w‖ / (‖g‖ + λ·‖w‖ + ε)         the trust ratio; r = 1 and d = g where ‖w‖ or ‖g‖ is 0
    clip_lr:  r = min(r / lr, 1)          the tensor's rate becomes min(η‖w‖ / (‖g‖ + λ‖w‖), lr)
    v = μ·v + r·d                         (v = r·d at the first step, as torch.optim.SGD starts)
    w = w − lr·v

An excluded tensor (every tensor of fewer than 2 dimensions — biases, BatchNorm/LayerNorm scales —
in a group with exclude_bias_norm) gets neither the ratio nor weight decay: d = g, plain SGD with
momentum. clip_lr keeps the tensor's rate from exceeding the global one, as apex's LARC "clip"
mode does (solo-learn's `clip_lars_lr`); without it the rate is lr·r. ε = 1e-8 as the peers.
The ratio is computed on the device, so a step never waits for the host. The only state is each
tensor's `momentum_buffer`, saved and restored with the checkpoint like SGD's.
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-8  # in the trust ratio's denominator, as solo-learn and lightly


def excluded(p: Tensor) -> bool:
    """Biases and normalisation scales: the tensors with fewer than 2 dimensions."""
    return p.ndim < 2


class LARS(torch.optim.Optimizer):
    """SGD with momentum and per-tensor trust ratio; group keys lr, momentum, weight_decay, eta, clip_lr,
    exclude_bias_norm (each group may override them, like torch's optimizers)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = True,
        exclude_bias_norm: bool = True,
    ):
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs lr > 0, 0 ≤ momentum < 1, weight_decay ≥ 0, eta > 0; got "
                             f"{lr}, {momentum}, {weight_decay}, {eta}")  # fmt: skip
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "clip_lr": clip_lr,
                    "exclude_bias_norm": exclude_bias_norm}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:  # frozen this step (or unused): no update, the momentum kept as it is
                    continue
                g = p.grad
                if not (group["exclude_bias_norm"] and excluded(p)):
                    g = self._scaled(p, g, lr, wd, group["eta"], group["clip_lr"])
                state = self.state[p]
                if mu == 0:
                    update = g
                elif "momentum_buffer" not in state:
                    update = state["momentum_buffer"] = torch.clone(g).detach()
                else:
                    update = state["momentum_buffer"].mul_(mu).add_(g)
                p.add_(update, alpha=-lr)
        return loss

    @staticmethod
    def _scaled(p: Tensor, g: Tensor, lr: float, wd: float, eta: float, clip_lr: bool) -> Tensor:
        """r·(g + λ·w) where both norms are positive, else g: one pass over the tensor, the choice made on 0-d
        tensors (no host sync)."""
        w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)  # () each
        ok = ((w_norm > 0) & (g_norm > 0)).to(p.dtype)  # () 1 or 0
        ratio = eta * w_norm / (g_norm + wd * w_norm + EPS)  # ()
        if clip_lr:
            ratio = torch.clamp(ratio / lr, max=1.0)
        ratio = ok * ratio + (1 - ok)  # () r, or exactly 1
        return torch.addcmul(g, p, ok * wd).mul_(ratio)  # g + (λ or exactly 0)·w, times the ratio
