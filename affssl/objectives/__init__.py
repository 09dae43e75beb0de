"""Auxiliary objectives beside the base method (design.md decision 18): a dict registry, one file per objective.

Each entry is a public drop-in block (an nn.Module usable in any training loop) and `step_loss(block, step, gen)`,
how affssl's learner feeds it one step (affssl.objectives.step.Step). The RunSpec has a section of the same name
for each (`enabled`, the paper's defaults, the weight λ per base); the learner sums whichever are on, and no
base method knows about any of them.

    affine    Torpey & Klein 2024: predict a random affine map of view 1     affssl.AffineEstimation
    augself   Lee et al. 2021: predict the views' augmentation differences    affssl.AugSelf
    rotation  Dangovski et al. 2022 (E-SSL): classify a small view's turn     affssl.RotationPrediction
    care      Gupta et al. 2023: shared-draw views act orthogonally          affssl.CARE
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from affssl.objectives import affine, augself, care, rotation
from affssl.objectives.step import Step


class Objective(NamedTuple):
    build: Callable[[Any, int, int], nn.Module]  # (its spec section, encoder width, projector width) → the block
    step_loss: Callable[[nn.Module, Step, torch.Generator | None], Tensor]  # (block, step, its stream) → scalar
    needs_params: bool  # reads the base views' parameters (affssl.augment.ViewParams)


OBJECTIVES: dict[str, Objective] = {
    "affine": Objective(affine.build, affine.step_loss, False),
    "augself": Objective(augself.build, augself.step_loss, True),
    "rotation": Objective(rotation.build, rotation.step_loss, False),
    "care": Objective(care.build, care.step_loss, False),
}

__all__ = ["OBJECTIVES", "Objective", "Step"]
