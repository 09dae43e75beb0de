"""What one training step hands every auxiliary objective: the batch, the base method's views and features.

The learner fills it once per step; each objective's `step_loss` reads what it needs and may encode more images
of its own (the affine warp, E-SSL's small views, CARE's shared-draw views) through `encoder` or `embedded`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from affssl.augment import ViewParams
from affssl.spec import RunSpec


class Step(NamedTuple):
    spec: RunSpec
    x: Tensor  # (B, C, H, W) uint8 the batch as stored (whole images zero-padded with `sizes`: the chunks storage)
    sizes: Tensor | None  # (B, 2) int64 each whole image's (height, width), or None (square stored images)
    views: tuple[Tensor, Tensor]  # (B, C, S, S) float32 each, the base method's two views
    params: tuple[ViewParams, ViewParams] | None  # each view's parameters, when an objective asked for them
    h: tuple[Tensor, Tensor]  # (B, F) encoder features of each view
    z: tuple[Tensor, Tensor]  # (B, D) projector outputs of each view, as the base's loss sees them
    encoder: Callable[[Tensor], Tensor]  # images (n, C, s, s) → features (n, F): the backbone
    embedded: Callable[[Tensor], Tensor]  # images (n, C, s, s) → projector outputs (n, D): backbone then method.embed
