"""Rotation prediction as in E-SSL (Dangovski et al., ICLR 2022, arXiv 2111.00899): a small third view of each
image, rotated by 0, 90, 180 and 270° (all four, stacked: 4B images in one encoder pass), and a head on the
encoder features that classifies the rotation.

    x3 = small view (CIFAR: RandomResizedCrop scale (0.2, 1) at half the training side, the usual colour jitter)
    loss = CE(head(f(rot_k(x3))), k),  k ∈ {0, 1, 2, 3}

Head (CIFAR): Linear(d, 2048) → LayerNorm → ReLU → Linear(2048, 2048) → LayerNorm → ReLU → Linear(2048, 4);
state dict keys 0.* … 6.*. The small views come from the run's "rotation" stream (affssl.streams), so turning
the objective on moves no draw of the base views.

    rot = RotationPrediction(feat_dim=512)
    loss = loss_ssl + λ * rot(encoder, small_views)     # small_views (B, C, s, s) float
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affssl import augment
from affssl.affine_block import default_generator
from affssl.objectives.step import Step
from affssl.precision import fp32
from affssl.spec import AugmentSpec, RotationSpec

ROTATIONS = 4  # quarter turns: 0, 90, 180, 270°


def head(feat_dim: int, hidden: int) -> nn.Sequential:
    """E-SSL's CIFAR predictor: Linear(d, h)-LN-ReLU-Linear(h, h)-LN-ReLU-Linear(h, 4)."""
    return nn.Sequential(
        nn.Linear(feat_dim, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, ROTATIONS),
    )


def rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, C, s, s) → all four quarter turns (4B, C, s, s), counter-clockwise as torch.rot90, rows k·B + i image
    i turned k times; and the labels (4B,) int64 k."""
    B = x.shape[0]
    turned = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])  # (4B, C, s, s)
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(B)  # (4B,)
    return turned, labels


@fp32
def rotation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the four-way rotation, logits (n, 4), labels (n,) → scalar fp32."""
    return F.cross_entropy(logits, labels)


class RotationPrediction(nn.Module):
    """Classify which quarter turn was applied to a view, from its encoder features (E-SSL).

    Args:
        feat_dim: width of the encoder features (512 for ResNet-18).
        spec: a `RotationSpec` (None → the paper's CIFAR defaults: hidden 2048).
    """

    def __init__(self, feat_dim: int, spec: RotationSpec | None = None):
        super().__init__()
        self.spec = spec or RotationSpec()
        for i, layer in enumerate(head(feat_dim, self.spec.head_hidden)):  # children 0..6: the head's keys
            self.add_module(str(i), layer)

    def predict(self, h: Tensor) -> Tensor:
        """Rotation logits (n, 4) from features (n, F)."""
        for layer in self.children():
            h = layer(h)
        return h

    def forward(self, encoder: Callable[[Tensor], Tensor], views: Tensor) -> Tensor:
        """views (B, C, s, s) float, each turned four ways and encoded in one pass → scalar fp32 cross-entropy."""
        turned, labels = rotations(views)  # (4B, C, s, s), (4B,)
        return rotation_loss(self.predict(encoder(turned)).float(), labels)


@fp32  # the views as augment.views makes them: autocast off
def small_views(x: Tensor, spec: RotationSpec, augment_spec: AugmentSpec, gen: torch.Generator, size_px: int,
                sizes: Tensor | None = None) -> Tensor:  # fmt: skip
    """x (B, C, H, W) uint8 → the small views (B, C, s, s) float32, s = round(size_frac · size_px): the base views'
    crop, flip, jitter and grayscale at crop_scale, no blur or solarize (E-SSL's CIFAR pipeline)."""
    side = spec.side_px(size_px)
    xf = x.float().div_(255)  # (B, C, H, W) in [0, 1]
    return augment.crop_view(xf, augment_spec, gen, 1, (side, side), spec.crop_scale, 0.0, 0.0, sizes)


def step_loss(block: RotationPrediction, step: Step, gen: torch.Generator | None) -> Tensor:
    """The learner's call: small views of the batch from the rotation stream, four turns, one encoder pass."""
    spec, gen = step.spec, gen or default_generator(step.x.device)
    views = small_views(step.x, spec.rotation, spec.augment, gen, spec.data.image_size_px, step.sizes)
    return block(step.encoder, views)


def build(spec: RotationSpec, feat_dim: int, proj_dim: int) -> RotationPrediction:
    return RotationPrediction(feat_dim, spec)
