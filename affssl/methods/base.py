"""What every base method returns from a step; the contract the engine relies on."""

from typing import NamedTuple

from torch import Tensor


class StepOut(NamedTuple):
    loss: Tensor  # scalar SSL loss of the base method
    z1: Tensor  # (B, D) view-1 embedding at the projector location (affine location 'projector')
    z2: Tensor  # (B, D) view-2 embedding
