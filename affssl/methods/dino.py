"""DINO (Caron et al. 2021): a student matches an EMA teacher's centred, sharpened softmax over prototypes.

Student: backbone → 3-layer MLP → L2-normalised bottleneck → weight-normalised prototypes, on every crop
(the two global views and the local ones). Teacher: an EMA copy of all three, on the global views only.
The loss is the cross-entropy H(teacher_i, student_j) averaged over every pair of a teacher global view i
and a student crop j ≠ i. The teacher's logits are centred by an EMA of their global-batch mean (the
centre is module state, checkpointed) and sharpened by a temperature warmed up per epoch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from affssl import distributed
from affssl.methods.base import StepOut
from affssl.methods.momentum import ema_tau, ema_update
from affssl.precision import fp32
from affssl.spec import DINOSpec

GLOBAL_VIEWS = 2


@fp32
def dino_loss(student: Tensor, teacher: Tensor, center: Tensor, student_temp: float, teacher_temp: float) -> Tensor:
    """Mean over pairs (teacher global view i, student crop j ≠ i) of H(q_i, p_j) = −Σ_k q_ik · log p_jk.

    q_i = softmax((t_i − c)/τ_t), p_j = softmax(s_j/τ_s). student: (V, N, K) logits of V crops, the first
    two the global views; teacher: (2, N, K) logits of the global views (no gradient); center: (1, K).
    Each pair's cross-entropy is the mean over the N images.
    """
    log_p = F.log_softmax(student / student_temp, dim=-1)  # (V, N, K)
    q = F.softmax((teacher.detach() - center) / teacher_temp, dim=-1)  # (2, N, K)
    ce = -torch.einsum("ink,vnk->iv", q, log_p) / student.shape[1]  # (2, V) cross-entropy of each pair
    pairs = ~torch.eye(GLOBAL_VIEWS, student.shape[0], dtype=torch.bool, device=ce.device)  # (2, V) j ≠ i
    return ce[pairs].mean()


def updated_center(center: Tensor, batch_mean: Tensor, momentum: float) -> Tensor:
    """c ← m·c + (1 − m)·mean of the teacher's logits over the global batch; center, batch_mean: (1, K)."""
    return center * momentum + batch_mean * (1 - momentum)


def teacher_temp_at(epoch: int, spec: DINOSpec) -> float:
    """Linear from teacher_temp_start at epoch 0 to teacher_temp at epoch warmup − 1 (DINO's linspace), then flat."""
    warmup = spec.teacher_temp_warmup_epochs
    if epoch >= warmup:
        return spec.teacher_temp
    if warmup == 1:
        return spec.teacher_temp_start
    return spec.teacher_temp_start + (spec.teacher_temp - spec.teacher_temp_start) * epoch / (warmup - 1)


def dino_mlp(in_dim: int, hidden: int, out_dim: int, bn: bool) -> nn.Sequential:
    """Linear → [BN] → GELU → Linear → [BN] → GELU → Linear, weights N(0, 0.02) truncated, biases 0 (the paper's)."""
    norm = (lambda d: [nn.BatchNorm1d(d)]) if bn else (lambda d: [])
    layers = [nn.Linear(in_dim, hidden), *norm(hidden), nn.GELU(), nn.Linear(hidden, hidden), *norm(hidden),
              nn.GELU(), nn.Linear(hidden, out_dim)]  # fmt: skip
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def prototypes_layer(bottleneck: int, prototypes: int, norm_last_layer: bool) -> nn.Linear:
    """Weight-normalised Linear without bias: each prototype row w_k = g_k · v_k/‖v_k‖, g initialised to 1.

    State-dict keys parametrizations.weight.original0 (g, (K, 1)) and .original1 (v, (K, D)); with
    norm_last_layer, g stays 1 (no gradient), so the logits are cosines between bottleneck and prototypes.
    """
    layer = weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
    g = layer.parametrizations.weight.original0
    with torch.no_grad():
        g.fill_(1.0)
    g.requires_grad_(not norm_last_layer)
    return layer


class DINO(nn.Module):
    def __init__(self, spec: DINOSpec, backbone: nn.Module, feat_dim: int):
        super().__init__()
        self.spec = spec
        self.epoch = 0  # set by start_epoch: the teacher temperature and the frozen last layer follow it
        self.projector = dino_mlp(feat_dim, spec.proj_hidden, spec.proj_out, spec.head_bn)
        self.prototypes = prototypes_layer(spec.proj_out, spec.prototypes, spec.norm_last_layer)
        # The teacher is a separate copy (never the student's tensors: safetensors refuses sharing).
        self.teacher_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.teacher_prototypes = copy.deepcopy(self.prototypes).requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, spec.prototypes))  # (1, K) state for exact resume

    def embed(self, h: Tensor) -> Tensor:
        """The L2-normalised bottleneck (B, D), the prototypes' input."""
        return F.normalize(self.projector(h), dim=-1)

    def forward(self, h1: Tensor, h2: Tensor, v1: Tensor, v2: Tensor, local: Tensor | None = None) -> StepOut:
        """h1, h2: (b, F) global views' features; local: (N·b, F) local views' features, view c in rows c·b…"""
        z1, z2 = self.embed(h1), self.embed(h2)  # (b, D) each
        crops = [z1, z2] if local is None else [z1, z2, self.embed(local)]
        student = self.prototypes(torch.cat(crops)).view(-1, h1.shape[0], self.spec.prototypes)  # (V, b, K)
        with torch.no_grad():
            teacher = torch.stack([self._teacher(v1), self._teacher(v2)]).float()  # (2, b, K)
        loss = dino_loss(student, teacher, self.center, self.spec.student_temp, teacher_temp_at(self.epoch, self.spec))
        with torch.no_grad():  # after the loss, as the paper: this step is centred by the previous centre
            count = teacher.shape[0] * teacher.shape[1] * distributed.world_size()
            batch_mean = distributed.all_reduce_sum(teacher.sum((0, 1)))[None] / count  # (1, K) over every process
            self.center.copy_(updated_center(self.center, batch_mean, self.spec.center_momentum))
        return StepOut(loss, z1, z2)

    def _teacher(self, view: Tensor) -> Tensor:
        return self.teacher_prototypes(F.normalize(self.teacher_projector(self.teacher_backbone(view)), dim=-1))

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def before_update(self) -> None:
        """The prototypes get no update during the first freeze_last_layer_epochs (the paper's stabiliser)."""
        if self.epoch < self.spec.freeze_last_layer_epochs:
            for p in self.prototypes.parameters():
                p.grad = None

    def after_step(self, backbone: nn.Module, progress: float) -> None:
        """EMA update of the teacher towards the student's backbone, head MLP and prototypes."""
        pairs = ((backbone, self.teacher_backbone), (self.projector, self.teacher_projector),
                 (self.prototypes, self.teacher_prototypes))  # fmt: skip
        ema_update(pairs, ema_tau(self.spec.momentum_base, progress))
