"""The paper's module (Torpey & Klein 2024) as the registry's `affine` entry: the block is affssl.AffineEstimation
(affssl/affine_block.py), unchanged; here is only how the learner feeds it one training step.

    φ ~ U(ranges); v1t = A_φ(v1); loss = mse(head(h1 − f(v1t)), target(φ))    (views 2: the same for v2, summed)

With affine.location "projector" the block reads projector outputs, and encodes the warp through the backbone
and the base's projector. φ comes from the run's "affine" stream (affssl.streams).
"""

from __future__ import annotations

import torch
from torch import Tensor

from affssl.affine_block import AffineEstimation
from affssl.objectives.step import Step
from affssl.spec import AffineSpec


def step_loss(block: AffineEstimation, step: Step, gen: torch.Generator | None) -> Tensor:
    """The learner's call: one warp per view used (affine.views), each encoded in its own pass."""
    spec = step.spec.affine
    encoder, pairs = step.encoder, tuple(zip(step.views, step.h, strict=True))  # the block reads encoder features…
    if spec.location == "projector":  # …or the projector's, through backbone then embed
        encoder, pairs = step.embedded, tuple(zip(step.views, step.z, strict=True))
    return sum(block(encoder, view, h, gen) for view, h in pairs[: spec.views])


def build(spec: AffineSpec, feat_dim: int, proj_dim: int) -> AffineEstimation:
    return AffineEstimation(feat_dim if spec.location == "encoder" else proj_dim, spec=spec)
